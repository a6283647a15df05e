"""PostgreSQL for the test suite: Django's backend, except that resetting the database
between transactional tests may empty the audit table.

Django resets with one ``TRUNCATE`` of every table, which the audit table's TRUNCATE trigger
refuses (migration aimconsole 0005), as it must in production: ``manage.py flush`` there
would erase the audit trail. Here the trigger is disabled for that statement only, inside the
same transaction (the suite connects as a superuser, which may), and enabled again after it.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base, operations

AUDIT_TABLE = "aimconsole_auditevent"
TRUNCATE_TRIGGER = "aim_audit_no_truncate"


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(self, style: Any, tables: Any, *, reset_sequences: bool = False, allow_cascade: bool = False) -> list[str]:
        sql = super().sql_flush(style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        if AUDIT_TABLE not in tables or not sql:
            return sql
        table = self.quote_name(AUDIT_TABLE)
        return [f"ALTER TABLE {table} DISABLE TRIGGER {TRUNCATE_TRIGGER};", *sql,
                f"ALTER TABLE {table} ENABLE TRIGGER {TRUNCATE_TRIGGER};"]


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

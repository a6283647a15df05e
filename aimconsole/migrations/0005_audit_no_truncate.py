"""On PostgreSQL, refuse TRUNCATE of the audit table too (0003's row trigger does not fire for
TRUNCATE, a table-level statement). This binds every role, the table's owner included; what a
trigger cannot stop (its owner disabling it, ``session_replication_role``) is stopped by
privileges: deploy/postgres/audit-role.sql makes another role own the table.

The test suite resets databases with TRUNCATE; its database backend (aimconsole/testdb)
switches this trigger off around that reset only."""

from __future__ import annotations

from django.db import migrations

CREATE = """
DROP TRIGGER IF EXISTS aim_audit_no_truncate ON aimconsole_auditevent;
CREATE TRIGGER aim_audit_no_truncate BEFORE TRUNCATE ON aimconsole_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION aim_audit_append_only();
"""
DROP = "DROP TRIGGER IF EXISTS aim_audit_no_truncate ON aimconsole_auditevent;"


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("aimconsole", "0004_token_scopes")]
    operations = [migrations.RunPython(forwards, backwards)]

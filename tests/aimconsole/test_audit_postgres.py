"""PostgreSQL only: the audit table cannot be emptied, changed or have its triggers switched off
by the console's own database role once deploy/postgres/audit-role.sql has run, and TRUNCATE
is refused by a trigger even for the table's owner.

Runs on the suite's PostgreSQL pass (CI always has one; SQLite has no roles or triggers to
test). With DATABASE_URL pointing at PostgreSQL every step here must work: a role that cannot
be created or a connection that cannot be made fails the test, it never skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection, transaction

from aimconsole.audit import record
from aimconsole.models import AuditEvent

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL roles and triggers (the suite's PostgreSQL pass)"),
    pytest.mark.django_db(transaction=True),
]
SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "audit-role.sql"
TABLE = "aimconsole_auditevent"


def _execute(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def roles() -> Iterator[tuple[str, str]]:
    """An application role that owns the audit table, as after ``migrate`` in production, then
    the shipped script run as the superuser the suite connects as. Undone afterwards."""
    suffix = uuid.uuid4().hex[:8]
    app, owner = f"aim_test_app_{suffix}", f"aim_test_audit_owner_{suffix}"
    original_owner = _execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", [TABLE])[0][0]
    _execute(f'CREATE ROLE "{app}" LOGIN')
    try:
        _execute(f'ALTER TABLE {TABLE} OWNER TO "{app}"')
        _execute(f'ALTER FUNCTION aim_audit_append_only() OWNER TO "{app}"')
        _execute("SELECT set_config('aim.app_role', %s, false), set_config('aim.audit_owner', %s, false)", [app, owner])
        with connection.cursor() as cursor:
            cursor.execute(SCRIPT.read_text())  # no parameters: run as written, several statements
        yield app, owner
    finally:
        _execute("RESET aim.app_role; RESET aim.audit_owner")
        _execute(f'ALTER TABLE {TABLE} OWNER TO "{original_owner}"')
        _execute(f'ALTER FUNCTION aim_audit_append_only() OWNER TO "{original_owner}"')
        for role in (app, owner):
            if _execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]):
                _execute(f'DROP OWNED BY "{role}"')  # the grants; it owns nothing any more
                _execute(f'DROP ROLE "{role}"')


def _connect_as(role: str):  # type: ignore[no-untyped-def]
    import psycopg

    settings = connection.settings_dict
    return psycopg.connect(host=settings["HOST"] or None, port=settings["PORT"] or None, dbname=settings["NAME"],
                           user=role, autocommit=True, connect_timeout=5)


REFUSED = [
    f"TRUNCATE {TABLE}",
    f"DELETE FROM {TABLE}",
    f"UPDATE {TABLE} SET action = 'rewritten'",
    f"ALTER TABLE {TABLE} DISABLE TRIGGER aim_audit_append_only",
    f"ALTER TABLE {TABLE} DISABLE TRIGGER ALL",
    f"DROP TRIGGER aim_audit_no_truncate ON {TABLE}",
    "CREATE OR REPLACE FUNCTION aim_audit_append_only() RETURNS trigger AS $$ BEGIN RETURN NULL; END; $$ LANGUAGE plpgsql",
    "SET session_replication_role = replica",
    f"DROP TABLE {TABLE}",
]


def test_the_application_role_cannot_erase_change_or_unguard_the_audit_table(roles):
    import psycopg

    app, _ = roles
    kept = record("test.before", object_type="x", object_id=1)
    before = set(AuditEvent.objects.values_list("pk", "action"))
    with _connect_as(app) as conn:
        for sql in REFUSED:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        # What the console needs still works: append and read.
        inserted = conn.execute(
            f"INSERT INTO {TABLE} (at, actor, action, object_type, object_id, object_repr, request_id) "
            "VALUES (now(), 'app', 'test.appended', '', '', '', '') RETURNING id").fetchone()[0]
        assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == len(before) + 1
    assert (kept.pk, "test.before") in before
    assert set(AuditEvent.objects.values_list("pk", "action")) == before | {(inserted, "test.appended")}


def test_truncate_is_refused_by_the_trigger_even_for_the_owner(roles):
    from django.db import DatabaseError

    _, owner = roles
    record("test.kept", object_type="x", object_id=1)
    with pytest.raises(DatabaseError, match="append-only: TRUNCATE refused"), transaction.atomic():
        _execute(f'SET LOCAL ROLE "{owner}"')
        _execute(f"TRUNCATE {TABLE}")
    assert AuditEvent.objects.filter(action="test.kept").exists()


def test_truncate_is_refused_for_a_superuser_too():
    """No roles needed: the trigger binds every role (the suite connects as a superuser)."""
    from django.db import DatabaseError

    record("test.kept", object_type="x", object_id=1)
    with pytest.raises(DatabaseError, match="append-only: TRUNCATE refused"), transaction.atomic():
        _execute(f"TRUNCATE {TABLE}")
    assert AuditEvent.objects.filter(action="test.kept").exists()


def test_the_script_refuses_a_superuser_as_the_application_role():
    from django.db import DatabaseError

    user = _execute("SELECT current_user")[0][0]
    with pytest.raises(DatabaseError, match="is a superuser"), transaction.atomic():
        _execute("SELECT set_config('aim.app_role', %s, true)", [user])
        with connection.cursor() as cursor:
            cursor.execute(SCRIPT.read_text())

"""On PostgreSQL, make the audit table append-only in the database itself: a trigger refuses
every UPDATE and DELETE, whatever the application does. (TRUNCATE, used by the test runner
to reset databases, is a table-level statement and does not fire row triggers.)"""

from __future__ import annotations

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION aim_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'aimconsole_auditevent is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS aim_audit_append_only ON aimconsole_auditevent;
CREATE TRIGGER aim_audit_append_only BEFORE UPDATE OR DELETE ON aimconsole_auditevent
    FOR EACH ROW EXECUTE FUNCTION aim_audit_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS aim_audit_append_only ON aimconsole_auditevent;
DROP FUNCTION IF EXISTS aim_audit_append_only();
"""


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)  # params=None: the SQL's % is literal


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("aimconsole", "0002_audit_and_tokens")]
    operations = [migrations.RunPython(forwards, backwards)]

-- Make the audit trail append-only against the console itself.
--
-- The triggers of migrations aimconsole 0003/0005 refuse UPDATE, DELETE and TRUNCATE of
-- aimconsole_auditevent, but a role that OWNS the table can still switch them off
-- (ALTER TABLE ... DISABLE TRIGGER, DROP TRIGGER, replacing the trigger function), and a
-- superuser can skip them (SET session_replication_role = replica). Only privileges stop
-- that, so this script hands the table and its trigger function to a separate role that
-- nobody logs in as, and leaves the console's own role (the user in DATABASE_URL) with
-- SELECT and INSERT on it. Every other table stays the console's, as migrate created it.
--
-- Run it as a superuser, connected to the console's database, after `manage.py migrate`:
--
--   PGOPTIONS="-c aim.app_role=aim" psql -v ON_ERROR_STOP=1 -d aimconsole -f deploy/postgres/audit-role.sql
--
-- aim.app_role:    the role the console connects as (required; must not be a superuser).
-- aim.audit_owner: the role that will own the audit table (default aim_audit_owner; created
--                  NOLOGIN when missing).
--
-- Idempotent. A later migration that alters aimconsole_auditevent must be applied by the
-- database administrator: ALTER TABLE aimconsole_auditevent OWNER TO <app role>; migrate;
-- run this script again.

DO $$
DECLARE
    app   text := nullif(current_setting('aim.app_role', true), '');
    owner text := coalesce(nullif(current_setting('aim.audit_owner', true), ''), 'aim_audit_owner');
    may_skip_triggers boolean := false;
BEGIN
    IF app IS NULL THEN
        RAISE EXCEPTION 'set aim.app_role to the role the console connects as, e.g. PGOPTIONS="-c aim.app_role=aim"';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = app) THEN
        RAISE EXCEPTION 'role % (aim.app_role) does not exist', app;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = app AND rolsuper) THEN
        RAISE EXCEPTION 'role % is a superuser: no privilege can stop it; connect the console as an ordinary role', app;
    END IF;
    IF current_setting('server_version_num')::int >= 150000 THEN  -- GRANT SET ON PARAMETER exists from 15
        EXECUTE 'SELECT has_parameter_privilege($1, ''session_replication_role'', ''SET'')' INTO may_skip_triggers USING app;
    END IF;
    IF may_skip_triggers THEN
        RAISE EXCEPTION 'role % may SET session_replication_role (which skips triggers): revoke that first', app;
    END IF;
    IF app = owner THEN
        RAISE EXCEPTION 'aim.audit_owner must be another role than aim.app_role (%)', app;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = owner) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', owner);
    END IF;
    IF pg_has_role(app, owner, 'MEMBER') THEN
        RAISE EXCEPTION 'role % is a member of % and would hold its rights: revoke that membership first', app, owner;
    END IF;

    EXECUTE format('ALTER TABLE aimconsole_auditevent OWNER TO %I', owner);
    EXECUTE format('ALTER FUNCTION aim_audit_append_only() OWNER TO %I', owner);
    EXECUTE format('REVOKE ALL ON aimconsole_auditevent FROM PUBLIC, %I', app);
    EXECUTE format('GRANT SELECT, INSERT ON aimconsole_auditevent TO %I', app);
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I', pg_get_serial_sequence('aimconsole_auditevent', 'id'), app);
    -- The trigger function stays callable (triggers run it as the inserting role).
    EXECUTE format('GRANT EXECUTE ON FUNCTION aim_audit_append_only() TO %I', app);
END
$$;

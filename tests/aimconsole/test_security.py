"""Security: audit trail, tokens, lockout, CSRF, CSP, ETag/If-Match, production settings,
bad input, query counts of list endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from aimconsole.models import ApiToken, AppendOnlyError, AuditEvent
from models.models import InferenceModel

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


# --- audit -------------------------------------------------------------------------------------

def test_a_catalog_edit_is_audited_with_before_after_request_id_and_address(api_client_for, admin_user, catalog):
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")
    etag = client.get(f"/api/v1/models/{model.pk}/")["ETag"]
    response = client.patch(f"/api/v1/models/{model.pk}/", {"notes": "checked on hardware"}, format="json",
                            HTTP_IF_MATCH=etag, HTTP_X_REQUEST_ID="req-42", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 200 and response["X-Request-ID"] == "req-42"
    event = AuditEvent.objects.get(action="catalog.model.update")
    assert event.actor == "ada" and event.actor_id == admin_user.pk
    assert event.before["notes"] != "checked on hardware" and event.after["notes"] == "checked on hardware"
    assert (event.request_id, event.source_ip) == ("req-42", "10.1.2.3")


def test_each_kind_of_change_leaves_an_audit_row(api_client_for, operator, admin_user, client, catalog, tmp_path, monkeypatch):
    from models.models import ModelProfile
    from partitions.models import GPU
    from tests.emulated_nodes import make_emulated_node

    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)
    emulated = make_emulated_node(tmp_path)
    api = api_client_for(operator)
    gpu = GPU.objects.get(node=emulated.node, index=0)
    assert api.post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", {"compute_mode": "CPX"}, format="json").status_code == 202
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16", gpu_model="MI300X", context_tokens=8192)
    created = api.post("/api/v1/deployments/", {"name": "d1", "profile": profile.pk, "replicas": 1}, format="json").json()
    api.delete(f"/api/v1/deployments/{created['id']}/")
    plan = api.post("/api/v1/plans/", {"demands": [{"name": "p1", "profile": profile.pk, "replicas": 1}]}, format="json").json()
    assert api.post(f"/api/v1/plans/{plan['id']}/apply/").status_code == 202
    token = api.post("/api/v1/tokens/", {"name": "ci"}, format="json").json()
    api.delete(f"/api/v1/tokens/{token['id']}/")
    client.post("/accounts/login/", {"username": "otto", "password": "wrong"})
    client.post("/accounts/login/", {"username": "otto", "password": "pw-otto"})
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"reconfiguration.request", "deployment.create", "deployment.stopped", "plan.apply", "token.create",
            "token.revoke", "auth.login_failed", "auth.login"} <= actions
    assert AuditEvent.objects.filter(action="auth.login_failed", after__username="otto").exists()


def test_the_application_cannot_change_or_delete_audit_rows(admin_user):
    from aimconsole.audit import record

    event = record("test.event", object_type="x", object_id=1, actor=admin_user)
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="other")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()


def test_the_database_refuses_update_and_delete_of_audit_rows_on_postgresql(admin_user):
    """The trigger exists on PostgreSQL (CI's first run); SQLite has only the application guard,
    and this test checks that the migration left SQLite alone rather than pretending."""
    from django.db import DatabaseError, transaction

    from aimconsole.audit import record

    event = record("test.event", object_type="x", object_id=1, actor=admin_user)
    if connection.vendor == "postgresql":
        for sql in ("UPDATE aimconsole_auditevent SET action = 'x' WHERE id = %s", "DELETE FROM aimconsole_auditevent WHERE id = %s"):
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(sql, [event.pk])
        assert AuditEvent.objects.get(pk=event.pk).action == "test.event"
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'aim_audit_append_only'")
            assert cursor.fetchone()[0] == 0


def test_control_characters_are_escaped_on_the_audit_page(client, admin_user):
    from aimconsole.audit import record

    record("auth.login_failed", after={"username": "evil\x1b[31m\u202e"}, actor_name="anonymous (evil\x1b[31m)")
    client.force_login(admin_user)
    html = client.get("/audit/").content.decode()
    assert "\x1b" not in html and "\u202e" not in html
    assert "evil\\x1b[31m" in html and "\\u202e" in html


# --- tokens --------------------------------------------------------------------------------------

def test_tokens_are_shown_once_stored_hashed_and_revocable(api_client_for, viewer, client, catalog):
    api = api_client_for(viewer)
    created = api.post("/api/v1/tokens/", {"name": "automation"}, format="json")
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("aim_") and not ApiToken.objects.filter(key_hash=key).exists()
    assert "key" not in api.get("/api/v1/tokens/").json()["results"][0]
    assert client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    api.delete(f"/api/v1/tokens/{created.json()['id']}/")
    response = client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code in (401, 403) and "revoked" in response.json()["message"]


def test_users_see_only_their_tokens_and_admins_manage_all(api_client_for, viewer, operator, admin_user):
    api_client_for(viewer).post("/api/v1/tokens/", {"name": "mine"}, format="json")
    assert api_client_for(operator).get("/api/v1/tokens/").json()["count"] == 0
    refused = api_client_for(operator).post("/api/v1/tokens/", {"name": "x", "user": "vera"}, format="json")
    assert refused.status_code == 403
    made = api_client_for(admin_user).post("/api/v1/tokens/", {"name": "for-vera", "user": "vera"}, format="json")
    assert made.status_code == 201 and made.json()["user"] == "vera"
    assert api_client_for(admin_user).get("/api/v1/tokens/").json()["count"] == 2


# --- login lockout, CSRF, CSP ---------------------------------------------------------------------

def test_repeated_failed_logins_lock_the_account_out(client, viewer, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.post("/accounts/login/", {"username": "vera", "password": "nope"}).status_code == 200
    assert client.post("/accounts/login/", {"username": "vera", "password": "nope"}).status_code == 429
    locked = client.post("/accounts/login/", {"username": "vera", "password": "pw-vera"})
    assert locked.status_code in (403, 429) and b"Too many failed sign-ins" in locked.content
    assert "_auth_user_id" not in client.session


def test_the_admin_login_is_protected_by_the_same_lockout(client, admin_user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "ada", "password": "nope"})
    locked = client.post("/admin/login/", {"username": "ada", "password": "pw-ada"})
    assert locked.status_code in (403, 429)


def test_session_writes_need_the_csrf_token(viewer, operator, catalog):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    assert strict.post("/deployments/new/", {"name": "x"}).status_code == 403
    response = strict.post("/api/v1/tokens/", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["message"]


def test_pages_carry_a_strict_content_security_policy_and_no_inline_script(client, operator, catalog):
    import re

    client.force_login(operator)
    for path in ("/fleet/", "/catalog/", "/deployments/", "/operations/", "/dashboard/", "/api/docs/"):
        response = client.get(path)
        assert response.status_code == 200, path
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        html = response.content.decode()
        inline = [m for m in re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", html) if "application/json" not in m]
        assert not inline, (path, inline)


def test_production_settings_pass_check_deploy_without_warnings(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aimconsole.settings.production",
           "DJANGO_SECRET_KEY": "x" * 20 + "production-secret-" + "y9Z" * 10, "DJANGO_ALLOWED_HOSTS": "console.example.com",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "REDIS_URL": "redis://127.0.0.1:6379/0",
           "AIM_VAR_DIR": str(tmp_path)}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set by the browser tests for their own process only
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    missing = {k: v for k, v in env.items() if k != "DJANGO_SECRET_KEY"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=REPO, env=missing, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "DJANGO_SECRET_KEY must be set" in result.stderr


# --- optimistic concurrency -------------------------------------------------------------------------

def test_writes_need_a_current_etag(api_client_for, admin_user, catalog):
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id="Qwen/Qwen3-8B")
    etag = client.get(f"/api/v1/models/{model.pk}/")["ETag"]
    assert client.patch(f"/api/v1/models/{model.pk}/", {"notes": "a"}, format="json").status_code == 428
    first = client.patch(f"/api/v1/models/{model.pk}/", {"notes": "a"}, format="json", HTTP_IF_MATCH=etag)
    assert first.status_code == 200 and first["ETag"] != etag
    second = client.patch(f"/api/v1/models/{model.pk}/", {"notes": "b"}, format="json", HTTP_IF_MATCH=etag)
    assert second.status_code == 412 and second.json()["code"] == "precondition_failed"
    assert InferenceModel.objects.get(pk=model.pk).notes == "a"
    assert client.delete(f"/api/v1/models/{model.pk}/", HTTP_IF_MATCH=etag).status_code == 412
    assert client.delete(f"/api/v1/models/{model.pk}/", HTTP_IF_MATCH=first["ETag"]).status_code == 204


# --- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, content_type, status", [
    ('{"name": "x", "profile": 1, "replicas": -5}', "application/json", 400),
    ('{"name": "x", "profile": 1, "replicas": 99999999999999999999}', "application/json", 400),
    ('{"name": "bad\\u0000name", "profile": 1, "replicas": 1}', "application/json", 400),
    ('{"name": "ünïcødé", "profile": 1, "replicas": 1}', "application/json", 400),
    ("name=x", "text/plain", 415),
    ("{not json", "application/json", 400),
])
def test_bad_input_gets_a_clear_4xx(api_client_for, operator, catalog, body, content_type, status):
    from serving.models import Deployment

    response = api_client_for(operator).generic("POST", "/api/v1/deployments/", body, content_type=content_type)
    assert response.status_code == status
    assert response.json()["message"]
    assert not Deployment.objects.exists()


@pytest.mark.parametrize("method, path, body", [
    ("get", "/api/v1/nodes/%00/", None),
    ("get", "/api/v1/gpus/?node=a%00b", None),
    ("post", "/api/v1/deployments/", '{"name": "x", "profile": 1, "replicas": 1, "pin_node": "a\\u0000b"}'),
])
def test_nul_characters_are_refused_before_reaching_the_database(api_client_for, operator, method, path, body):
    client = api_client_for(operator)
    response = client.get(path) if method == "get" else client.generic("POST", path, body, content_type="application/json")
    assert response.status_code == 400 and "NUL" in response.json()["message"]


def test_oversized_bodies_are_refused(api_client_for, operator, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api_client_for(operator).post("/api/v1/nodes/n1/import-amdsmi/", {"outputs": ["x" * 5000]}, format="json")
    assert response.status_code in (400, 413)


# --- hot read paths ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/nodes/", "/api/v1/gpus/", "/api/v1/partitions/", "/api/v1/reconfigurations/",
                                  "/api/v1/deployments/", "/api/v1/models/", "/api/v1/profiles/", "/api/v1/audit-events/"])
def test_list_endpoints_use_a_fixed_number_of_queries(api_client_for, admin_user, catalog, path, django_assert_max_num_queries):
    from aimconsole.audit import record
    from partitions.backends.simulated import SimulatedFleet
    from partitions.models import Node
    from partitions.services import sync_inventory

    fleet = SimulatedFleet(nodes=30, gpu_count=8)
    for name in fleet.nodes:
        backend = fleet.backend(name)
        backend.set_compute_mode([0, 1], "CPX")
        node = Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True)
        sync_inventory(node=node, inventory=backend.inventory())
    for i in range(250):
        record("test.event", object_type="x", object_id=i)
    client = api_client_for(admin_user)
    client.get(path, {"limit": 1})  # warm the user's permission cache (the same user object is reused)
    counts = []
    for size in (10, 50, 200):
        with django_assert_max_num_queries(12) as ctx:
            response = client.get(path, {"limit": size})
        assert response.status_code == 200
        counts.append(len(ctx.captured_queries))
    assert len(set(counts)) == 1, counts

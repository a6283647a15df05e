"""Every URL pattern and WebSocket route, requested by each role (GET, and POST, PUT, PATCH
and DELETE), against expectation tables. A route without an expectation fails the test: new
routes must say who may use them, and who may write through them."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern, URLResolver, get_resolver

from aimconsole.routing import websocket_urlpatterns

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

ROLES = ("anonymous", "norole", "viewer", "operator", "admin")
# GET status per role, in ROLES order. 302 = redirect to a login page.
EVERYONE_SIGNED_IN = (302, 403, 200, 200, 200)
API_READ = (403, 403, 200, 200, 200)
API_POST_ONLY = (403, 403, 405, 405, 405)
PAGE_POST_ONLY = (302, 403, 405, 405, 405)
EXPECTED: dict[str, tuple[int, ...]] = {
    "home": (302, 403, 302, 302, 302),
    "healthz": (200, 200, 200, 200, 200),
    "favicon": (301, 301, 301, 301, 301),
    "readyz": (200, 200, 200, 200, 200),
    "login": (200, 302, 302, 302, 302),
    "logout": (302, 405, 405, 405, 405),
    "catalog:model-list": EVERYONE_SIGNED_IN,
    "catalog:model-detail": EVERYONE_SIGNED_IN,
    "observability:overview": EVERYONE_SIGNED_IN,
    "partitions:fleet": EVERYONE_SIGNED_IN,
    "partitions:fleet-node-card": EVERYONE_SIGNED_IN, "partitions:fleet-gpu-card": EVERYONE_SIGNED_IN,
    "partitions:fleet-page-cards": EVERYONE_SIGNED_IN,
    "planning:gpu-editor": EVERYONE_SIGNED_IN,
    "planning:node-editor": EVERYONE_SIGNED_IN,
    "planning:plan-list": EVERYONE_SIGNED_IN,
    "planning:plan-detail": EVERYONE_SIGNED_IN,
    "planning:plan-apply": PAGE_POST_ONLY,
    "planning:plan-compose": EVERYONE_SIGNED_IN,
    "planning:plan-replan": PAGE_POST_ONLY,
    "serving:operation-list": EVERYONE_SIGNED_IN,
    "partitions:operation-detail": EVERYONE_SIGNED_IN,
    "partitions:operation-retry-drain": PAGE_POST_ONLY,
    "partitions:operation-restore": PAGE_POST_ONLY,
    "serving:deployment-list": EVERYONE_SIGNED_IN,
    "serving:deployment-create": (302, 403, 403, 200, 200),
    "serving:deployment-detail": EVERYONE_SIGNED_IN,
    "serving:deployment-stop": PAGE_POST_ONLY,
    "serving:deployment-redeploy": PAGE_POST_ONLY,
    "dashboard:dashboard": EVERYONE_SIGNED_IN,
    # No Prometheus configured in the tests: the history endpoint says so (503).
    "dashboard:history": (302, 403, 503, 503, 503),
    "observability:deployment-dashboard": EVERYONE_SIGNED_IN,
    "audit-log": (302, 403, 403, 403, 200),
    "search": EVERYONE_SIGNED_IN,
    "preferences": EVERYONE_SIGNED_IN, "preferences-theme": (302, 403, 405, 405, 405),
    "api-root": API_READ,
    "api-schema": API_READ,
    "api-docs": API_READ,
    "model-list": API_READ, "model-detail": API_READ,
    "profile-list": API_READ, "profile-detail": API_READ,
    "precision-list": API_READ, "precision-detail": API_READ,
    "gpu-spec-list": (403, 403, 200, 200, 200), "gpu-spec-detail": (403, 403, 200, 200, 200),
    "node-list": API_READ, "node-detail": API_READ,
    "node-import-amdsmi": API_POST_ONLY, "node-reconfigure": API_POST_ONLY,
    "gpu-list": API_READ, "gpu-detail": API_READ, "gpu-reconfigure": API_POST_ONLY, "gpu-mark-healthy": API_POST_ONLY,
    "partition-list": API_READ, "partition-detail": API_READ,
    "reconfiguration-list": API_READ, "reconfiguration-detail": API_READ,
    "deployment-list": API_READ, "deployment-detail": API_READ,
    "plan-list": API_READ, "plan-detail": API_READ, "plan-apply": API_POST_ONLY, "plan-replan": API_POST_ONLY,
    "telemetry-list": API_READ,
    "token-list": (403, 200, 200, 200, 200), "token-detail": (403, 404, 404, 404, 200),
    "audit-event-list": (403, 403, 403, 403, 200), "audit-event-detail": (403, 403, 403, 403, 200),
    "metrics": None,  # filled in by the test from the metrics access rule
    "observability:metrics-agents": None,  # the agents' discovery list: the same rule as /metrics
}
# Django admin: its own login for non-staff; the admin role (staff) gets in. Routes that need
# an object that does not exist (or a POST) answer 404/405/302 for staff.
ADMIN_ANON = (302, 302, 302, 302)

WS_EXPECTED = {
    "ws/operations/<int:pk>/": {"anonymous": 4401, "norole": 4403, "viewer": "accept", "operator": "accept", "admin": "accept"},
    "ws/telemetry/": {"anonymous": 4401, "norole": 4403, "viewer": "accept", "operator": "accept", "admin": "accept"},
    "ws/deployments/<int:pk>/": {"anonymous": 4401, "norole": 4403, "viewer": "accept", "operator": "accept", "admin": "accept"},
    "ws/dashboard/": {"anonymous": 4401, "norole": 4403, "viewer": "accept", "operator": "accept", "admin": "accept"},
    "ws/fleet/": {"anonymous": 4401, "norole": 4403, "viewer": "accept", "operator": "accept", "admin": "accept"},
    # Only the user's own notices (their operations and deployments): a user without a role
    # starts nothing, so hears nothing; its pages (403 ones too) connect without a refusal.
    "ws/me/": {"anonymous": 4401, "norole": "accept", "viewer": "accept", "operator": "accept", "admin": "accept"},
}


def all_patterns(patterns=None, prefix="", namespace=""):  # type: ignore[no-untyped-def]
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}:{p.namespace}".strip(":") if p.namespace else namespace
            yield from all_patterns(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            name = f"{namespace}:{p.name}".strip(":") if p.name else f"{namespace}:<unnamed>"
            yield prefix + str(p.pattern), name


@pytest.fixture
def world(catalog, tmp_path, operator, admin_user, viewer, norole, settings, monkeypatch):  # type: ignore[no-untyped-def]
    """One object of every kind, so detail routes resolve."""
    from tests.emulated_nodes import make_emulated_node

    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)
    emulated = make_emulated_node(tmp_path)
    from aimconsole.models import AuditEvent
    from aimconsole.services import create_token
    from models.models import InferenceModel, ModelProfile
    from partitions.models import GPU, Partition
    from partitions.services.reconfiguration import request_reconfiguration
    from planning.services import DemandSpec, create_plan
    from serving.services import create_deployment

    settings.RECONFIGURATION_RESEND_AFTER_S = 3600
    gpu = GPU.objects.get(node=emulated.node, index=0)
    op = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=1), compute_mode="DPX")
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192)
    deployment = create_deployment(spec=DemandSpec(name="d1", profile=profile, replicas=1))
    plan = create_plan(demands=[DemandSpec(name="p1", profile=profile, replicas=1)])
    token, _ = create_token(user=admin_user, name="matrix")
    values = {
        "pk": None, "code": "fp16", "model": "MI300X", "name": emulated.node.name,
        "object_id": None, "content_type_id": "1", "id": str(admin_user.pk), "url": "", "app_label": "catalog",
    }
    by_route = {
        "catalog:model-detail": InferenceModel.objects.first().pk, "model-detail": InferenceModel.objects.first().pk,
        "profile-detail": profile.pk, "planning:gpu-editor": gpu.pk, "gpu-detail": gpu.pk, "gpu-reconfigure": gpu.pk,
        "gpu-mark-healthy": gpu.pk,
        "partition-detail": Partition.objects.first().pk, "planning:plan-detail": plan.pk, "plan-detail": plan.pk,
        "planning:plan-apply": plan.pk, "plan-apply": plan.pk, "planning:plan-replan": plan.pk, "plan-replan": plan.pk,
        "observability:deployment-dashboard": deployment.pk, "partitions:operation-detail": op.pk,
        "reconfiguration-detail": op.pk, "serving:deployment-detail": deployment.pk, "deployment-detail": deployment.pk,
        "serving:deployment-stop": deployment.pk, "serving:deployment-redeploy": deployment.pk,
        "partitions:operation-retry-drain": op.pk, "partitions:operation-restore": op.pk,
        "token-detail": token.pk, "audit-event-detail": AuditEvent.objects.first().pk,
    }
    return values, by_route, op


def concrete(pattern: str, name: str, values: dict, by_route: dict) -> str:
    path = pattern.replace("^", "").replace("$", "")
    path = re.sub(r"\\\.\(\?P<format>[^)]+\)/\?", ".json", path)
    path = path.replace("\\.", ".")

    def fill(match: re.Match) -> str:
        key = match.group(1) or match.group(2)
        if key in ("pk", "object_id"):
            return str(by_route.get(name, 1))
        return str(values.get(key, "1"))

    path = re.sub(r"\(\?P<(\w+)>[^)]*\)|<(?:\w+:)?(\w+)>", fill, path)
    return "/" + path


def test_every_route_has_an_expectation_and_meets_it(client, world, redis_url, django_user_model):
    values, by_route, _ = world
    from django.conf import settings

    # The test client connects from 127.0.0.1, which METRICS_ALLOWED_CIDRS allows by default
    # (Prometheus scraping locally); elsewhere /metrics needs the bearer token or a role.
    assert "127.0.0.1/32" in " ".join(settings.METRICS_ALLOWED_CIDRS) or "127.0.0.0/8" in " ".join(settings.METRICS_ALLOWED_CIDRS)
    EXPECTED["metrics"] = (200,) * 5
    EXPECTED["observability:metrics-agents"] = (200,) * 5
    users = {
        "anonymous": None, "norole": django_user_model.objects.get(username="nora"),
        "viewer": django_user_model.objects.get(username="vera"), "operator": django_user_model.objects.get(username="otto"),
        "admin": django_user_model.objects.get(username="ada"),
    }
    missing, wrong = [], []
    for pattern, name in all_patterns():
        url = concrete(pattern, name, values, by_route)
        if name.startswith("admin:"):
            expected: tuple[int, ...] | None = None
        else:
            expected = EXPECTED.get(name)
            if expected is None:
                missing.append(f"{name} ({pattern})")
                continue
        for role, user in users.items():
            client.logout()
            if user is not None:
                client.force_login(user)
            status = client.get(url).status_code
            if name.startswith("admin:"):
                staff = role == "admin"
                if name == "admin:login":
                    ok = status == (302 if staff else 200)
                elif not staff:
                    ok = status == 302
                elif (name == "admin:autocomplete" or (name.startswith("admin:axes_") and name.endswith("_add"))
                      or name in ("admin:aimconsole_auditevent_add", "admin:aimconsole_auditevent_delete")):
                    # autocomplete needs its parameters; axes logs are never added by hand; the
                    # audit trail is read-only
                    ok = status == 403
                else:
                    ok = status in (200, 302, 404, 405)
                if not ok:
                    wrong.append(f"{role} GET {url} ({name}): {status}")
                continue
            want = expected[ROLES.index(role)]
            if status != want:
                wrong.append(f"{role} GET {url} ({name}): {status}, expected {want}")
    assert not missing, "routes without an expectation: " + ", ".join(missing)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("route", sorted(WS_EXPECTED))
def test_every_websocket_route_has_an_expectation_and_meets_it(world, route, django_user_model):
    from django.contrib.auth.models import AnonymousUser

    from aimconsole.asgi import application

    assert {str(p.pattern) for p in websocket_urlpatterns} == set(WS_EXPECTED), "a WebSocket route has no expectation"
    _, by_route, op = world
    pk = by_route["deployment-detail"] if route.startswith("ws/deployments/") else op.pk
    path = "/" + route.replace("<int:pk>", str(pk))
    users = {"anonymous": AnonymousUser(), "norole": django_user_model.objects.get(username="nora"),
             "viewer": django_user_model.objects.get(username="vera"), "operator": django_user_model.objects.get(username="otto"),
             "admin": django_user_model.objects.get(username="ada")}

    async def attempt(user):  # type: ignore[no-untyped-def]
        from tests.wsutil import outcome

        communicator = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
        communicator.scope["user"] = user
        return await outcome(communicator)

    for role, expected in WS_EXPECTED[route].items():
        assert async_to_sync(attempt)(users[role]) == expected, role


# --- writes ----------------------------------------------------------------------------------
# Status per role (ROLES order) of POST, PUT, PATCH and DELETE on every route, each sent with
# the body in write_bodies() (a valid one where the route takes a form or JSON, so that a role
# that may write succeeds and a role that may not is refused with the write in hand). A route
# without an entry fails the test: a new write route must say who may use it.
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _every(row: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {method: row for method in WRITE_METHODS}


def _post(row: tuple[int, ...], others: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {"POST": row, **{method: others for method in WRITE_METHODS[1:]}}


# Pages that only read answer every method as GET and change nothing.
PAGE_READS = _every(EVERYONE_SIGNED_IN)
# A page's form (POST) for operators and admins, like the API route that does the same.
PAGE_OPERATOR_POST = (302, 403, 403, 302, 302)
PAGE_OPERATOR_FORM = _post((302, 403, 403, 200, 200), EVERYONE_SIGNED_IN)  # answers with the plan
PAGE_OPERATOR_ACTION = _post(PAGE_OPERATOR_POST, (302, 403, 405, 405, 405))  # POST only
# API: the role's model permission refuses first, then the method (or the body) answers.
API_REFUSED = (403, 403, 403)
API_NO_WRITES = _every((*API_REFUSED, 405, 405))
API_OPERATOR_POST = {status: _post((*API_REFUSED, status, status), (*API_REFUSED, 405, 405)) for status in (201, 202, 400, 409)}
API_CATALOG_LIST = _post((*API_REFUSED, 403, 400), (*API_REFUSED, 403, 405))  # admins only; {} is invalid
API_CATALOG_DETAIL = {"POST": (*API_REFUSED, 403, 405), **{m: (*API_REFUSED, 403, 428) for m in WRITE_METHODS[1:]}}  # If-Match
API_CATALOG_READ_ONLY = _every((*API_REFUSED, 403, 405))
# Never writable, whoever asks (resources without a model, the audit trail).
API_NEVER = _every((403, 403, 403, 403, 403))
NOT_ALLOWED = _every((405, 405, 405, 405, 405))
WRITE_EXPECTED: dict[str, dict[str, tuple[int, ...]]] = {
    "home": _every((302, 403, 302, 302, 302)),
    "healthz": NOT_ALLOWED, "readyz": NOT_ALLOWED, "metrics": NOT_ALLOWED,
    "observability:metrics-agents": NOT_ALLOWED,
    "favicon": _every((301, 301, 301, 301, 301)),
    "login": {"POST": (200, 302, 302, 302, 302), "PUT": (200, 302, 302, 302, 302),
              "PATCH": (405, 302, 302, 302, 302), "DELETE": (405, 302, 302, 302, 302)},
    "logout": _post((302, 302, 302, 302, 302), (302, 405, 405, 405, 405)),
    "catalog:model-list": PAGE_READS, "catalog:model-detail": PAGE_READS,
    "partitions:fleet": _post(PAGE_OPERATOR_POST, EVERYONE_SIGNED_IN),  # POST: "mark healthy after check"
    "partitions:operation-detail": PAGE_READS,
    "partitions:fleet-node-card": PAGE_READS, "partitions:fleet-gpu-card": PAGE_READS, "partitions:fleet-page-cards": PAGE_READS,
    # The world's operation is in flight: operators are sent back to it with the reason.
    "partitions:operation-retry-drain": PAGE_OPERATOR_ACTION, "partitions:operation-restore": PAGE_OPERATOR_ACTION,
    "observability:overview": PAGE_READS,
    "planning:gpu-editor": PAGE_OPERATOR_FORM, "planning:node-editor": PAGE_OPERATOR_FORM,
    "planning:plan-list": PAGE_READS, "planning:plan-detail": PAGE_READS,
    "planning:plan-apply": PAGE_OPERATOR_ACTION,
    # An empty composition is invalid (nothing planned).
    "planning:plan-compose": _post((302, 403, 403, 400, 400), EVERYONE_SIGNED_IN), "planning:plan-replan": PAGE_OPERATOR_ACTION,
    "serving:operation-list": PAGE_READS, "serving:deployment-list": PAGE_READS, "serving:deployment-detail": PAGE_READS,
    # The fleet has no room for another replica here: operators get the conflict page.
    "serving:deployment-create": _post((302, 403, 403, 409, 409), (302, 403, 403, 200, 200)),
    "serving:deployment-stop": PAGE_OPERATOR_ACTION,
    "serving:deployment-redeploy": PAGE_OPERATOR_ACTION,  # the world's deployment runs: sent back to it
    "dashboard:dashboard": PAGE_READS,
    "dashboard:history": _every((302, 403, 503, 503, 503)),
    "observability:deployment-dashboard": PAGE_READS,
    "audit-log": _every((302, 403, 403, 403, 200)),
    "search": PAGE_READS,
    # Each user's own display preferences: an empty body is invalid (nothing saved).
    "preferences": _post((302, 403, 400, 400, 400), (302, 403, 405, 405, 405)),
    "preferences-theme": _post((302, 403, 400, 400, 400), (302, 403, 405, 405, 405)),
    "api-root": _every((403, 403, 405, 405, 405)),
    "api-schema": _every((403, 403, 405, 405, 405)), "api-docs": _every((403, 403, 405, 405, 405)),
    "model-list": API_CATALOG_LIST, "model-detail": API_CATALOG_DETAIL,
    "profile-list": API_CATALOG_LIST, "profile-detail": API_CATALOG_DETAIL,
    "precision-list": API_CATALOG_READ_ONLY, "precision-detail": API_CATALOG_READ_ONLY,
    "gpu-spec-list": API_NEVER, "gpu-spec-detail": API_NEVER,
    "node-list": API_NO_WRITES, "node-detail": API_NO_WRITES,
    "node-import-amdsmi": API_OPERATOR_POST[400],
    "node-reconfigure": API_OPERATOR_POST[409],  # the world has an operation in flight on the node
    "gpu-list": API_NO_WRITES, "gpu-detail": API_NO_WRITES,
    "gpu-mark-healthy": API_OPERATOR_POST[400],  # the GPU is healthy
    "gpu-reconfigure": API_OPERATOR_POST[202],
    "partition-list": API_NO_WRITES, "partition-detail": API_NO_WRITES,
    "reconfiguration-list": API_NO_WRITES, "reconfiguration-detail": API_NO_WRITES,
    "telemetry-list": API_NEVER,
    "plan-list": API_OPERATOR_POST[201], "plan-detail": API_NO_WRITES,
    "plan-apply": API_OPERATOR_POST[400],  # the world's plan cannot be applied as it stands
    "plan-replan": API_OPERATOR_POST[201],
    "deployment-list": API_OPERATOR_POST[409],  # no room for another replica
    "deployment-detail": {**API_NO_WRITES, "DELETE": (*API_REFUSED, 200, 200)},
    # Every signed-in user with a role makes its own tokens; only admins delete others'.
    "token-list": _post((403, 403, 201, 201, 201), (403, 405, 405, 405, 405)),
    "token-detail": {**_every((403, 405, 405, 405, 405)), "DELETE": (403, 404, 404, 404, 200)},
    "audit-event-list": API_NEVER, "audit-event-detail": API_NEVER,
}


def write_bodies(by_route: dict) -> dict[str, dict]:
    gpu, profile = by_route["gpu-detail"], by_route["profile-detail"]
    return {
        "partitions:fleet": {"gpu": gpu},
        "planning:gpu-editor": {"compute_mode": "CPX"},
        "planning:node-editor": {"pair": "NPS4:CPX"},
        "serving:deployment-create": {"name": "w-page", "profile": profile, "replicas": "1"},
        "gpu-reconfigure": {"compute_mode": "CPX"},
        "node-reconfigure": {"memory_mode": "NPS4", "compute_mode": "CPX"},
        "plan-list": {"gpus": [{"gpu": gpu, "compute_mode": "CPX"}]},
        "deployment-list": {"name": "w-api", "profile": profile, "replicas": 1},
        "token-list": {"name": "w-token"},
    }


def row_counts() -> tuple[int, ...]:
    """Rows in every table of the project's apps and auth (one query)."""
    from django.apps import apps
    from django.db import connection

    tables = sorted({m._meta.db_table for m in apps.get_models()
                     if m._meta.app_label in ("catalog", "partitions", "planning", "serving", "qos", "aimconsole", "auth")
                     and m._meta.managed and not m._meta.proxy})
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {connection.ops.quote_name(t)})" for t in tables))
        return tuple(cursor.fetchone())


def test_every_write_route_and_page_refuses_roles_that_may_not_write(client, world, redis_url, django_user_model):
    """Every route × write method × role: the status in WRITE_EXPECTED, and a role below
    operator (anonymous, no role, viewer) changes no row, whatever it sends. Each request runs
    in a transaction rolled back afterwards, so every role meets the same world."""
    import json
    from urllib.parse import urlencode

    from django.db import transaction

    values, by_route, _ = world
    bodies = write_bodies(by_route)
    users = {role: None if role == "anonymous" else django_user_model.objects.get(username=name)
             for role, name in zip(ROLES, ("", "nora", "vera", "otto", "ada"))}
    # Own things every signed-in role may create: an API token (for itself).
    own = {("token-list", "POST")}
    missing, wrong = [], []
    for pattern, name in all_patterns():
        url = concrete(pattern, name, values, by_route)
        admin_site = name.startswith("admin:")
        if admin_site:
            expected: dict[str, tuple[int, ...]] | None = None
        else:
            expected = WRITE_EXPECTED.get(name)
            if expected is None:
                missing.append(f"{name} ({pattern})")
                continue
        body = bodies.get(name, {})
        if url.startswith("/api/"):
            data, content_type = json.dumps(body), "application/json"
        else:
            data, content_type = urlencode(body, doseq=True), "application/x-www-form-urlencoded"
        for method in ("POST",) if admin_site else WRITE_METHODS:
            for role, user in users.items():
                client.logout()
                if user is not None:
                    client.force_login(user)
                may_write = role in ("operator", "admin")
                with transaction.atomic():
                    before = None if may_write else row_counts()
                    status = client.generic(method, url, data, content_type=content_type).status_code
                    changed = not may_write and row_counts() != before
                    transaction.set_rollback(True)
                label = f"{role} {method} {url} ({name}): {status}"
                if changed and (name, method) not in own:
                    wrong.append(f"{label}, and it changed rows")
                if admin_site:
                    # Django admin's own staff check: everyone else is sent to its login page.
                    ok = status in (200, 302, 403, 404, 405) if role == "admin" or name == "admin:login" else status == 302
                    if not ok:
                        wrong.append(label)
                elif status != expected[method][ROLES.index(role)]:
                    wrong.append(f"{label}, expected {expected[method][ROLES.index(role)]}")
    assert not missing, "routes without a write expectation: " + ", ".join(missing)
    assert not wrong, "\n".join(wrong)

"""Every URL pattern and WebSocket route, requested by each role, against an expectation
table. A route without an expectation fails the test: new routes must say who may use them."""

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
    "readyz": (200, 200, 200, 200, 200),
    "login": (200, 302, 302, 302, 302),
    "logout": (302, 405, 405, 405, 405),
    "catalog:model-list": EVERYONE_SIGNED_IN,
    "catalog:model-detail": EVERYONE_SIGNED_IN,
    "partitions:fleet": EVERYONE_SIGNED_IN,
    "planning:gpu-editor": EVERYONE_SIGNED_IN,
    "planning:node-editor": EVERYONE_SIGNED_IN,
    "planning:plan-detail": EVERYONE_SIGNED_IN,
    "planning:plan-apply": PAGE_POST_ONLY,
    "serving:operation-list": EVERYONE_SIGNED_IN,
    "partitions:operation-detail": EVERYONE_SIGNED_IN,
    "serving:deployment-list": EVERYONE_SIGNED_IN,
    "serving:deployment-create": (302, 403, 403, 200, 200),
    "serving:deployment-detail": EVERYONE_SIGNED_IN,
    "serving:deployment-stop": PAGE_POST_ONLY,
    "dashboard:dashboard": EVERYONE_SIGNED_IN,
    "audit-log": (302, 403, 403, 403, 200),
    "api-schema": API_READ,
    "api-docs": API_READ,
    "model-list": API_READ, "model-detail": API_READ,
    "profile-list": API_READ, "profile-detail": API_READ,
    "precision-list": API_READ, "precision-detail": API_READ,
    "gpu-spec-list": (403, 200, 200, 200, 200), "gpu-spec-detail": (403, 200, 200, 200, 200),
    "node-list": API_READ, "node-detail": API_READ,
    "node-import-amdsmi": API_POST_ONLY, "node-reconfigure": API_POST_ONLY,
    "gpu-list": API_READ, "gpu-detail": API_READ, "gpu-reconfigure": API_POST_ONLY,
    "partition-list": API_READ, "partition-detail": API_READ,
    "reconfiguration-list": API_READ, "reconfiguration-detail": API_READ,
    "deployment-list": API_READ, "deployment-detail": API_READ,
    "plan-list": API_READ, "plan-detail": API_READ, "plan-apply": API_POST_ONLY,
    "telemetry-list": API_READ,
    "token-list": (403, 200, 200, 200, 200), "token-detail": (403, 404, 404, 404, 200),
    "audit-event-list": (403, 403, 403, 403, 200), "audit-event-detail": (403, 403, 403, 403, 200),
    "metrics": None,  # filled in by the test from the metrics access rule
}
# Django admin: its own login for non-staff; the admin role (staff) gets in. Routes that need
# an object that does not exist (or a POST) answer 404/405/302 for staff.
ADMIN_ANON = (302, 302, 302, 302)

WS_EXPECTED = {
    "ws/operations/<int:pk>/": {"anonymous": 4401, "norole": 4403, "viewer": "accept", "operator": "accept", "admin": "accept"},
    "ws/telemetry/": {"anonymous": 4401, "norole": 4403, "viewer": "accept", "operator": "accept", "admin": "accept"},
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
    from planning.services import DemandSpec, create_plan
    from serving.services import create_deployment
    from partitions.services.reconfiguration import request_reconfiguration

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
        "partition-detail": Partition.objects.first().pk, "planning:plan-detail": plan.pk, "plan-detail": plan.pk,
        "planning:plan-apply": plan.pk, "plan-apply": plan.pk, "partitions:operation-detail": op.pk,
        "reconfiguration-detail": op.pk, "serving:deployment-detail": deployment.pk, "deployment-detail": deployment.pk,
        "serving:deployment-stop": deployment.pk, "token-detail": token.pk, "audit-event-detail": AuditEvent.objects.first().pk,
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
                elif name == "admin:autocomplete" or (name.startswith("admin:axes_") and name.endswith("_add")):
                    ok = status == 403  # autocomplete needs its parameters; axes logs are never added by hand
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
    _, _, op = world
    path = "/" + route.replace("<int:pk>", str(op.pk))
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

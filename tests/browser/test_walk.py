"""A walk of every console page as viewer, operator and admin, in Chromium on the real ASGI
console (daphne, so the pages' WebSockets connect).

The pages come from the URLconf: every named route outside the API and Django admin that is
not an action (the role matrix, tests/aimconsole/test_role_matrix.py, says which answer GET),
with one seeded object for each detail route, plus the admin index for the admin. Each visit
must show no console error, no Content-Security-Policy violation, no 5xx for the page or any
request it makes, and the status the role matrix expects (403 for a page the role may not see,
as a status, not a script error). A full-page screenshot of each lands in
``var/screenshots/<role>/<page>.png``.

Seeded like the demo: two emulated MI300X nodes (amd-smi emulator), one GPU repartitioned to
DPX by a finished operation, one deployment, one what-if plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.aimconsole.test_role_matrix import EXPECTED, ROLES, all_patterns
from tests.browser.conftest import SCREENSHOT_DIR, sign_in
from tests.emulated_nodes import make_emulated_node

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]

USERS = {"viewer": ("vera", "pw-vera"), "operator": ("otto", "pw-otto"), "admin": ("ada", "pw-ada")}
# Routes that are not pages a signed-in user walks to.
NOT_PAGES = {"home", "favicon", "healthz", "readyz", "metrics", "login", "logout", "api-schema"}

# Before any page script: report CSP violations on the console, where the walk listens.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error("[csp] " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


@dataclass(frozen=True)
class Page:
    name: str  # route name, or what the page shows
    url: str
    expected: dict[str, int] = field(default_factory=dict)  # role -> status; empty: no expectation

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def seed(tmp_path, monkeypatch) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Demo-like data: two emulated nodes, a finished operation, a deployment, a plan."""
    from models.models import InferenceModel, ModelProfile
    from partitions.models import GPU
    from partitions.reconfigure import run_reconfiguration
    from partitions.services.reconfiguration import request_reconfiguration
    from planning.services import DemandSpec, create_plan
    from serving.services import create_deployment

    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)  # run here, below
    first = make_emulated_node(tmp_path, "emu-node-1", gpus=2)
    make_emulated_node(tmp_path, "emu-node-2", gpus=2)
    op = request_reconfiguration(gpu=GPU.objects.get(node=first.node, index=1), compute_mode="DPX")
    run_reconfiguration(op.pk, sleep=lambda s: None)
    op.refresh_from_db()
    assert op.is_terminal, op.state
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    deployment = create_deployment(spec=DemandSpec(name="llama8", profile=profile, replicas=1))
    plan = create_plan(demands=[DemandSpec(name="llama8-more", profile=profile, replicas=2)])
    gpu = GPU.objects.get(node=first.node, index=0)
    return {"node": first.node, "gpu": gpu, "operation": op, "deployment": deployment, "plan": plan,
            "model": InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")}


def object_for(route: str, world: dict[str, Any]) -> Any:
    """The seeded object a detail route shows, from the route's name."""
    for word, key in (("gpu", "gpu"), ("node", "node"), ("operation", "operation"), ("deployment", "deployment"),
                      ("plan", "plan"), ("model", "model"), ("catalog", "model")):
        if word in route:
            return world[key]
    return None


def console_pages(world: dict[str, Any]) -> tuple[list[Page], list[str]]:
    """Every GET page of the console (from the URLconf), filled with seeded objects; and the
    routes left out because no seeded object fits them."""
    pages, unresolved = [], []
    for pattern, name in all_patterns():
        if pattern.startswith(("api/", "admin/")) and name != "api-docs":
            continue
        if name in NOT_PAGES or name.endswith("<unnamed>"):
            continue
        expected = EXPECTED.get(name)
        statuses = dict(zip(ROLES, expected)) if expected else {}
        if statuses and all(statuses[role] == 405 for role in USERS):
            continue  # an action (POST only), not a page
        url, missing = "/" + pattern, False

        def fill(match: re.Match, name: str = name) -> str:
            nonlocal missing
            converter, arg = match.group(1) or "str", match.group(2)
            obj = object_for(name, world)
            if obj is None:
                missing = True
                return "x"
            if arg == "name" or converter in ("str", "slug"):
                return str(getattr(obj, "name", obj.pk))
            return str(obj.pk)

        url = re.sub(r"<(?:(\w+):)?(\w+)>", fill, url)
        if missing or "(?P<" in url:
            unresolved.append(f"{name} ({pattern})")
            continue
        if name == "search":
            url += "?q=emu"
        if not is_page(url):
            continue  # an action (POST only), a JSON endpoint or an htmx fragment: not a page
        pages.append(Page(name, url, {role: statuses[role] for role in USERS} if statuses else {}))
    pages.append(Page("admin:index", "/admin/", {"viewer": 302, "operator": 302, "admin": 200}))
    return pages, unresolved


def is_page(url: str) -> bool:
    """Whether a GET of ``url`` (as an admin, through Django's test client) answers a whole
    HTML document: not a 405 (an action), not JSON, not a fragment that htmx swaps in."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="ada"))
    response = client.get(url)
    if response.status_code == 405 or not response.get("Content-Type", "").startswith("text/html"):
        return False
    return response.status_code != 200 or b"<html" in response.content[:2000].lower()


class Watch:
    """What went wrong on the page being visited: console errors (CSP ones included), page
    script errors, 5xx answers and failed requests."""

    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.problems: list[str] = []
        self.main_url = ""
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def start(self, url: str) -> None:
        self.problems, self.main_url = [], url

    def _console(self, message) -> None:  # type: ignore[no-untyped-def]
        if message.type != "error":
            return
        location = (message.location or {}).get("url", "")
        # Chromium logs the page's own 4xx as a failed resource: the walk checks that status itself.
        if "Failed to load resource" in message.text and location.split("?")[0] == self.main_url.split("?")[0]:
            return
        self.problems.append(f"console error: {message.text} ({location})")

    def _response(self, response) -> None:  # type: ignore[no-untyped-def]
        if response.status >= 500:
            self.problems.append(f"{response.status} for {response.request.method} {response.url}")

    def _failed(self, request) -> None:  # type: ignore[no-untyped-def]
        failure = request.failure or ""
        if "ERR_ABORTED" not in failure:  # navigating away aborts what is still loading
            self.problems.append(f"request failed: {request.method} {request.url}: {failure}")


def first_status(response) -> int:  # type: ignore[no-untyped-def]
    """The status of the first answer, before redirects (302 for Django admin's own login)."""
    request = response.request
    while request.redirected_from is not None:
        request = request.redirected_from
    first = request.response()
    return first.status if first is not None else response.status


@pytest.mark.parametrize("role", list(USERS))
def test_every_page_as(role, browser, console, catalog, viewer, operator, admin_user, tmp_path, monkeypatch):
    world = seed(tmp_path, monkeypatch)
    pages, unresolved = console_pages(world)
    assert len(pages) >= 15, [p.url for p in pages]
    shots = SCREENSHOT_DIR / role
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    watch = Watch(page)
    failures: list[str] = []
    try:
        username, password = USERS[role]
        sign_in(page, console, username, password)
        for target in pages:
            url = console.url + target.url
            watch.start(url)
            try:
                response = page.goto(url, wait_until="load")
            except PlaywrightError as exc:
                failures.append(f"{role} {target.url} ({target.name}): {exc.message.splitlines()[0]}")
                continue
            assert response is not None, url
            status = first_status(response)
            page.wait_for_timeout(400)  # the page's scripts connect their streams and apply the first message
            page.screenshot(path=str(shots / f"{target.slug}.png"), full_page=True)
            want = target.expected.get(role)
            if want is None:
                if status not in (200, 403):
                    failures.append(f"{role} {target.url} ({target.name}): {status}, no expectation in the role matrix")
            elif status != want:
                failures.append(f"{role} {target.url} ({target.name}): {status}, expected {want}")
            failures += [f"{role} {target.url} ({target.name}): {problem}" for problem in watch.problems]
    finally:
        context.close()
    assert not unresolved, "detail routes without a seeded object: " + ", ".join(unresolved)
    assert not failures, "\n".join(failures)

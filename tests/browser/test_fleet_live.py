"""The live fleet in a real browser, over real WebSockets (the console under daphne with the
Redis channel layer, tests/browser/conftest.py ``console``).

This process plays the node agent: it runs a repartition of an emulated node through the
reconfiguration services (from a thread: Playwright's sync API keeps an event loop in the
main thread, where async_to_sync cannot run), then places a deployment on the new layout. The
fleet page must show the new layout, the running operation and the deployment without a
reload; another page of the same user gets a toast when the operation finishes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from tests.browser.conftest import screenshot, sign_in
from tests.emulated_nodes import make_emulated_node
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]

NODE = "emu-live"


def in_thread(body: Callable[[], object]) -> object:
    """Run ``body`` in a thread with its own database connection; re-raise what it raised."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = body()
        except BaseException as exc:  # reported below
            result["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the agent's work did not finish"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("value")


def evaluate(page, expression: str):  # type: ignore[no-untyped-def]
    """Evaluated over DevTools (the page's CSP forbids eval; this is not the page's own eval)."""
    return page.evaluate(expression)


def test_a_repartition_and_a_deployment_appear_live_and_the_requester_gets_a_toast(
        browser, console, redis_layer, operator, catalog, fast_ops, tmp_path, monkeypatch):
    from django.utils import timezone

    from models.models import ModelProfile
    from partitions.models import GPU, Node, Reconfiguration

    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)  # this test runs it
    emulated = make_emulated_node(tmp_path, NODE, gpus=2)
    Node.objects.filter(pk=emulated.node.pk).update(agent_heartbeat_at=timezone.now())

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    fleet, other = context.new_page(), context.new_page()
    for page in (fleet, other):
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(fleet, console, "otto", "pw-otto")
    wait_for(lambda: evaluate(fleet, "document.getElementById('live-status').dataset.state === 'live'"), 20, "fleet live")
    evaluate(fleet, "window.notReloaded = true")
    assert evaluate(fleet, f"document.querySelectorAll('#gpu-{NODE}-0 .part').length") == 1
    other.goto(f"{console.url}/operations/")
    wait_for(lambda: evaluate(other, "document.getElementById('toasts').dataset.live === 'yes'"), 20, "toast socket")

    # The operator's repartition: requested, then run as the node's agent would.
    from partitions.reconfigure import run_reconfiguration
    from partitions.services.reconfiguration import request_reconfiguration

    gpu = GPU.objects.get(node=emulated.node, index=0)
    op = in_thread(lambda: request_reconfiguration(gpu=gpu, compute_mode="CPX", requested_by=operator,
                                                   reason="live fleet test"))
    assert isinstance(op, Reconfiguration)
    wait_for(lambda: evaluate(fleet, f"!!document.querySelector('#gpu-{NODE}-0 a.badge.op[data-operation=\"{op.pk}\"]')"),
             15, "the running operation on the GPU card")
    state = in_thread(lambda: run_reconfiguration(op.pk, worker="test-agent"))
    assert state == "succeeded", Reconfiguration.objects.get(pk=op.pk).error_message

    wait_for(lambda: evaluate(fleet, f"document.querySelectorAll('#gpu-{NODE}-0 .part').length") == 8, 20,
             "the GPU card to show CPX's 8 partitions")
    assert evaluate(fleet, f"document.getElementById('gpu-{NODE}-0').dataset.mode") == "CPX"
    wait_for(lambda: evaluate(fleet, f"!document.querySelector('#gpu-{NODE}-0 a.badge.op')"), 10,
             "the finished operation to leave the card")
    assert evaluate(fleet, "window.notReloaded === true")

    wait_for(lambda: evaluate(other, "document.querySelectorAll('#toasts .toast').length") >= 1, 15, "a toast")
    toast = evaluate(other, "document.querySelector('#toasts .toast').textContent")
    assert f"Operation #{op.pk} succeeded" in toast and "CPX" in toast
    assert evaluate(other, "document.querySelector('#toasts .toast a').getAttribute('href')") == f"/operations/{op.pk}/"
    screenshot(other, "toast-operation-finished")

    # A deployment lands on partition 3 of the new layout: the card names it, in full, in its table.
    from serving import events as serving_events
    from serving.models import Deployment, DeploymentSlot

    name = "llama-3-8b-instruct-for-the-support-chat"

    def deploy() -> None:
        profile = ModelProfile.objects.filter(gpu_model="MI300X").order_by("memory_required_gb").first()
        deployment = Deployment.objects.create(name=name, profile=profile, replicas=1, state=Deployment.State.RUNNING,
                                               requested_by=operator)
        part = GPU.objects.get(node=emulated.node, index=0).partitions.get(index=3)
        DeploymentSlot.objects.create(deployment=deployment, replica=0, partition=part)
        serving_events.publish_deployment_state(deployment, Deployment.State.SCHEDULED)

    in_thread(deploy)
    wait_for(lambda: evaluate(fleet, f"document.querySelectorAll('#gpu-{NODE}-0 .part a.model').length") == 1, 15,
             "the deployment on its partition")
    fleet.click(f"#gpu-{NODE}-0 details.parttable summary")
    row = evaluate(fleet, f"Array.from(document.querySelectorAll('#gpu-{NODE}-0 details.parttable tr')).map((r) => r.innerText)")
    assert any(name in text and "#3" in text or name in text for text in row), row
    assert evaluate(fleet, f"document.querySelector('#gpu-{NODE}-0 details.parttable a').offsetWidth") > 0  # visible
    assert evaluate(fleet, "window.notReloaded === true")
    screenshot(fleet, "fleet-live-cpx-table")
    wait_for(lambda: evaluate(other, "Array.from(document.querySelectorAll('#toasts .toast')).some("
                                     "(t) => t.textContent.includes('is running'))"), 15, "the deployment's toast")
    assert errors == [], errors
    context.close()

"""The agent's periodic reconciliation sync: corrects the inventory from the hardware and
records what it changed (node API and audit), never mid-operation."""

from __future__ import annotations

import pytest

from aimconsole.models import AuditEvent
from partitions.agent import Agent
from partitions.models import GPU, Node, Reconfiguration
from partitions.services.reconciliation import reconcile_node
from partitions.services.reconfiguration import claim_reconfiguration, request_reconfiguration
from partitions.tasks import reconcile_node_task

pytestmark = pytest.mark.django_db


def test_reconciliation_corrects_a_stale_inventory_and_records_what_it_changed(emulated, api_client_for, viewer):
    # A reload the console gave up on finished after all: the hardware is in NPS4.
    emulated.state.set_modes(memory="NPS4", compute="CPX")
    changes = reconcile_node(node=emulated.node)
    assert "node memory mode NPS1 → NPS4" in changes
    assert "GPU 0 compute mode SPX → CPX" in changes and "GPU 1 partitions 1 → 8" in changes
    node = Node.objects.get(pk=emulated.node.pk)
    assert node.memory_mode == "NPS4" and node.reconcile_changes == changes and node.reconciled_at
    assert set(GPU.objects.filter(node=node).values_list("compute_mode", "memory_mode")) == {("CPX", "NPS4")}
    event = AuditEvent.objects.get(action="node.reconciled")
    assert event.after["changes"] == changes and event.before["memory_mode"] == "NPS1"
    body = api_client_for(viewer).get(f"/api/v1/nodes/{node.name}/").json()
    assert body["reconcile_changes"] == changes and body["reconciled_at"]


def test_reconciliation_of_a_node_in_step_changes_and_records_nothing(emulated, settings):
    settings.AGENT_RECONCILE_S = 0.001
    assert reconcile_node(node=emulated.node) == []
    assert reconcile_node_task(emulated.node.name) == "unchanged"
    assert not AuditEvent.objects.filter(action="node.reconciled").exists()


def test_reconciliation_waits_while_an_operation_on_the_node_is_under_way(emulated, monkeypatch):
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)
    op = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=0), compute_mode="CPX")
    claim_reconfiguration(op.pk, worker="w").transition("draining", "claimed", "claimed")
    emulated.state.set_modes(compute="CPX")  # mid-change: not a fact to record
    before = len(emulated.calls())
    assert reconcile_node(node=emulated.node) is None
    assert len(emulated.calls()) == before  # not even read
    assert GPU.objects.get(node=emulated.node, index=0).compute_mode == "SPX"
    Reconfiguration.objects.filter(pk=op.pk).update(state="succeeded")
    assert reconcile_node(node=emulated.node)


def test_reconciliation_messages_queued_behind_a_long_operation_run_once(emulated, settings):
    settings.AGENT_RECONCILE_S = 600
    assert reconcile_node(node=emulated.node) == []
    before = len(emulated.calls())
    assert reconcile_node(node=emulated.node) is None  # ran moments ago
    assert len(emulated.calls()) == before


def test_the_agent_queues_a_reconciliation_every_interval(emulated, monkeypatch, settings):
    settings.AGENT_RECONCILE_S = 42
    sent: list[str] = []
    monkeypatch.setattr("partitions.dispatch.send_reconcile", sent.append)
    agent = Agent(emulated.node.name)
    (loop,) = [loop for loop in agent.loops if loop.name == "reconcile-emu-a"]
    assert loop.interval == 42
    loop.body()
    assert sent == ["emu-a"]

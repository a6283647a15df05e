"""One agent per node: the node lease (fencing token), the agent's heartbeat renewing it, and
operations that stop before their next hardware call once their lease (on the node, or on the
operation) is lost. Two real agent processes: tests/integration/test_agents.py."""

from __future__ import annotations

import threading
import time

import pytest
from django.db.models import F
from django.utils import timezone

from partitions import operations as ops
from partitions.agent import Agent
from partitions.models import GPU, Node, Reconfiguration, ReconfigurationStep
from partitions.reconfigure import run_reconfiguration
from partitions.services.agent_lease import (
    NodeLease,
    NodeLeaseHeld,
    acquire_node_lease,
    holds_node_lease,
    release_node_lease,
)
from partitions.services.reconfiguration import request_reconfiguration
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db


def steal(node: Node, holder: str = "other-host:4242") -> NodeLease:
    """What a second agent does once the first one's lease lapsed."""
    Node.objects.filter(pk=node.pk).update(agent_lease_expires_at=timezone.now() - timezone.timedelta(seconds=1))
    return acquire_node_lease(node=node, holder=holder)


def test_a_node_is_held_by_one_agent_at_a_time(emulated):
    first = acquire_node_lease(node=emulated.node, holder="a:1")
    with pytest.raises(NodeLeaseHeld, match="held by agent a:1"):
        acquire_node_lease(node=emulated.node, holder="b:2")
    assert holds_node_lease(first)
    second = steal(emulated.node, "b:2")  # a lapsed lease can be taken over, with a new token
    assert second.token == first.token + 1
    assert not holds_node_lease(first) and holds_node_lease(second)
    release_node_lease(first)  # a stale holder cannot release the new one's lease
    assert holds_node_lease(second)
    release_node_lease(second)
    third = acquire_node_lease(node=emulated.node, holder="c:3")
    assert third.token == second.token + 1  # tokens only go up


def test_the_heartbeat_renews_the_lease_and_stops_the_agent_once_it_is_taken_over(emulated, settings):
    settings.AGENT_HEARTBEAT_S = 5
    lease = acquire_node_lease(node=emulated.node, holder="a:1")
    stopped: list[bool] = []
    agent = Agent(emulated.node.name, lease=lease, on_lease_lost=lambda: stopped.append(True))
    Node.objects.filter(pk=emulated.node.pk).update(agent_lease_expires_at=timezone.now() + timezone.timedelta(seconds=1))
    agent.heartbeat()
    node = Node.objects.get(pk=emulated.node.pk)
    assert node.agent_alive and (node.agent_lease_expires_at - timezone.now()).total_seconds() > 10
    steal(emulated.node)
    agent.heartbeat()
    agent.heartbeat()
    assert agent.lease_lost and stopped == [True]
    assert Node.objects.get(pk=emulated.node.pk).agent_lease_holder == "other-host:4242"


def test_an_operation_is_not_run_by_an_agent_that_does_not_hold_the_node(emulated, fast_ops):
    mine = acquire_node_lease(node=emulated.node, holder="a:1")
    steal(emulated.node)
    op = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=0), compute_mode="CPX")
    before = len(emulated.calls())
    assert run_reconfiguration(op.pk, sleep=lambda s: None, node_lease=mine) == "not_lease_holder"
    assert len(emulated.calls()) == before
    assert Reconfiguration.objects.get(pk=op.pk).state == ops.PENDING  # left for the node's agent


def test_a_run_outside_an_agent_refuses_while_an_agent_holds_the_node(emulated, fast_ops):
    acquire_node_lease(node=emulated.node, holder="agent-host:1")
    op = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=0), compute_mode="CPX")
    assert run_reconfiguration(op.pk, sleep=lambda s: None) == "not_lease_holder"
    assert emulated.calls("set") == [] and Reconfiguration.objects.get(pk=op.pk).state == ops.PENDING


def test_an_operation_whose_node_lease_is_lost_stops_before_its_next_hardware_call(emulated, fast_ops):
    lease = acquire_node_lease(node=emulated.node, holder="a:1")
    # The first read fails once (garbled output), so the run pauses before reading again:
    # meanwhile another agent takes the node over.
    emulated.state.add_fault({"match": "static", "kind": "garbage", "times": 1})
    op = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=0), compute_mode="CPX")
    calls_at_takeover: list[int] = []

    def sleep(seconds: float) -> None:
        steal(emulated.node)
        calls_at_takeover.append(len(emulated.calls()))

    assert run_reconfiguration(op.pk, sleep=sleep, node_lease=lease) == "lease_lost"
    assert len(emulated.calls()) == calls_at_takeover[0]  # not one amd-smi call after the take-over
    op.refresh_from_db()
    assert op.state == ops.DRAINING and op.lease_expires_at <= timezone.now()  # the holder's sweeper re-sends it
    assert "no longer holds node emu-a" in op.steps.last().message
    g = GPU.objects.get(node=emulated.node, index=0)
    assert (g.health, g.compute_mode) != ("unhealthy", "CPX")


@pytest.mark.django_db(transaction=True)
def test_a_lost_operation_lease_stops_the_rollback_before_its_next_hardware_call(tmp_path, fast_ops):
    """The LeaseKeeper renews the operation's lease during the rollback's long calls; once a
    renewal finds the operation claimed by another worker, the next amd-smi call must not run."""
    fast_ops.RECONFIGURATION_LEASE_S = 1.5  # renewals every 0.5 s
    emulated = make_emulated_node(tmp_path, "emu-l", gpus=2)
    emulated.state.set_modes(compute="DPX")
    from partitions.services import sync_node

    sync_node(node=emulated.node)
    # The NPS change lands (the reload leaves CPX), setting QPX fails: rollback to NPS1 (a 2 s
    # reload), then DPX.
    emulated.state.add_fault({"match": "set -C", "kind": "fail", "exit": 1, "message": "injected", "times": 1})
    emulated.state.add_fault({"match": "reset -r", "kind": "slow_reload", "seconds": 2, "times": 2})
    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="QPX")

    def take_over() -> None:  # another worker claims the operation as the rollback starts
        from django.db import connection

        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if ReconfigurationStep.objects.filter(reconfiguration_id=op.pk, action=ops.STEP_ROLLBACK).exists():
                    Reconfiguration.objects.filter(pk=op.pk).update(fencing_token=F("fencing_token") + 1)
                    return
                time.sleep(0.05)
        finally:
            connection.close()

    thief = threading.Thread(target=take_over)
    thief.start()
    try:
        result = run_reconfiguration(op.pk, sleep=lambda s: None)
    finally:
        thief.join(70)
    assert result == "stale"
    dpx = [c for c in emulated.calls("set") if "-C" in c["args"] and "DPX" in c["args"]]
    assert dpx == []  # the rollback's compute re-set never ran


def test_the_agent_environment_carries_the_lease_to_its_worker_processes(emulated, monkeypatch):
    from partitions.services.agent_lease import ENV

    lease = acquire_node_lease(node=emulated.node, holder="a:1")
    monkeypatch.setenv(ENV, lease.to_environment())
    assert NodeLease.from_environment("emu-a") == lease
    assert NodeLease.from_environment("emu-other") is None

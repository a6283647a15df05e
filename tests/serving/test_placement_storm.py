"""Direct placement off the fleet-wide lock: placement on a snapshot, a conditional commit that
fails when a chosen partition was taken meanwhile, bounded retries, and agents that keep
heart-beating and syncing through a storm of creates.

The storm runs real threads on the database under test (each thread its own connection): on
SQLite writers take turns, on PostgreSQL they really run at once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from models.models import ModelProfile
from partitions.backends.simulated import SimulatedFleet
from partitions.geometry import ComputeMode
from partitions.models import GPU, Node, Partition
from partitions.services import sync_inventory
from planning.services import DemandSpec
from serving import services
from serving.models import Deployment, DeploymentSlot
from serving.services import PlacementConflict, create_deployment

LLAMA8_FP16 = ("meta-llama/Llama-3.1-8B-Instruct", "fp16")  # ~19.5 GiB: one CPX partition (24 GiB)


def llama8() -> ModelProfile:
    return ModelProfile.objects.get(model__hf_id=LLAMA8_FP16[0], precision__code=LLAMA8_FP16[1], gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1)


def cpx_fleet(nodes: int) -> SimulatedFleet:
    """``nodes`` simulated MI300X nodes of 8 CPX GPUs (8 x 24 GiB each), registered through the
    real inventory sync."""
    fleet = SimulatedFleet(nodes=nodes, prefix="storm-")
    for name, state in fleet.nodes.items():
        state.compute_modes = [ComputeMode.CPX] * 8
        node = Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True)
        sync_inventory(node=node, inventory=fleet.backend(name).inventory())
    return fleet


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` on its own database connection, closed when it returns."""
    def run() -> Any:
        try:
            return fn()
        finally:
            connection.close()
    return run


class Agent(threading.Thread):
    """A node agent's database writes: heartbeats and inventory syncs, in turn, until stopped.
    A heartbeat that waited for a lock (on PostgreSQL: longer than ``lock_timeout``) or hit an
    error is counted as missed."""

    def __init__(self, name: str, fleet: SimulatedFleet, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.node_name, self.fleet, self.stop = name, fleet, stop
        self.beats = self.written = self.syncs = 0
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    # A heartbeat must never queue behind a placement: the first lock wait fails it.
                    cursor.execute("SET lock_timeout = '200ms'")
            node = Node.objects.get(name=self.node_name)
            while not self.stop.is_set() or self.beats < 5:
                self.beats += 1
                try:
                    self.written += Node.objects.filter(pk=node.pk).update(agent_heartbeat_at=timezone.now())
                except DatabaseError as exc:
                    self.errors.append(f"heartbeat: {exc}")
                sync_inventory(node=node, inventory=self.fleet.backend(self.node_name).inventory())
                self.syncs += 1
        except Exception as exc:  # reported by the test, never swallowed
            self.errors.append(repr(exc))
        finally:
            connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_storm_of_parallel_creates_never_double_books_and_never_blocks_heartbeats(catalog):
    fleet = cpx_fleet(2)  # 128 partitions for 50 x 2 replicas: tight, so creates collide
    profile = llama8()
    stop = threading.Event()
    agents = [Agent(name, fleet, stop) for name in fleet.nodes]
    for agent in agents:
        agent.start()
    outcomes: dict[str, Any] = {}
    start = threading.Barrier(50)

    def create(i: int) -> None:
        start.wait()
        try:
            outcomes[f"d{i}"] = create_deployment(spec=DemandSpec(name=f"d{i}", profile=profile, replicas=2)).pk
        except PlacementConflict as exc:
            outcomes[f"d{i}"] = exc.code
        except Exception as exc:  # noqa: BLE001 - any other outcome fails the test below
            outcomes[f"d{i}"] = repr(exc)

    creators = [threading.Thread(target=in_thread(lambda i=i: create(i))) for i in range(50)]
    for thread in creators:
        thread.start()
    for thread in creators:
        thread.join(120)
    stop.set()
    for agent in agents:
        agent.join(60)

    kinds = Counter("created" if isinstance(v, int) else v for v in outcomes.values())
    # It all fits: after a collision the losers take turns, so every create ends up placed.
    assert kinds == {"created": 50}, outcomes
    slots = list(DeploymentSlot.objects.values_list("deployment_id", "partition_id"))
    assert len(slots) == len({partition for _, partition in slots})  # no partition booked twice
    per_deployment = Counter(deployment for deployment, _ in slots)
    created = {v for v in outcomes.values() if isinstance(v, int)}
    assert set(per_deployment) == created and set(per_deployment.values()) == {2}  # all or nothing
    assert Deployment.objects.count() == len(created)  # a create that gave up left nothing behind
    for agent in agents:
        assert not agent.errors, agent.errors
        assert agent.beats >= 5 and agent.written == agent.beats  # every heartbeat written
        assert agent.syncs == agent.beats


@pytest.mark.django_db(transaction=True)
def test_heartbeats_never_wait_for_a_placement_in_progress(catalog, monkeypatch):
    """A heartbeat and a sync of a node run to completion while a create is between its
    snapshot and its commit on that very node."""
    fleet = cpx_fleet(1)
    name = next(iter(fleet.nodes))
    in_placement, release = threading.Event(), threading.Event()
    real = services._place_on_snapshot

    def slow_placement(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        in_placement.set()
        release.wait(30)
        return result

    monkeypatch.setattr(services, "_place_on_snapshot", slow_placement)
    profile = llama8()
    creator = threading.Thread(target=in_thread(lambda: create_deployment(
        spec=DemandSpec(name="slow", profile=profile, replicas=1))))
    creator.start()
    assert in_placement.wait(30)
    done: list[int] = []

    def agent_writes() -> None:
        node = Node.objects.get(name=name)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '200ms'")
        done.append(Node.objects.filter(pk=node.pk).update(agent_heartbeat_at=timezone.now()))
        sync_inventory(node=node, inventory=fleet.backend(name).inventory())
        done.append(1)

    agent = threading.Thread(target=in_thread(agent_writes))
    agent.start()
    agent.join(20)
    finished_before_placement = list(done)
    release.set()
    creator.join(30)
    assert finished_before_placement == [1, 1]
    assert DeploymentSlot.objects.filter(deployment__name="slow").count() == 1


def _rival_takes(partitions: list[Partition], *, times: int) -> Callable[..., Any]:
    """A ``_place_on_snapshot`` that, right after placing, lets a rival deployment take the
    first partition placement chose (``times`` times): the commit must see it."""
    real = services._place_on_snapshot
    rival = Deployment.objects.create(name="rival", profile=llama8(), replicas=64, state=Deployment.State.SCHEDULED)
    taken = {"n": 0}

    def placing(*args: Any, **kwargs: Any) -> Any:
        fleet, result = real(*args, **kwargs)
        if result.ok() and taken["n"] < times:
            slot = result.assignments[0].slots[0]
            part = Partition.objects.get(gpu__node__name=slot.node, gpu__index=slot.gpu_index, index=slot.partition_index)
            with transaction.atomic():
                DeploymentSlot.objects.create(deployment=rival, replica=taken["n"], partition=part)
            partitions.append(part)
            taken["n"] += 1
        return fleet, result

    return placing


@pytest.mark.django_db
def test_a_partition_taken_after_the_snapshot_makes_it_place_again_elsewhere(catalog, monkeypatch):
    cpx_fleet(1)
    taken: list[Partition] = []
    monkeypatch.setattr(services, "PLACE_BACKOFF_S", 0.0)
    monkeypatch.setattr(services, "_place_on_snapshot", _rival_takes(taken, times=1))
    deployment = create_deployment(spec=DemandSpec(name="mine", profile=llama8(), replicas=1))
    mine = deployment.slots.get()
    assert len(taken) == 1 and mine.partition_id != taken[0].pk
    assert DeploymentSlot.objects.get(partition=taken[0]).deployment.name == "rival"


@pytest.mark.django_db
def test_it_gives_up_cleanly_after_the_last_attempt(catalog, monkeypatch):
    cpx_fleet(1)
    taken: list[Partition] = []
    monkeypatch.setattr(services, "PLACE_BACKOFF_S", 0.0)
    monkeypatch.setattr(services, "_place_on_snapshot", _rival_takes(taken, times=10**6))
    with pytest.raises(PlacementConflict) as caught:
        create_deployment(spec=DemandSpec(name="mine", profile=llama8(), replicas=1))
    assert caught.value.code == "contended" and "try again" in str(caught.value)
    assert len(taken) == services.PLACE_ATTEMPTS  # one snapshot per attempt, then it stops
    assert not Deployment.objects.filter(name="mine").exists()
    assert DeploymentSlot.objects.exclude(deployment__name="rival").count() == 0


@pytest.mark.django_db
def test_the_api_says_contended_and_when_to_retry(catalog, monkeypatch, api_client_for, operator):
    cpx_fleet(1)
    monkeypatch.setattr(services, "PLACE_BACKOFF_S", 0.0)
    monkeypatch.setattr(services, "_place_on_snapshot", _rival_takes([], times=10**6))
    response = api_client_for(operator).post("/api/v1/deployments/", {
        "name": "mine", "profile": llama8().pk, "replicas": 1}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "contended" and response["Retry-After"] == "1"
    assert not Deployment.objects.filter(name="mine").exists()


@pytest.mark.django_db
def test_a_create_on_a_large_fleet_reads_a_bounded_number_of_nodes(catalog, monkeypatch):
    cpx_fleet(40)
    read: list[int] = []
    real = services.fleet_state

    def counting(**kwargs: Any) -> Any:
        fleet = real(**kwargs)
        read.append(len(fleet.nodes))
        return fleet

    monkeypatch.setattr(services, "fleet_state", counting)
    create_deployment(spec=DemandSpec(name="mine", profile=llama8(), replicas=2))
    # The snapshot and the commit's re-read: the candidates and the chosen nodes, never the fleet.
    assert read and max(read) <= services.candidate_nodes_limit() < 40


@pytest.mark.django_db
def test_candidates_skip_nodes_that_cannot_hold_it_and_respect_pins(catalog):
    cpx_fleet(3)
    first, second, third = Node.objects.filter(name__startswith="storm-").order_by("pk")
    GPU.objects.filter(node=first).update(schedulable=False)
    demand = DemandSpec(name="x", profile=llama8(), replicas=1).demand()
    assert services._candidate_nodes(demand) == [second.pk, third.pk]
    pinned = DemandSpec(name="x", profile=llama8(), replicas=1, pin_node=third, pin_gpu_index=2).demand()
    assert services._candidate_nodes(pinned) == [third.pk]
    # A GPU already in use comes first: placement fills it before opening an empty one.
    part = Partition.objects.filter(gpu__node=third, gpu__index=5).first()
    assert part is not None
    DeploymentSlot.objects.create(deployment=Deployment.objects.create(name="busy", profile=llama8(), replicas=1,
                                                                       state=Deployment.State.SCHEDULED), replica=0, partition=part)
    assert services._candidate_nodes(demand) == [third.pk, second.pk]
    placed = create_deployment(spec=DemandSpec(name="next", profile=llama8(), replicas=1)).slots.get()
    assert (placed.partition.gpu.node_id, placed.partition.gpu.index) == (third.pk, 5)


@pytest.mark.django_db
def test_when_the_candidates_cannot_hold_it_the_whole_fleet_is_asked(catalog, monkeypatch):
    cpx_fleet(2)
    monkeypatch.setattr(services, "_candidate_nodes", lambda demand: [Node.objects.order_by("pk").first().pk])  # type: ignore[union-attr]
    # One CPX node has 64 partitions: 70 replicas need both nodes.
    deployment = create_deployment(spec=DemandSpec(name="wide", profile=llama8(), replicas=70))
    assert deployment.slots.values("partition__gpu__node").distinct().count() == 2

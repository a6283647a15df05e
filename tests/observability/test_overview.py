"""The overview page: its numbers (observability/overview.py, pure: no database) and the page
that feeds them (observability/views.py: a fixed number of queries, one Redis round trip)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from observability.overview import (
    GpuFacts,
    NodeFacts,
    OverviewInputs,
    PartitionFacts,
    SnapshotFacts,
    snapshot_facts,
    summarize,
)

# --- the pure function -------------------------------------------------------------------------

AGENT_S, STALE_S = 30.0, 10.0


def inputs(**over) -> OverviewInputs:  # type: ignore[no-untyped-def]
    """One node, one MI300X GPU in DPX (two 96 GiB partitions), p0 held by "llm" (20 GiB),
    the agent alive and a fresh snapshot: the baseline each test changes one thing of."""
    base = OverviewInputs(
        nodes=(NodeFacts(name="n1", emulated=True, heartbeat_age_s=2.0),),
        gpus=(GpuFacts(node="n1", index=0, gpu_model="MI300X", unhealthy=False),),
        partitions=(
            PartitionFacts(node="n1", gpu_index=0, index=0, gpu_model="MI300X", memory_gb=96.0, holder="llm", reserved_gb=20.0),
            PartitionFacts(node="n1", gpu_index=0, index=1, gpu_model="MI300X", memory_gb=96.0, holder="", reserved_gb=0.0),
        ),
        smallest_need_gb=(("MI300X", 10.0),),
        operation_states=(),
        replica_states=(),
        snapshots=(SnapshotFacts(node="n1", age_s=1.0, activity=((0, 0, 50.0), (0, 1, 0.0))),),
        agent_stale_after_s=AGENT_S,
        telemetry_stale_after_s=STALE_S,
    )
    return replace(base, **over)


def part(index: int, memory_gb: float | None, holder: str = "", reserved_gb: float = 0.0, gpu_model: str = "MI300X",
         node: str = "n1", gpu_index: int = 0) -> PartitionFacts:
    return PartitionFacts(node=node, gpu_index=gpu_index, index=index, gpu_model=gpu_model, memory_gb=memory_gb,
                          holder=holder, reserved_gb=reserved_gb)


def test_allocation_is_held_partitions_over_all_and_reserved_over_total_memory():
    a = summarize(inputs()).allocation
    assert (a.held, a.partitions, a.ratio) == (1, 2, 0.5)
    assert (a.reserved_gb, a.total_gb, a.memory_ratio) == (20.0, 192.0, pytest.approx(20 / 192))


def test_allocation_of_an_empty_fleet_is_no_ratio_rather_than_zero():
    a = summarize(inputs(nodes=(), gpus=(), partitions=(), snapshots=())).allocation
    assert (a.partitions, a.ratio, a.memory_ratio) == (0, None, None)


def test_partitions_of_unknown_size_count_as_partitions_but_add_no_memory():
    a = summarize(inputs(partitions=(part(0, None, "llm", 20.0), part(1, 96.0)))).allocation
    assert (a.held, a.partitions, a.total_gb, a.reserved_gb) == (1, 2, 96.0, 20.0)


@pytest.mark.parametrize(("activity", "idle", "measured", "unknown"), [
    (4.9, 1, 1, 0),      # below the threshold: idle
    (0.0, 1, 1, 0),
    (5.0, 0, 1, 0),      # at the threshold: not below it
    (73.0, 0, 1, 0),
    (None, 0, 0, 1),     # the sample has no activity for it (N/A): unknown, not idle
])
def test_a_held_partition_is_idle_when_its_latest_activity_is_below_the_threshold(activity, idle, measured, unknown):
    snap = SnapshotFacts(node="n1", age_s=1.0, activity=((0, 0, activity), (0, 1, 0.0)))
    i = summarize(inputs(snapshots=(snap,))).idle
    assert (i.available, i.idle, i.measured, i.unknown, i.held) == (True, idle, measured, unknown, 1)
    assert i.idle_partitions == (("n1/gpu0/p0", "llm"),) * idle


def test_free_partitions_are_never_idle_even_at_zero_activity():
    i = summarize(inputs(partitions=(part(0, 96.0), part(1, 96.0)))).idle
    assert (i.held, i.idle, i.measured) == (0, 0, 0)


@pytest.mark.parametrize("snapshots", [
    (),                                                                        # no snapshot of the node
    (SnapshotFacts(node="n1", age_s=STALE_S + 0.1, activity=((0, 0, 1.0),)),),  # too old to say
    (SnapshotFacts(node="n1", age_s=1.0, activity=((0, 1, 1.0),)),),           # the partition is not in it
])
def test_held_partitions_without_a_fresh_reading_are_unknown_not_idle(snapshots):
    i = summarize(inputs(snapshots=snapshots)).idle
    assert (i.available, i.idle, i.measured, i.unknown) == (True, 0, 0, 1)


def test_without_redis_idle_and_stale_telemetry_are_unavailable_not_zero():
    o = summarize(inputs(snapshots=None))
    assert o.idle.available is False and o.idle.idle is None
    assert o.health.telemetry_available is False and o.health.stale is None
    # the database's numbers are unaffected
    assert o.allocation.held == 1 and o.health.agents_down == ()


@pytest.mark.parametrize(("free_gb", "need_gb", "stranded"), [
    (6.0, 10.0, True),    # smaller than the smallest profile's need
    (10.0, 10.0, False),  # a profile fits when its need <= the partition (models/sizing.py fit())
    (96.0, 10.0, False),
])
def test_a_free_partition_is_stranded_when_the_smallest_profile_does_not_fit(free_gb, need_gb, stranded):
    s = summarize(inputs(partitions=(part(0, 96.0, "llm", 20.0), part(1, free_gb)),
                         smallest_need_gb=(("MI300X", need_gb),))).stranded
    assert (s.partitions, s.gb) == ((1, free_gb) if stranded else (0, 0.0))
    assert (s.free_partitions, s.free_gb) == (1, free_gb)


def test_each_gpu_model_is_measured_against_its_own_smallest_profile():
    parts = (part(0, 24.0, gpu_model="MI300X"), part(1, 24.0, gpu_model="MI325X", gpu_index=1), part(2, 8.0, gpu_model="MI300X"))
    s = summarize(inputs(partitions=parts, smallest_need_gb=(("MI300X", 10.0), ("MI325X", 30.0)))).stranded
    assert (s.partitions, s.gb) == (2, 32.0)  # MI325X's 24 GiB (needs 30) and MI300X's 8 GiB (needs 10)
    assert s.smallest_need_gb == (("MI300X", 10.0), ("MI325X", 30.0))


def test_only_the_fleets_gpu_models_smallest_needs_are_reported():
    s = summarize(inputs(smallest_need_gb=(("MI355X", 3.0), ("MI300X", 10.0)))).stranded
    assert s.smallest_need_gb == (("MI300X", 10.0),)


def test_free_memory_of_a_gpu_model_without_any_profile_is_stranded():
    s = summarize(inputs(partitions=(part(0, 24.0, gpu_model=""),), smallest_need_gb=(("MI300X", 10.0),))).stranded
    assert (s.partitions, s.gb) == (1, 24.0)
    assert s.no_profile_models == ("",)


def test_held_partitions_and_partitions_of_unknown_size_are_never_stranded():
    s = summarize(inputs(partitions=(part(0, 4.0, "llm", 3.0), part(1, None)))).stranded
    assert (s.partitions, s.gb, s.free_partitions) == (0, 0.0, 0)  # free ones: only those of known size


def test_operations_in_flight_are_the_non_terminal_ones_and_failures_count_the_last_day():
    states = (("pending", 2, 2), ("applying", 1, 0), ("verifying", 1, 0), ("succeeded", 9, 4),
              ("failed", 3, 1), ("rolled_back", 2, 2))
    ops = summarize(inputs(operation_states=states)).operations
    assert (ops.in_flight, ops.failed_24h, ops.rolled_back_24h) == (4, 3, 2)


@pytest.mark.parametrize(("age", "down"), [(None, True), (AGENT_S, True), (AGENT_S - 0.5, False), (0.0, False)])
def test_an_agent_is_down_when_never_seen_or_silent_for_the_threshold(age, down):
    h = summarize(inputs(nodes=(NodeFacts(name="n1", emulated=False, heartbeat_age_s=age),))).health
    assert h.agents_down == ((NodeFacts(name="n1", emulated=False, heartbeat_age_s=age),) if down else ())


@pytest.mark.parametrize(("snapshots", "stale"), [
    ((), ("n1",)),                                                     # missing
    ((SnapshotFacts(node="n1", age_s=STALE_S + 1, activity=()),), ("n1",)),  # older than the threshold
    ((SnapshotFacts(node="n1", age_s=STALE_S, activity=()),), ()),
    ((SnapshotFacts(node="n1", age_s=0.2, activity=()),), ()),
])
def test_telemetry_is_stale_when_the_snapshot_is_missing_or_old(snapshots, stale):
    assert summarize(inputs(snapshots=snapshots)).health.stale == stale


def test_unhealthy_gpus_are_named_and_counted_against_all_gpus():
    gpus = (GpuFacts(node="n1", index=0, gpu_model="MI300X", unhealthy=False),
            GpuFacts(node="n1", index=1, gpu_model="MI300X", unhealthy=True))
    h = summarize(inputs(gpus=gpus)).health
    assert (h.gpus, h.unhealthy) == (2, ("n1/gpu1",))


def test_replica_copies_by_state_list_every_live_state_and_failed_with_zeros():
    o = summarize(inputs(replica_states=(("ready", 3), ("failed", 1), ("stopped", 7))))
    assert o.replicas == (("ready", 3), ("starting", 0), ("restarting", 0), ("failed", 1))


def test_emulated_nodes_are_counted_so_the_page_can_say_so():
    nodes = (NodeFacts(name="n1", emulated=True, heartbeat_age_s=1.0), NodeFacts(name="n2", emulated=False, heartbeat_age_s=1.0))
    o = summarize(inputs(nodes=nodes))
    assert (o.nodes, o.emulated_nodes) == (2, 1)


def test_snapshot_facts_read_each_partitions_activity_and_the_age():
    snap = {"node": "n1", "ts": 100.0, "gpus": [
        {"index": 0, "partitions": [{"index": 0, "gfx_activity": 12.5}, {"index": 1, "gfx_activity": None}]},
        {"index": -3, "partitions": [{"index": 0, "gfx_activity": 99.0}]},  # not in the inventory yet
    ]}
    facts = snapshot_facts("n1", snap, now=104.0)
    assert facts == SnapshotFacts(node="n1", age_s=4.0, activity=((0, 0, 12.5), (0, 1, None)))


@pytest.mark.parametrize("snap", [{}, {"ts": "soon"}, {"ts": 1.0, "gpus": "x"}, {"ts": 1.0, "gpus": [{"index": 0, "partitions": [{}]}]}])
def test_malformed_snapshots_read_as_old_or_empty_rather_than_failing(snap):
    facts = snapshot_facts("n1", snap, now=10.0)
    assert facts.node == "n1" and all(a is None for _, _, a in facts.activity)


# --- the page ----------------------------------------------------------------------------------

def _fleet(nodes: int, prefix: str, *, alive: bool = True) -> list:  # type: ignore[type-arg]
    """Simulated nodes (each 2 MI300X GPUs: one CPX, one SPX), their agents alive or not."""
    from django.utils import timezone

    from partitions.backends.simulated import SimulatedFleet
    from partitions.models import Node
    from partitions.services import sync_inventory

    fleet = SimulatedFleet(nodes=nodes, gpu_count=2, prefix=prefix)
    created = []
    for name in fleet.nodes:
        backend = fleet.backend(name)
        backend.set_compute_mode([0], "CPX")
        node = Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True,
                                   agent_heartbeat_at=timezone.now() if alive else None)
        sync_inventory(node=node, inventory=backend.inventory())
        created.append(node)
    return created


def _occupy(node, profile) -> list:  # type: ignore[no-untyped-def, type-arg]
    """A running deployment on the node's first CPX partition and its SPX GPU, a replica copy
    per state, a reconfiguration in flight and a failed one."""
    from django.utils import timezone

    from partitions.models import Partition, Reconfiguration
    from serving.models import Deployment, DeploymentSlot, Replica

    cpx = Partition.objects.filter(gpu__node=node, gpu__index=0).order_by("index").first()
    spx = Partition.objects.get(gpu__node=node, gpu__index=1)
    deployment = Deployment.objects.create(name=f"{node.name}-llm", profile=profile, replicas=2, state=Deployment.State.RUNNING)
    for replica, p in enumerate((cpx, spx)):
        DeploymentSlot.objects.create(deployment=deployment, replica=replica, partition=p)
    for i, state in enumerate(("ready", "starting", "failed")):
        Replica.objects.create(deployment=deployment, replica=i, node=node, key=f"{deployment.pk}-{i}-{node.pk}",
                               runtime="emulated", state=state)
    Reconfiguration.objects.create(kind="compute", node=node, gpu=spx.gpu, gpu_index=1, target_compute_mode="DPX")
    Reconfiguration.objects.create(kind="compute", node=node, gpu_index=0, target_compute_mode="DPX",
                                   state="failed", finished_at=timezone.now() - timedelta(hours=1))
    Reconfiguration.objects.create(kind="compute", node=node, gpu_index=0, target_compute_mode="SPX",
                                   state="failed", finished_at=timezone.now() - timedelta(days=3))
    return [cpx, spx]


def _snapshot(client, node, activity: dict[tuple[int, int], float | None], *, age_s: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    from partitions.models import Partition
    from partitions.telemetry_store import snapshot_key

    gpus: dict[int, list] = {}  # type: ignore[type-arg]
    for g, p in Partition.objects.filter(gpu__node=node).values_list("gpu__index", "index"):
        gpus.setdefault(g, []).append({"index": p, "logical_index": 0, "gfx_activity": activity.get((g, p), 40.0), "derived": False})
    snap = {"node": node.name, "ts": time.time() - age_s, "emulated": True, "gpus": [{"index": g, "partitions": ps} for g, ps in gpus.items()]}
    client.set(snapshot_key(node.name), json.dumps(snap), ex=30)


@pytest.fixture
def profile(catalog):  # type: ignore[no-untyped-def]
    from models.models import ModelProfile

    return ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                    gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)


def tile(html: str, name: str) -> str:
    """The text of one tile (``data-tile="<name>"``), tags stripped."""
    match = re.search(rf'<section class="tile[^"]*" data-tile="{name}">(.*?)</section>', html, re.S)
    assert match, f"no {name} tile"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def tile_link(html: str, name: str) -> str:
    match = re.search(rf'<section class="tile[^"]*" data-tile="{name}">.*?<a class="act" href="([^"]+)"', html, re.S)
    assert match, f"no link in the {name} tile"
    return match.group(1)


@pytest.mark.django_db
@pytest.mark.redis
def test_the_overview_shows_each_number_with_its_explanation_and_where_to_act(client, viewer, profile, redis_url):
    import redis

    node = _fleet(1, "ov-")[0]
    cpx, spx = _occupy(node, profile)
    r = redis.Redis.from_url(redis_url)
    _snapshot(r, node, {(0, cpx.index): 1.0, (1, 0): 80.0})
    client.force_login(viewer)
    html = client.get("/overview/").content.decode()

    # 9 partitions (8 CPX + 1 SPX), 2 held: 24 + 192 GiB... reserved: the profile's need on each
    need = profile.replica_memory_gb
    assert tile(html, "allocation").startswith("Allocation 22 %")  # 2 of 9 partitions
    assert "2 of 9 partitions hold a replica" in tile(html, "allocation")
    assert f"{2 * need:.0f} of 384 GiB reserved" in tile(html, "allocation")
    assert "1 of 2 allocated partitions below 5 %" in tile(html, "idle")
    assert f"{node.name}/gpu0/p0" in tile(html, "idle")
    assert tile(html, "stranded").startswith("Stranded memory 0 GiB")
    assert tile(html, "operations").startswith("Operations in flight 1")
    assert "1 failed in the last 24 h" in tile(html, "operations")
    assert tile(html, "gpus").startswith("Unhealthy GPUs 0")
    assert tile(html, "agents").startswith("Agents down 0")
    assert tile(html, "telemetry").startswith("Stale telemetry 0")
    assert "ready 1 starting 1 restarting 0 failed 1" in tile(html, "replicas")
    assert "emulated" in html.split('class="tiles"')[0]  # the page says the fleet is emulated
    links = {name: tile_link(html, name) for name in ("allocation", "idle", "stranded", "operations", "gpus", "agents",
                                                      "telemetry", "replicas")}
    assert links == {"allocation": "/deployments/", "idle": "/dashboard/", "stranded": "/fleet/", "operations": "/operations/",
                     "gpus": "/fleet/", "agents": "/fleet/", "telemetry": "/dashboard/", "replicas": "/deployments/"}


@pytest.mark.django_db
def test_without_redis_the_overview_says_telemetry_unavailable_instead_of_zero(client, viewer, profile, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    node = _fleet(1, "nr-")[0]
    _occupy(node, profile)
    client.force_login(viewer)
    html = client.get("/overview/").content.decode()
    assert "telemetry unavailable" in tile(html, "idle").lower()
    assert "telemetry unavailable" in tile(html, "telemetry").lower()
    assert not tile(html, "idle").startswith("Allocated but idle 0")
    assert not tile(html, "telemetry").startswith("Stale telemetry 0")
    assert "2 of 9 partitions" in tile(html, "allocation")  # the database's numbers still show


@pytest.mark.django_db
def test_free_partitions_too_small_for_any_profile_show_as_stranded(client, viewer, catalog):
    from models.models import ModelProfile
    from partitions.models import Partition

    node = _fleet(1, "st-")[0]
    smallest = min(ModelProfile.objects.filter(gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1,
                                               computed_at__isnull=False).values_list("memory_required_gb", flat=True))
    small = Partition.objects.filter(gpu__node=node, gpu__index=0).order_by("index").first()
    Partition.objects.filter(pk=small.pk).update(memory_gb=round(smallest / 2, 1))
    client.force_login(viewer)
    html = client.get("/overview/").content.decode()
    assert tile(html, "stranded").startswith(f"Stranded memory {round(smallest / 2, 1):g} GiB")
    assert "1 free partition" in tile(html, "stranded")


@pytest.mark.django_db
def test_agents_down_and_unhealthy_gpus_are_named(client, viewer, catalog):
    from partitions.models import GPU

    _fleet(1, "up-")
    down = _fleet(1, "dn-", alive=False)[0]
    GPU.objects.filter(node=down, index=1).update(health="unhealthy")
    client.force_login(viewer)
    html = client.get("/overview/").content.decode()
    assert tile(html, "agents").startswith("Agents down 1")
    assert "dn-0000" in tile(html, "agents") and "up-0000" not in tile(html, "agents")
    assert tile(html, "gpus").startswith("Unhealthy GPUs 1") and "dn-0000/gpu1" in tile(html, "gpus")


# The request's own reads (session, user, the groups twice: the middleware's role check and the
# navigation's role, the permissions: 2), the banner's node list (1), the overview's 7 reads (the free partitions counted by model and size in one of them).
OVERVIEW_QUERIES = 6 + 1 + 7


@pytest.mark.django_db
@pytest.mark.redis
def test_the_overview_takes_a_fixed_number_of_queries_whatever_the_fleet_size(client, viewer, profile, redis_url,
                                                                            django_assert_max_num_queries):
    import redis

    r = redis.Redis.from_url(redis_url)
    client.force_login(viewer)
    counts = []
    for size, prefix in ((1, "one-"), (5, "more-")):  # a fleet of 1 node, then of 6
        for node in _fleet(size, prefix):
            _occupy(node, profile)
            _snapshot(r, node, {})
        client.get("/overview/")  # warm the session
        with django_assert_max_num_queries(OVERVIEW_QUERIES) as ctx:
            response = client.get("/overview/")
        assert response.status_code == 200
        counts.append(len(ctx.captured_queries))
    assert "6 nodes" in response.content.decode()
    assert counts[0] == counts[1], counts


@pytest.mark.django_db
def test_overview_is_the_first_navigation_item_and_marked_current(client, viewer):
    client.force_login(viewer)
    html = client.get("/overview/").content.decode()
    nav = html.split('<nav class="mainnav"', 1)[1].split(">", 1)[1].split("</nav>", 1)[0]
    first = re.search(r"<a [^>]*>[^<]*</a>", nav).group(0)  # type: ignore[union-attr]
    assert 'href="/overview/"' in first and 'aria-current="page"' in first and ">Overview<" in first

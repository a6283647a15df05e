"""``manage.py simulate_fleet``: simulated nodes in bulk, their telemetry snapshots, and
deployments that placement counts as real occupancy; idempotent per prefix; bad input changes
nothing."""

from __future__ import annotations

import json

import pytest
import redis
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from models.models import ModelProfile
from partitions.backends.types import Metrics
from partitions.models import GPU, Node, Partition
from partitions.telemetry import PartitionRef, shape
from partitions.telemetry_store import read_snapshots_sync, snapshot_key
from planning.services import DemandSpec, fleet_state
from serving.models import Deployment, DeploymentSlot, Replica
from serving.services import PlacementConflict, create_deployment
from serving.simulation import SIMULATED_MESSAGE, simulate_fleet

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

QWEN7_FP16 = ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "fp16")  # ~18 GiB: fits a CPX partition


def counts(prefix: str = "sim-") -> tuple[int, int, int, int]:
    return (Node.objects.filter(name__startswith=prefix).count(), GPU.objects.filter(node__name__startswith=prefix).count(),
            Partition.objects.filter(gpu__node__name__startswith=prefix).count(), Deployment.objects.count())


def keys(client: redis.Redis, prefix: str = "sim-") -> set[str]:
    return {k.decode().rsplit(":", 1)[1] for k in client.scan_iter(match=snapshot_key(f"{prefix}*"))}


def structure(value):  # type: ignore[no-untyped-def]
    """The keys of a JSON value, recursively (lists: their first item's)."""
    if isinstance(value, dict):
        return {k: structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [structure(value[0])] if value else []
    return None


def test_it_registers_simulated_cpx_nodes_with_a_snapshot_each(redis_url, catalog):
    call_command("simulate_fleet", "--nodes", "3")
    nodes = list(Node.objects.filter(name__startswith="sim-"))
    assert [n.name for n in nodes] == ["sim-0000", "sim-0001", "sim-0002"]
    assert {(n.backend, n.emulated, n.serving_runtime, n.memory_mode) for n in nodes} == {("simulated", True, "emulated", "NPS1")}
    gpus = GPU.objects.filter(node__in=nodes)
    assert gpus.count() == 24 and set(gpus.values_list("gpu_model", "compute_mode")) == {("MI300X", "CPX")}
    parts = Partition.objects.filter(gpu__node=nodes[1])
    assert parts.count() == 64
    assert sorted(parts.values_list("logical_index", flat=True)) == list(range(64))
    assert set(parts.values_list("memory_gb", "xcds", "compute_units")) == {(24.0, 1, 38)}
    snapshots = read_snapshots_sync([n.name for n in nodes])
    assert set(snapshots) == {"sim-0000", "sim-0001", "sim-0002"}
    assert all(s["emulated"] for s in snapshots.values())
    assert redis.Redis.from_url(redis_url).ttl(snapshot_key("sim-0000")) > 30  # no agent renews it


def test_its_snapshots_have_the_agents_shape(redis_url, catalog):
    simulate_fleet(nodes=1, gpus_per_node=2)
    ours = read_snapshots_sync(["sim-0000"])["sim-0000"]
    layout = [PartitionRef(gpu_index=g, partition_index=p, logical_index=g * 8 + p) for g in range(2) for p in range(8)]
    metrics = [Metrics(logical_index=i, gfx_activity=1.0, vram_used_mb=1, vram_total_mb=196592, power_w=1.0,
                       temperature_hotspot_c=1.0, temperature_mem_c=1.0, ecc_uncorrectable=0,
                       gfx_busy_inst={p: (1.0,) for p in range(8)} if i % 8 == 0 else {}) for i in range(16)]
    agents = shape("sim-0000", 1.0, metrics, layout, emulated=True, interval_s=1.0)
    assert structure(ours) == structure(agents)
    assert len(ours["gpus"]) == 2 and len(ours["gpus"][0]["partitions"]) == 8


def test_a_rerun_replaces_the_prefixs_nodes_and_leaves_other_prefixes(redis_url, catalog):
    client = redis.Redis.from_url(redis_url)
    simulate_fleet(nodes=3, occupancy=0.25)
    simulate_fleet(nodes=2, prefix="other-")
    simulate_fleet(nodes=2, occupancy=0.25)
    assert counts() == (2, 16, 128, 32 + 0)
    assert keys(client) == {"sim-0000", "sim-0001"}
    assert counts("other-")[:3] == (2, 16, 128) and keys(client, "other-") == {"other-0000", "other-0001"}
    call_command("simulate_fleet", "--remove")
    assert counts() == (0, 0, 0, 0) and keys(client) == set()
    assert counts("other-")[:3] == (2, 16, 128)


def test_its_deployments_are_occupancy_that_placement_respects(redis_url, catalog):
    fleet = simulate_fleet(nodes=1, gpus_per_node=1, occupancy=0.5)
    assert (fleet.deployments, fleet.occupied_partitions) == (4, 4)
    deployment = Deployment.objects.get(name="sim-d00000")
    assert (deployment.state, deployment.runtime, deployment.state_message) == ("running", "emulated", SIMULATED_MESSAGE)
    assert deployment.sizing_snapshot["simulated"] is True
    assert Replica.objects.filter(state="ready", endpoint="").count() == 4
    taken = set(DeploymentSlot.objects.values_list("partition__index", flat=True))
    assert len(taken) == 4
    assert {o.partition_index for o in fleet_state().occupants} == taken
    profile = ModelProfile.objects.get(model__hf_id=QWEN7_FP16[0], precision__code=QWEN7_FP16[1], gpu_model="MI300X",
                                       context_tokens=8192, concurrent_sequences=1)
    with pytest.raises(PlacementConflict):
        create_deployment(spec=DemandSpec(name="five", profile=profile, replicas=5))
    placed = create_deployment(spec=DemandSpec(name="four", profile=profile, replicas=4))
    assert set(placed.slots.values_list("partition__index", flat=True)) == set(range(8)) - taken


def test_telemetry_shows_load_where_the_deployments_are(redis_url, catalog):
    simulate_fleet(nodes=1, gpus_per_node=1, occupancy=0.25)
    taken = set(DeploymentSlot.objects.values_list("partition__index", flat=True))
    parts = read_snapshots_sync(["sim-0000"])["sim-0000"]["gpus"][0]["partitions"]
    assert {p["index"] for p in parts if p["gfx_activity"] >= 50} == taken


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "0"], "nodes must be a whole number from 1 to 5000"),
    (["--nodes", "5001"], "from 1 to 5000"),
    (["--nodes", "2", "--gpus", "17"], "GPUs per node"),
    (["--nodes", "2", "--prefix", "Sim_"], "prefix 'Sim_' is not usable"),
    (["--nodes", "2", "--prefix", "rack7"], "not ending with a digit"),
    (["--nodes", "2", "--mode", "SPX", "--memory-mode", "NPS4"], "MI300X cannot run SPX+NPS4"),
    (["--nodes", "2", "--occupancy", "1.5"], "occupancy must be a share"),
    (["--nodes", "2", "--deployments", "--replicas", "0"], "replicas per deployment"),
    (["--nodes", "2", "--mode", "SPX", "--deployments", "--gpu-model", "MI300X", "--replicas", "65"], "replicas per deployment"),
    ([], "--nodes is required"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(redis_url, catalog, args, message):
    simulate_fleet(nodes=1)
    before = counts()
    with pytest.raises(CommandError, match=message.replace("+", r"\+")):
        call_command("simulate_fleet", *args)
    assert counts() == before


def test_it_never_replaces_a_node_that_is_not_simulated(redis_url, catalog):
    Node.objects.create(name="sim-0001", backend="emulator", emulated=True)
    with pytest.raises(CommandError, match="sim-0001 match the prefix 'sim-' but are not simulated"):
        call_command("simulate_fleet", "--nodes", "3")
    assert list(Node.objects.values_list("name", "backend")) == [("sim-0001", "emulator")]


def test_a_deployment_of_someone_else_on_its_nodes_blocks_a_rerun(redis_url, catalog):
    simulate_fleet(nodes=1, gpus_per_node=1)
    profile = ModelProfile.objects.get(model__hf_id=QWEN7_FP16[0], precision__code=QWEN7_FP16[1], gpu_model="MI300X",
                                       context_tokens=8192, concurrent_sequences=1)
    create_deployment(spec=DemandSpec(name="mine", profile=profile, replicas=1))
    before = counts()
    with pytest.raises(CommandError, match="deployments mine hold partitions of the 'sim-' nodes; stop them first"):
        call_command("simulate_fleet", "--nodes", "2", "--deployments")
    assert counts() == before and DeploymentSlot.objects.filter(deployment__name="mine").count() == 1


def test_redis_down_is_an_error_and_rolls_the_rows_back(settings, catalog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(CommandError, match="cannot write the telemetry snapshots to Redis"):
        call_command("simulate_fleet", "--nodes", "2")
    assert counts() == (0, 0, 0, 0)
    call_command("simulate_fleet", "--nodes", "2", "--no-telemetry")
    assert counts()[:3] == (2, 16, 128)


def test_it_builds_in_bulk_not_row_by_row(redis_url, catalog):
    with CaptureQueriesContext(connection) as ctx:
        fleet = simulate_fleet(nodes=20, occupancy=0.25)
    rows = 20 + fleet.gpus + fleet.partitions + 3 * fleet.occupied_partitions
    assert rows == 20 + 160 + 1280 + 3 * 320
    # SQLite takes at most 999 parameters per statement: ~100 partition rows per INSERT.
    assert len(ctx.captured_queries) < rows / 40


def test_the_command_reports_what_it_built(redis_url, catalog, capsys):
    call_command("simulate_fleet", "--nodes", "2", "--mode", "qpx", "--deployments")
    out = capsys.readouterr().out
    assert "simulated (emulated, no agents): 2 nodes sim-0000..sim-0001, 16 MI300X GPUs in QPX+NPS1, 64 partitions" in out
    assert "16 deployments on 16 partitions; 2 telemetry snapshots" in out
    assert json.loads(redis.Redis.from_url(redis_url).get(snapshot_key("sim-0001")))["gpus"][0]["partitions"][3]["vram_total_mb"] == 48 * 1024


def test_each_snapshot_has_its_summary_as_an_agent_stores_it_and_both_go_with_the_fleet(redis_url, catalog):
    from partitions.aggregate import node_summary
    from partitions.simulation import delete_simulated_telemetry
    from partitions.telemetry_store import read_summaries_sync, summary_key

    client = redis.Redis.from_url(redis_url)
    simulate_fleet(nodes=3, occupancy=0.25)
    simulate_fleet(nodes=2, prefix="other-")
    simulate_fleet(nodes=2, occupancy=0.25)  # a rerun: sim-0002's summary goes with its snapshot
    names = ["sim-0000", "sim-0001", "sim-0002"]
    snapshots, summaries = read_snapshots_sync(names), read_summaries_sync(names)
    assert set(summaries) == set(snapshots) == {"sim-0000", "sim-0001"}
    assert all(summaries[n] == node_summary(snapshots[n]) for n in summaries)
    assert 0 < client.ttl(summary_key("sim-0000")) <= 3600
    assert delete_simulated_telemetry("sim-", client=client) == 2  # snapshots, as before
    assert read_summaries_sync(names) == {} and set(read_summaries_sync(["other-0000", "other-0001"])) == {
        "other-0000", "other-0001"}

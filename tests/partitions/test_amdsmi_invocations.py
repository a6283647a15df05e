"""How often the console runs amd-smi: per compute-mode change (through the real runner and
backend against the emulator, counted by the emulator's own call log) and per telemetry sample
(none with the amdsmi library, here the emulator's library face)."""

from __future__ import annotations

import pytest

from partitions import operations as ops
from partitions.backends.amdsmi import forget_node_facts
from partitions.backends.amdsmi_library import emulator_library_path
from partitions.models import GPU
from partitions.reconfigure import run_reconfiguration
from partitions.services import backend_for, sync_node
from partitions.services.reconfiguration import request_reconfiguration

pytestmark = pytest.mark.django_db

READ = ["static", "-a", "-v", "-p", "--json"]
FULL_READ = [READ, ["list", "-e", "--json"], ["partition", "--json"]]


def change_compute_mode(emulated, gpu_index: int, mode: str) -> list[list[str]]:
    """Run one compute-mode change; the amd-smi invocations it made, in order."""
    before = len(emulated.calls())
    op = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=gpu_index), compute_mode=mode)
    assert run_reconfiguration(op.pk, sleep=lambda s: None) == ops.SUCCEEDED
    return [c["args"] for c in emulated.calls()[before:]]


def test_a_compute_mode_change_runs_amd_smi_six_times(emulated, fast_ops):
    # was 18: the runner and the backend each read the node before and after the change, and
    # every read ran list, static, partition and metric
    calls = change_compute_mode(emulated, 1, "CPX")
    assert calls == [READ, ["set", "-C", "CPX", "-g", "1", "--json"], *FULL_READ, READ]
    assert emulated.state.compute_mode(1) == "CPX"
    assert GPU.objects.get(node=emulated.node, index=1).partitions.count() == 8


def test_a_cold_process_reads_the_node_in_full_once_before_the_change(emulated, fast_ops):
    forget_node_facts()  # as in a worker process that never read this node
    calls = change_compute_mode(emulated, 0, "DPX")
    assert calls == [["version"], *FULL_READ, ["set", "-C", "DPX", "-g", "0", "--json"], *FULL_READ, READ]


def test_changes_in_a_row_keep_to_the_budget(emulated, fast_ops):
    for gpu_index, mode in ((0, "CPX"), (1, "QPX"), (0, "SPX")):
        assert len(change_compute_mode(emulated, gpu_index, mode)) <= 6
    assert [emulated.state.compute_mode(i) for i in range(2)] == ["SPX", "QPX"]


def test_a_layout_changed_behind_the_console_is_read_in_full(emulated):
    emulated.state.set_modes(compute="DPX")  # by hand on the node: the cached layout is stale
    before = len(emulated.calls())
    inventory = backend_for(emulated.node).inventory()
    assert [c["args"] for c in emulated.calls()[before:]] == FULL_READ
    assert [(g.compute_mode, len(g.partitions)) for g in inventory.gpus] == [("DPX", 2), ("DPX", 2)]
    assert [p.bdf for p in inventory.gpus[0].partitions] == [inventory.gpus[0].bdf, inventory.gpus[0].bdf[:-1] + "1"]


def test_cached_layout_facts_expire(emulated):
    backend = backend_for(emulated.node)
    backend.facts_max_age_s = 0
    before = len(emulated.calls())
    backend.inventory()
    assert [c["args"] for c in emulated.calls()[before:]] == FULL_READ


def test_the_light_read_gives_the_same_inventory_as_a_full_one(emulated):
    emulated.state.set_modes(compute="CPX")
    sync_node(node=emulated.node)  # full read: caches the CPX layout
    light = backend_for(emulated.node).inventory()
    forget_node_facts()
    full = backend_for(emulated.node).inventory()
    assert light == full


@pytest.mark.parametrize("rocm", ["6.3.2", "7.1"])
def test_partition_memory_from_static_is_what_metric_reports(tmp_path, db, rocm):
    # static -v's VRAM size and metric's total_vram are one library call (amdsmi_get_gpu_vram_info
    # reads rsmi_dev_memory_total_get): the inventory no longer runs metric for it.
    from tests.emulated_nodes import make_emulated_node

    emulated = make_emulated_node(tmp_path, rocm=rocm)
    emulated.state.set_modes(compute="CPX")
    backend = backend_for(emulated.node)
    inventory = backend.inventory()
    reported = {p.logical_index: p.memory_mb for g in inventory.gpus for p in g.partitions}
    assert reported == {m.logical_index: m.vram_total_mb for m in backend.metrics()}


# --- telemetry ---------------------------------------------------------------------------------

@pytest.fixture
def with_library(settings):
    settings.AMD_SMI_EMULATOR_LIBRARY = emulator_library_path()
    return settings


def test_telemetry_samples_run_no_process_with_the_library(emulated, with_library):
    emulated.state.set_load(1, 0, 0.9, vram_used_mb=150_000)
    backend = backend_for(emulated.node)
    assert backend.telemetry_source() == "library (emulated)"
    before = len(emulated.calls())
    samples = [backend.metrics() for _ in range(3)]
    assert len(emulated.calls()) == before  # not one amd-smi process
    busy, idle = samples[-1][1], samples[-1][0]
    assert (busy.vram_used_mb, idle.vram_used_mb) == (150_000, 283)
    assert busy.gfx_activity > 50 and busy.power_w > idle.power_w


def test_the_library_and_the_cli_report_the_same_metrics(emulated, with_library):
    emulated.state.set_modes(compute="CPX")
    emulated.state.set_ecc(0, correctable=3, uncorrectable=1)
    emulated.state.set_load(0, 2, 0.5, vram_used_mb=12_000)
    backend = backend_for(emulated.node)
    library, cli = backend.metrics(), backend._cli_metrics()
    assert [m.logical_index for m in library] == [m.logical_index for m in cli] == list(range(16))

    def exact(m):  # what carries no time-based noise in the emulator
        return (m.vram_used_mb, m.vram_total_mb, m.ecc_correctable, m.ecc_uncorrectable, m.ecc_deferred,
                sorted(m.gfx_busy_inst), m.power_w is None, m.temperature_hotspot_c is None, m.gfx_activity is None)

    assert [exact(m) for m in library] == [exact(m) for m in cli]
    assert len(library[0].gfx_busy_inst) == 8 and library[1].power_w is None  # a secondary: N/A, as in the CLI


def test_the_library_enumerates_again_after_a_repartition(emulated, with_library):
    backend = backend_for(emulated.node)
    assert len(backend.metrics()) == 2
    emulated.state.set_modes(compute="DPX")  # elsewhere: the handles of the old layout are stale
    assert [m.logical_index for m in backend.metrics()] == [0, 1, 2, 3]
    backend.set_compute_mode([0], "CPX")  # through this backend: invalidated at once
    assert len(backend.metrics()) == 8 + 2


def test_without_the_library_telemetry_reads_the_cli(emulated, settings, tmp_path):
    settings.AMD_SMI_EMULATOR_LIBRARY = str(tmp_path)  # no amdsmi package there
    backend = backend_for(emulated.node)
    assert backend.telemetry_source() == "cli"
    before = len(emulated.calls())
    assert len(backend.metrics()) == 2
    assert [c["args"][0] for c in emulated.calls()[before:]] == ["metric"]


def test_emulated_nodes_use_no_library_unless_configured(emulated):
    assert backend_for(emulated.node).telemetry_source() == "cli"


@pytest.mark.redis
def test_the_agents_sampler_starts_no_process_per_sample(emulated, with_library, redis_url):
    import redis

    from partitions.agent import Agent
    from partitions.telemetry_store import read_snapshot

    emulated.state.set_load(1, 0, 0.9, vram_used_mb=150_000)
    agent = Agent("emu-a")
    before = len(emulated.calls())
    for _ in range(3):
        agent.sample()
    assert len(emulated.calls()) == before
    snapshot = read_snapshot(redis.Redis.from_url(redis_url), "emu-a")
    assert snapshot["emulated"] is True
    gpus = {g["index"]: g for g in snapshot["gpus"]}
    assert gpus[1]["partitions"][0]["vram_used_mb"] == 150_000 and gpus[1]["power_w"] > gpus[0]["power_w"]


@pytest.mark.parametrize("max_age_s, reads_first", [(120.0, False), (-1.0, True)])
def test_a_change_reuses_its_callers_recent_reading(emulated, max_age_s, reads_first):
    backend = backend_for(emulated.node)
    backend.reading_max_age_s = max_age_s
    backend.inventory()  # the caller's read of this phase
    before = len(emulated.calls())
    backend.set_compute_mode([0], "DPX")
    expected = [["set", "-C", "DPX", "-g", "0", "--json"], *FULL_READ]
    assert [c["args"] for c in emulated.calls()[before:]] == ([READ] if reads_first else []) + expected

"""Inventory sync (idempotent reconciliation) and import from captured amd-smi outputs."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from partitions.backends.types import GpuInfo, NodeInventory, PartitionInfo, ToolVersion
from partitions.models import GPU, Node, Partition
from partitions.services import sync_inventory

pytestmark = pytest.mark.django_db


def _gpu(index: int, compute: str = "SPX", memory: str = "NPS1", count: int = 1, base: int | None = None) -> GpuInfo:
    """A physical GPU whose partitions have logical indices base.. (default index * count)."""
    base = index * count if base is None else base
    return GpuInfo(
        index=index, bdf=f"0000:{0x0c + index:02x}:00.0", uuid=f"uuid-{index}",
        market_name="AMD Instinct MI300X", gpu_model="MI300X", gfx_target="gfx942",
        compute_mode=compute, memory_mode=memory, memory_caps=("NPS1", "NPS4"), profiles=(),
        compute_units=304, vram_mb=196592,
        partitions=tuple(
            PartitionInfo(partition_id=p, logical_index=base + p,
                          bdf=f"0000:{0x0c + index:02x}:00.{p}", uuid=f"uuid-{index}-{p}",
                          render_node=f"renderD{128 + base + p}", compute_units=304 // count,
                          memory_mb=196592 // count)
            for p in range(count)
        ),
    )


def _inventory(*gpus: GpuInfo) -> NodeInventory:
    return NodeInventory(version=ToolVersion(tool="26.1.0", library="26.1.0", rocm="7.1.0"), gpus=gpus)


@pytest.fixture
def node():  # type: ignore[no-untyped-def]
    return Node.objects.create(name="gpu-node-1", backend=Node.Backend.EMULATOR, emulated=True)


def test_first_sync_creates_gpus_and_partitions_with_geometry(node):
    result = sync_inventory(node=node, inventory=_inventory(_gpu(0), _gpu(1, "CPX", "NPS1", 8, base=1)))
    assert result.created == 2 + 1 + 8
    node.refresh_from_db()
    assert node.memory_mode == "NPS1" and node.rocm_version == "7.1.0" and node.last_synced_at
    cpx = GPU.objects.get(node=node, index=1)
    parts = list(cpx.partitions.order_by("index"))
    assert [p.logical_index for p in parts] == list(range(1, 9))
    # Nominal geometry: 24 GiB and 1 XCD per CPX partition, whatever amd-smi reported.
    assert {(p.memory_gb, p.xcds, p.compute_units) for p in parts} == {(24.0, 1, 38)}
    assert parts[3].render_node == "renderD132"


def test_second_sync_with_the_same_inventory_writes_no_row(node, django_assert_num_queries):
    inventory = _inventory(_gpu(0), _gpu(1, "CPX", "NPS1", 8))
    sync_inventory(node=node, inventory=inventory)
    before = list(Partition.objects.values_list()) + list(GPU.objects.values_list())
    result = sync_inventory(node=node, inventory=inventory)
    assert (result.created, result.updated, result.deleted) == (0, 0, 0)
    assert result.unchanged == 2 + 1 + 8
    assert list(Partition.objects.values_list()) + list(GPU.objects.values_list()) == before


def test_repartition_removes_vanished_partitions_and_leaves_other_gpus_alone(node):
    sync_inventory(node=node, inventory=_inventory(_gpu(0, "CPX", "NPS1", 8), _gpu(1)))
    untouched = Partition.objects.get(gpu__index=1)
    result = sync_inventory(node=node, inventory=_inventory(_gpu(0, "DPX", "NPS1", 2), _gpu(1)))
    assert result.deleted == 6
    gpu0 = GPU.objects.get(node=node, index=0)
    assert gpu0.compute_mode == "DPX"
    assert list(gpu0.partitions.values_list("index", "memory_gb")) == [(0, 96.0), (1, 96.0)]
    assert Partition.objects.get(gpu__index=1).pk == untouched.pk


def test_a_gpu_that_disappears_is_removed(node):
    sync_inventory(node=node, inventory=_inventory(_gpu(0), _gpu(1)))
    sync_inventory(node=node, inventory=_inventory(_gpu(0)))
    assert list(GPU.objects.filter(node=node).values_list("index", flat=True)) == [0]


def test_health_set_by_operators_survives_a_sync(node):
    sync_inventory(node=node, inventory=_inventory(_gpu(0)))
    GPU.objects.filter(node=node, index=0).update(health="unhealthy", schedulable=False, health_reason="ECC storm")
    sync_inventory(node=node, inventory=_inventory(_gpu(0, "CPX", "NPS1", 8)))
    gpu = GPU.objects.get(node=node, index=0)
    assert (gpu.health, gpu.schedulable) == ("unhealthy", False)


# --- import from captured outputs ------------------------------------------------------------

def _fixture(fixtures_dir: Path, name: str) -> str:
    return str(fixtures_dir / "amd-smi" / name)


def test_import_command_dry_run_prints_inventory_and_changes_nothing(fixtures_dir):
    out = StringIO()
    call_command(
        "import_amdsmi", "--node", "bundle-1", "--dry-run",
        _fixture(fixtures_dir, "list.MI300X.SPX.8gpu.rocm7x.json"),
        _fixture(fixtures_dir, "partition.MI300X.SPX-NPS1.8gpu.rocm7x.json"),
        stdout=out,
    )
    body = json.loads(out.getvalue())
    assert body["node"] == "bundle-1" and body["dry_run"] is True
    assert len(body["gpus"]) == 8
    gpu0 = body["gpus"][0]
    assert (gpu0["compute_mode"], gpu0["memory_mode"]) == ("SPX", "NPS1")
    assert [p["logical_index"] for p in gpu0["partitions"]] == [0]
    assert gpu0["market_name"] is None  # no static output given: unknown, not invented
    assert not Node.objects.filter(name="bundle-1").exists()


def test_import_command_stores_a_cpx_node(fixtures_dir):
    out = StringIO()
    call_command(
        "import_amdsmi", "--node", "bundle-2",
        _fixture(fixtures_dir, "partition.MI300X.CPX-NPS4.gpu0-7.rocm7x.json"),
        _fixture(fixtures_dir, "list-e.MI300X.CPX.gpu0-7.rocm7x.json"),
        stdout=out,
    )
    body = json.loads(out.getvalue())
    node = Node.objects.get(name="bundle-2")
    assert node.backend == "imported" and node.memory_mode == "NPS4"
    gpu = GPU.objects.get(node=node)
    assert gpu.compute_mode == "CPX"
    assert list(gpu.partitions.order_by("index").values_list("render_node", flat=True)) == [
        f"renderD{128 + i}" for i in range(8)
    ]
    assert body["changes"]["created"] == 9


def test_import_of_garbage_names_the_file_and_changes_nothing(fixtures_dir, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"gpu": 0, "bdf": "0000:0c:00.0", "uuid": ')
    with pytest.raises(CommandError) as excinfo:
        call_command("import_amdsmi", "--node", "bundle-3", _fixture(fixtures_dir, "list.MI300X.SPX.8gpu.rocm7x.json"), str(bad))
    assert "broken.json" in str(excinfo.value) or "list" in str(excinfo.value)
    assert not Node.objects.filter(name="bundle-3").exists()


def test_import_refuses_two_outputs_of_the_same_command(fixtures_dir):
    path = _fixture(fixtures_dir, "list.MI300X.SPX.8gpu.rocm7x.json")
    with pytest.raises(CommandError, match="both outputs of amd-smi list"):
        call_command("import_amdsmi", "--node", "bundle-4", path, path)


def test_import_refuses_a_bad_node_name(fixtures_dir):
    with pytest.raises(CommandError, match="Node names"):
        call_command("import_amdsmi", "--node", "Bad Name!", _fixture(fixtures_dir, "list.MI300X.SPX.8gpu.rocm7x.json"))


def test_import_keeps_the_old_inventory_when_the_new_capture_is_bad(fixtures_dir, tmp_path):
    call_command("import_amdsmi", "--node", "bundle-5", _fixture(fixtures_dir, "list.MI300X.SPX.8gpu.rocm7x.json"), stdout=StringIO())
    before = list(Partition.objects.filter(gpu__node__name="bundle-5").values_list())
    bad = tmp_path / "p.json"
    bad.write_text('{"current_partition": [{"gpu_id": 0, "memory": "NPS1"')
    with pytest.raises(CommandError):
        call_command("import_amdsmi", "--node", "bundle-5", str(bad))
    assert list(Partition.objects.filter(gpu__node__name="bundle-5").values_list()) == before


def test_import_api_for_operators(api_client_for, operator, viewer, fixtures_dir):
    outputs = [
        Path(_fixture(fixtures_dir, "list.MI300X.CPX.gpu0-7.rocm7x.json")).read_text(),
        Path(_fixture(fixtures_dir, "static-partition.MI300X.CPX-NPS4.gpu0-7.rocm7x.json")).read_text(),
    ]
    denied = api_client_for(viewer).post("/api/v1/nodes/edge-1/import-amdsmi/", {"outputs": outputs}, format="json")
    assert denied.status_code == 403
    dry = api_client_for(operator).post("/api/v1/nodes/edge-1/import-amdsmi/", {"outputs": outputs, "dry_run": True}, format="json")
    assert dry.status_code == 200
    assert not Node.objects.filter(name="edge-1").exists()
    response = api_client_for(operator).post("/api/v1/nodes/edge-1/import-amdsmi/", {"outputs": outputs}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["gpus"][0]["compute_mode"] == "CPX"
    assert [p["partition_id"] for p in body["gpus"][0]["partitions"]] == list(range(8))
    detail = api_client_for(viewer).get("/api/v1/nodes/edge-1/").json()
    assert detail["emulated"] is False and detail["gpu_count"] == 1


def test_import_api_rejects_garbage_with_a_clear_error(api_client_for, operator):
    response = api_client_for(operator).post(
        "/api/v1/nodes/edge-2/import-amdsmi/", {"outputs": ["hello world"]}, format="json"
    )
    assert response.status_code == 400
    assert "not recognised" in response.json()["message"]
    assert not Node.objects.filter(name="edge-2").exists()


def test_inventory_lists_use_a_fixed_number_of_queries(api_client_for, viewer, node, django_assert_max_num_queries):
    sync_inventory(node=node, inventory=_inventory(*[_gpu(i, "CPX", "NPS1", 8) for i in range(8)]))
    client = api_client_for(viewer)
    for path in ("/api/v1/nodes/", "/api/v1/gpus/", "/api/v1/partitions/"):
        with django_assert_max_num_queries(6):
            small = client.get(path, {"limit": 2})
        with django_assert_max_num_queries(6):
            large = client.get(path, {"limit": 64})
        assert small.status_code == large.status_code == 200
    assert client.get("/api/v1/partitions/", {"node": "gpu-node-1", "gpu_index": 3}).json()["count"] == 8
    assert client.get("/api/v1/nodes/gpu-node-1/").json()["emulated"] is True


# --- live sync through the amd-smi backend and the emulator subprocess ------------------------

@pytest.fixture
def emulated_node(tmp_path):  # type: ignore[no-untyped-def]
    from amdsmi_emulator.state import EmulatorState

    state_file = tmp_path / "node.json"
    EmulatorState.create(state_file, gpu_model="MI300X", count=2, rocm="7.1")
    node = Node.objects.create(name="emu-a", backend=Node.Backend.EMULATOR, emulated=True,
                               backend_options={"state_file": str(state_file)})
    return node, EmulatorState.load(state_file)


def test_sync_node_reads_the_emulator_through_the_amdsmi_backend(emulated_node):
    from partitions.services import sync_node

    node, state = emulated_node
    result = sync_node(node=node)
    assert result.created == 2 + 2
    node.refresh_from_db()
    assert (node.memory_mode, node.rocm_version, node.amd_smi_version) == ("NPS1", "7.1.0", "26.1.0+5df6c765")
    gpu = GPU.objects.get(node=node, index=1)
    assert (gpu.gpu_model, gpu.compute_mode, gpu.market_name) == ("MI300X", "SPX", "AMD Instinct MI300X")
    state.set_modes(compute="CPX")
    result = sync_node(node=node)
    assert Partition.objects.filter(gpu__node=node).count() == 16
    assert result.deleted == 0 and result.created == 14


@pytest.mark.parametrize("kind", ["garbage", "fail"])
def test_a_failing_tool_leaves_the_inventory_unchanged_and_visible(emulated_node, kind):
    from partitions.backends.errors import BackendError
    from partitions.services import sync_node

    node, state = emulated_node
    sync_node(node=node)
    before = list(Partition.objects.filter(gpu__node=node).values_list())
    state.set_modes(compute="CPX")  # the hardware changed, but reading it fails
    state.add_fault({"match": "list", "kind": kind, "exit": 1, "message": "amdgpu: injected failure"})
    with pytest.raises(BackendError):
        sync_node(node=node)
    assert list(Partition.objects.filter(gpu__node=node).values_list()) == before
    node.refresh_from_db()
    assert node.sync_error


def test_demo_fleet_creates_two_emulated_mi300x_nodes(tmp_path):
    out = StringIO()
    call_command("demo_fleet", "--state-dir", str(tmp_path), stdout=out)
    nodes = Node.objects.filter(name__startswith="emu-node-")
    assert [n.name for n in nodes] == ["emu-node-1", "emu-node-2"]
    assert all(n.emulated and n.backend == "emulator" for n in nodes)
    assert GPU.objects.filter(node__in=nodes, gpu_model="MI300X").count() == 16
    call_command("demo_fleet", "--state-dir", str(tmp_path), stdout=out)
    assert "0 created, 0 updated, 0 deleted, 16 unchanged" in out.getvalue()


def test_the_fast_partition_list_matches_the_serializer(api_client_for, viewer, node):
    from partitions.api.serializers import PartitionSerializer

    sync_inventory(node=node, inventory=_inventory(_gpu(0, "CPX", "NPS1", 8), _gpu(1, base=8)))
    listed = api_client_for(viewer).get("/api/v1/partitions/", {"limit": 100}).json()["results"]
    expected = PartitionSerializer(Partition.objects.select_related("gpu__node").order_by("gpu__index", "index"), many=True).data
    assert listed == [dict(row) for row in expected]
    detail = api_client_for(viewer).get(f"/api/v1/partitions/{listed[3]['id']}/").json()
    assert detail == listed[3]


def test_sync_node_create_detects_amd_smi(settings, tmp_path):
    """A missing tool is a clear error; an answering one (here the emulator, as AMD_SMI_BIN)
    registers the node with the amd-smi backend and reads its GPUs."""
    import stat
    import sys

    settings.AMD_SMI_BIN = str(tmp_path / "no-such-amd-smi")
    with pytest.raises(CommandError, match="amd-smi not found or not answering"):
        call_command("sync_node", "gpu-host-1", "--create")
    assert not Node.objects.filter(name="gpu-host-1").exists()

    wrapper = tmp_path / "amd-smi"
    wrapper.write_text(f"#!/bin/sh\nAMD_SMI_EMULATOR_STATE={tmp_path / 'state.json'} AMD_SMI_EMULATOR_COUNT=2 "
                       f"exec {sys.executable} -m amdsmi_emulator \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    settings.AMD_SMI_BIN = str(wrapper)
    out = StringIO()
    call_command("sync_node", "gpu-host-1", "--create", stdout=out)
    node = Node.objects.get(name="gpu-host-1")
    assert node.backend == "amdsmi" and node.gpus.count() == 2


# --- hardware facts rechecked in issue 11 ---------------------------------------------------

def _mi355x(index: int, compute: str, memory: str, count: int, profiles=()) -> GpuInfo:
    return GpuInfo(
        index=index, bdf=f"0000:{0x05 + index:02x}:00.0", uuid=f"u{index}", market_name="AMD Instinct MI355X",
        gpu_model="MI355X", gfx_target="gfx950", compute_mode=compute, memory_mode=memory,
        memory_caps=("NPS1", "NPS2"), profiles=tuple(profiles), compute_units=256, vram_mb=294896,
        partitions=tuple(PartitionInfo(partition_id=p, logical_index=index * count + p, bdf=None, uuid=None,
                                       render_node=None, compute_units=256 // count, memory_mb=294896 // count)
                         for p in range(count)),
    )


def test_an_mi355x_in_cpx_nps2_is_a_valid_layout(node):
    # amd-gfx "drm/amdgpu: Update supported modes for GC v9.5.0": QPX and CPX run under NPS2.
    result = sync_inventory(node=node, inventory=_inventory(_mi355x(0, "CPX", "NPS2", 8), _mi355x(1, "QPX", "NPS2", 4)))
    node.refresh_from_db()
    assert node.layout_problem == "" and not any("invalid modes" in w for w in result.warnings)
    assert set(Partition.objects.filter(gpu__index=0).values_list("memory_gb", "xcds")) == {(36.0, 1)}


def test_profiles_that_report_no_memory_caps_fall_back_to_the_geometry_table(node):
    from partitions.backends.types import AcceleratorProfile

    blind = tuple(AcceleratorProfile(profile_index=i, accelerator_type=t, memory_caps=(), num_partitions=n,
                                     active=t == "CPX") for i, (t, n) in enumerate((("SPX", 1), ("CPX", 8))))
    gpu = _gpu(0, "CPX", "NPS1", 8)
    gpu = GpuInfo(**{**gpu.__dict__, "profiles": blind})
    sync_inventory(node=node, inventory=_inventory(gpu))
    node.refresh_from_db()
    assert node.layout_problem == ""
    assert set(Partition.objects.filter(gpu__node=node).values_list("memory_gb", flat=True)) == {24.0}


def test_a_pair_the_hardware_reports_is_accepted_and_flagged(node):
    from partitions.backends.types import AcceleratorProfile

    caps = (AcceleratorProfile(0, "SPX", ("NPS1",), 1, False), AcceleratorProfile(2, "QPX", ("NPS1", "NPS2", "NPS4"), 4, True))
    gpu = _gpu(0, "QPX", "NPS2", 4)
    gpu = GpuInfo(**{**gpu.__dict__, "profiles": caps})
    result = sync_inventory(node=node, inventory=_inventory(gpu))
    node.refresh_from_db()
    assert node.layout_problem == ""
    assert any("QPX+NPS2" in w and "reported by hardware" in w for w in result.warnings)
    assert set(Partition.objects.filter(gpu__node=node).values_list("memory_gb", "xcds")) == {(48.0, 2)}


CPX_CAPTURE = ("list.MI300X.CPX.gpu0-7.rocm7x.json", "static-asic-partition.MI300X.CPX-NPS1.gpu0-1.rocm7x.json",
               "metric-usage-power-mem.MI300X.CPX-NPS1.gpu0-1.rocm7x.json")


def test_the_dry_run_shows_exactly_what_is_stored(fixtures_dir):
    files = [_fixture(fixtures_dir, name) for name in CPX_CAPTURE]
    dry = StringIO()
    call_command("import_amdsmi", "--node", "bundle-7", "--dry-run", *files, stdout=dry)
    stored = StringIO()
    call_command("import_amdsmi", "--node", "bundle-7", *files, stdout=stored)
    dry_gpus, stored_gpus = json.loads(dry.getvalue())["gpus"], json.loads(stored.getvalue())["gpus"]
    assert dry_gpus == stored_gpus
    part0 = dry_gpus[0]["partitions"][0]
    row = Partition.objects.get(gpu__node__name="bundle-7", gpu__index=0, index=0)
    assert part0["memory_gb"] == row.memory_gb == 24.0  # nominal CPX share, not the 192 GiB amd-smi reports
    assert part0["reported_memory_mb"] == row.reported_memory_mb == 196592


def test_a_metric_capture_alone_does_not_invent_a_gpu_per_partition(fixtures_dir):
    out = StringIO()
    call_command("import_amdsmi", "--node", "bundle-8", "--dry-run",
                 _fixture(fixtures_dir, "metric-usage-power-mem.MI300X.CPX-NPS1.gpu0-1.rocm7x.json"), stdout=out)
    gpus = json.loads(out.getvalue())["gpus"]
    # The primary reports gfx_busy_inst for xcp_0..xcp_7: devices 0 and 1 are partitions of one GPU.
    assert len(gpus) == 1
    assert [p["logical_index"] for p in gpus[0]["partitions"]] == [0, 1]


def test_a_metric_capture_without_partition_hints_is_refused(tmp_path):
    rows = [{"gpu": g, "power": {"socket_power": {"value": 140, "unit": "W"}}} for g in range(2)]
    path = tmp_path / "metric.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(CommandError, match="add the output of amd-smi list"):
        call_command("import_amdsmi", "--node", "bundle-9", "--dry-run", str(path), stdout=StringIO())

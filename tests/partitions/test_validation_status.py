""""Driver-allowed, not AMD-validated" is shown distinctly in the API (gpu-specs) and in the
layout editor pages."""

from __future__ import annotations

import pytest
from django.urls import reverse

from partitions.backends.types import GpuInfo, NodeInventory, PartitionInfo, ToolVersion
from partitions.models import GPU, Node
from partitions.services import sync_inventory

pytestmark = pytest.mark.django_db

DRIVER_ALLOWED = "driver-allowed, not AMD-validated"


def test_gpu_specs_give_every_pair_its_validation_status(api_client_for, viewer):
    client = api_client_for(viewer)
    mi300a = client.get("/api/v1/gpu-specs/MI300A/").json()
    pairs = {(p["compute"], p["memory"]): p for p in mi300a["valid_pairs"]}
    assert pairs[("TPX", "NPS1")]["validation"] == "driver_allowed"
    assert pairs[("TPX", "NPS1")]["validation_label"] == DRIVER_ALLOWED
    assert pairs[("SPX", "NPS1")]["validation"] == "validated"
    mi325x = {(p["compute"], p["memory"]): p["validation"] for p in client.get("/api/v1/gpu-specs/MI325X/").json()["valid_pairs"]}
    assert mi325x[("SPX", "NPS1")] == "validated" and mi325x[("DPX", "NPS1")] == "estimated"
    mi355x = {(p["compute"], p["memory"]): p["validation"] for p in client.get("/api/v1/gpu-specs/MI355X/").json()["valid_pairs"]}
    assert mi355x[("CPX", "NPS2")] == mi355x[("QPX", "NPS2")] == "driver_allowed"
    mi300x = client.get("/api/v1/gpu-specs/MI300X/").json()
    assert mi300x["conditional_pairs"][0]["validation"] == "conditional"
    layouts = {(lay["compute_mode"], lay["memory_mode"]): lay for lay in mi325x_layouts(client)}
    assert layouts[("CPX", "NPS4")]["estimated"] is True


def mi325x_layouts(client):  # type: ignore[no-untyped-def]
    return client.get("/api/v1/gpu-specs/MI325X/").json()["layouts"]


def _apu_node() -> Node:
    node = Node.objects.create(name="apu-1", backend=Node.Backend.EMULATOR, emulated=True)
    gpu = GpuInfo(index=0, bdf="0000:02:00.0", uuid="u", market_name="AMD Instinct MI300A", gpu_model="MI300A",
                  gfx_target="gfx942", compute_mode="SPX", memory_mode="NPS1", memory_caps=(), profiles=(),
                  compute_units=228, vram_mb=131072,
                  partitions=(PartitionInfo(partition_id=0, logical_index=0, bdf=None, uuid=None, render_node=None,
                                            compute_units=228, memory_mb=131072),))
    sync_inventory(node=node, inventory=NodeInventory(version=ToolVersion("26.1.0", "26.1.0", "7.1.0"), gpus=(gpu,)))
    return node


def _label_of(html: str, mode_marker: str) -> str:
    """The text of the choice whose radio input carries ``mode_marker``."""
    start = html.index(mode_marker)
    return html[start:html.index("</label>", start)]


def test_the_gpu_editor_marks_driver_allowed_modes(client, operator):
    node = _apu_node()
    client.force_login(operator)
    html = client.get(reverse("planning:gpu-editor", args=[GPU.objects.get(node=node).pk])).content.decode()
    assert DRIVER_ALLOWED in _label_of(html, 'value="TPX"')
    assert DRIVER_ALLOWED not in _label_of(html, 'value="CPX"')


def test_the_node_editor_marks_driver_allowed_pairs(client, operator):
    node = Node.objects.create(name="mi355-1", backend=Node.Backend.EMULATOR, emulated=True)
    gpu = GpuInfo(index=0, bdf="0000:05:00.0", uuid="u", market_name="AMD Instinct MI355X", gpu_model="MI355X",
                  gfx_target="gfx950", compute_mode="SPX", memory_mode="NPS1", memory_caps=("NPS1", "NPS2"),
                  profiles=(), compute_units=256, vram_mb=294896,
                  partitions=(PartitionInfo(partition_id=0, logical_index=0, bdf=None, uuid=None, render_node=None,
                                            compute_units=256, memory_mb=294896),))
    sync_inventory(node=node, inventory=NodeInventory(version=None, gpus=(gpu,)))
    client.force_login(operator)
    html = client.get(reverse("planning:node-editor", args=[node.name])).content.decode()
    assert DRIVER_ALLOWED in _label_of(html, 'value="NPS2:CPX"')
    assert DRIVER_ALLOWED not in _label_of(html, 'value="NPS2:DPX"')

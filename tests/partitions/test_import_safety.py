"""An import must never silently overwrite a live node, and hostile captures answer 4xx."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from aimconsole.models import AuditEvent
from models.models import ModelProfile
from partitions.models import GPU, Node, Partition
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db

TWO_GPU_CAPTURE = "static-asic-vram-partition.MI300X.SPX-NPS1.gpu0-1.rocm7x.json"


def capture(fixtures_dir: Path) -> str:
    return str(fixtures_dir / "amd-smi" / TWO_GPU_CAPTURE)


@pytest.fixture
def busy_node(tmp_path, catalog, api_client_for, operator):  # type: ignore[no-untyped-def]
    """A 4-GPU emulated node with a running deployment on every GPU (one SPX replica each)."""
    emulated = make_emulated_node(tmp_path, "emu-node-1", gpus=4)
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    response = api_client_for(operator).post("/api/v1/deployments/", {
        "name": "llama8", "profile": profile.pk, "replicas": 4}, format="json")
    assert response.status_code == 201, response.json()
    return emulated.node


def snapshot(node: Node) -> list:
    return sorted(Partition.objects.filter(gpu__node=node).values_list("pk", "gpu__index", "index", "memory_gb"))


def test_the_command_refuses_an_import_that_removes_gpus_in_use(busy_node, fixtures_dir):
    before = snapshot(busy_node)
    with pytest.raises(CommandError) as info:
        call_command("import_amdsmi", "--node", "emu-node-1", capture(fixtures_dir), stdout=StringIO())
    message = str(info.value)
    assert "would remove GPUs 2, 3" in message and "llama8" in message and "--force" in message
    assert snapshot(busy_node) == before


def test_the_dry_run_shows_exactly_what_would_be_removed(busy_node, fixtures_dir):
    out = StringIO()
    call_command("import_amdsmi", "--node", "emu-node-1", "--dry-run", capture(fixtures_dir), stdout=out)
    body = json.loads(out.getvalue())
    removed = body["would_remove"]
    assert removed["gpus"] == [2, 3]
    assert [(p["gpu_index"], p["partition"], p["occupant"]) for p in removed["partitions"]] == [
        (2, 0, "llama8"), (3, 0, "llama8")]
    assert body["refused"] and "in use" in body["refused"]
    assert GPU.objects.filter(node=busy_node).count() == 4


def test_a_forced_import_goes_through_and_is_audited(busy_node, fixtures_dir):
    out = StringIO()
    call_command("import_amdsmi", "--node", "emu-node-1", "--force", capture(fixtures_dir), stdout=out)
    assert sorted(GPU.objects.filter(node=busy_node).values_list("index", flat=True)) == [0, 1]
    event = AuditEvent.objects.filter(action="node.import").latest("pk")
    assert event.after["forced"] is True
    assert event.after["removed"]["gpus"] == [2, 3]
    assert [p["occupant"] for p in event.after["removed"]["partitions"]] == ["llama8", "llama8"]


def test_the_api_refuses_with_409_and_accepts_force(busy_node, fixtures_dir, api_client_for, operator):
    outputs = [Path(capture(fixtures_dir)).read_text()]
    client = api_client_for(operator)
    before = snapshot(busy_node)
    refused = client.post("/api/v1/nodes/emu-node-1/import-amdsmi/", {"outputs": outputs}, format="json")
    assert refused.status_code == 409, refused.json()
    body = refused.json()
    assert body["code"] == "conflict" and "llama8" in body["message"]
    assert body["detail"]["would_remove"]["gpus"] == [2, 3]
    assert snapshot(busy_node) == before
    forced = client.post("/api/v1/nodes/emu-node-1/import-amdsmi/", {"outputs": outputs, "force": True}, format="json")
    assert forced.status_code == 201, forced.json()
    assert GPU.objects.filter(node=busy_node).count() == 2
    assert AuditEvent.objects.filter(action="node.import", after__forced=True).exists()


def test_a_node_with_a_live_agent_is_not_overwritten_unless_forced(tmp_path, fixtures_dir, api_client_for, operator):
    node = make_emulated_node(tmp_path, "emu-node-2", gpus=2).node
    Node.objects.filter(pk=node.pk).update(agent_heartbeat_at=timezone.now())
    with pytest.raises(CommandError, match="live agent"):
        call_command("import_amdsmi", "--node", "emu-node-2", capture(fixtures_dir), stdout=StringIO())
    outputs = [Path(capture(fixtures_dir)).read_text()]
    response = api_client_for(operator).post("/api/v1/nodes/emu-node-2/import-amdsmi/", {"outputs": outputs}, format="json")
    assert response.status_code == 409 and "live agent" in response.json()["message"]
    call_command("import_amdsmi", "--node", "emu-node-2", "--force", capture(fixtures_dir), stdout=StringIO())


def test_an_import_onto_an_idle_node_needs_no_force(tmp_path, fixtures_dir):
    make_emulated_node(tmp_path, "emu-node-3", gpus=4)
    call_command("import_amdsmi", "--node", "emu-node-3", capture(fixtures_dir), stdout=StringIO())
    assert GPU.objects.filter(node__name="emu-node-3").count() == 2
    event = AuditEvent.objects.filter(action="node.import").latest("pk")
    assert event.after["forced"] is False and event.after["removed"]["gpus"] == [2, 3]


# --- hostile captures ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_in_an_import_is_a_400(api_client_for, operator, depth):
    nested = "[" * depth + "]" * depth
    response = api_client_for(operator).post("/api/v1/nodes/edge-9/import-amdsmi/", {"outputs": [nested]}, format="json")
    assert response.status_code == 400, response.content[:200]
    assert "nested deeper" in response.json()["message"]
    assert not Node.objects.filter(name="edge-9").exists()


def test_deeply_nested_json_after_text_is_a_400_too(api_client_for, operator):
    # An odd quote in the text before the JSON hides the brackets from a string-aware depth
    # count; the decoder must still not recurse itself into a 500.
    nested = 'GPU: "0\n' + '{"gpu_data": ' + "[" * 50_000 + "]" * 50_000 + "}"
    response = api_client_for(operator).post("/api/v1/nodes/edge-9/import-amdsmi/", {"outputs": [nested]}, format="json")
    assert response.status_code == 400, response.content[:200]


def test_deeply_nested_json_in_a_file_is_a_command_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CommandError, match="nested deeper"):
        call_command("import_amdsmi", "--node", "edge-10", str(path), stdout=StringIO())

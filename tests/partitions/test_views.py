"""Operator pages through the Django test client: content, roles, forms, query counts."""

from __future__ import annotations

import re

import pytest

from models.models import ModelProfile
from partitions.backends.simulated import SimulatedFleet
from partitions.models import GPU, Node, Reconfiguration
from partitions.services import sync_inventory
from planning.models import Plan
from serving.models import Deployment

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)


def simulated_fleet(nodes: int, prefix: str = "sim-") -> None:
    fleet = SimulatedFleet(nodes=nodes, gpu_count=8, prefix=prefix)
    for i, name in enumerate(fleet.nodes):
        backend = fleet.backend(name)
        backend.set_compute_mode([i % 8], "CPX")
        node = Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True)
        sync_inventory(node=node, inventory=backend.inventory())


def occupy(prefix: str, profile: ModelProfile) -> None:
    """On every node named ``prefix…``: a running deployment with a replica on a CPX partition
    and one on an SPX GPU, and an active reconfiguration, a GPU's compute change on even nodes
    (one pending, one applying) and a node's memory change on odd ones."""
    from partitions.services.reconfiguration import request_reconfiguration
    from serving.models import DeploymentSlot

    for i, node in enumerate(Node.objects.filter(name__startswith=prefix).order_by("name")):
        gpus = list(node.gpus.order_by("index"))
        cpx = next(g for g in gpus if g.compute_mode == "CPX")
        spx = [g for g in gpus if g.compute_mode == "SPX"]
        deployment = Deployment.objects.create(name=f"{node.name}-llm", profile=profile, replicas=2,
                                               state=Deployment.State.RUNNING)
        for replica, part in enumerate([cpx.partitions.order_by("index").first(), spx[0].partitions.get()]):
            DeploymentSlot.objects.create(deployment=deployment, replica=replica, partition=part)
        if i % 2:
            request_reconfiguration(node=node, memory_mode="NPS4", compute_mode="CPX", reason="query count")
        else:
            op = request_reconfiguration(gpu=spx[-1], compute_mode="DPX", reason="query count")
            if i % 4 == 2:
                Reconfiguration.objects.filter(pk=op.pk).update(state=Reconfiguration.State.APPLYING)


def test_fleet_overview_uses_a_fixed_number_of_queries(client, viewer, catalog, django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    profile = ModelProfile.objects.filter(gpu_model="MI300X").order_by("pk").first()
    client.force_login(viewer)
    simulated_fleet(4, prefix="a-")
    occupy("a-", profile)
    with CaptureQueriesContext(connection) as small:
        html = client.get("/fleet/", {"per_page": 50}).content.decode()
    assert html.count('class="model small"') == 4 * 2
    simulated_fleet(30, prefix="b-")
    occupy("b-", profile)
    with django_assert_num_queries(len(small.captured_queries)):
        html = client.get("/fleet/", {"per_page": 50}).content.decode()
    assert html.count('class="part ') == 34 * (7 + 8)  # 7 SPX + 1 CPX GPU per node
    assert html.count(">emulated</span>") == 34
    assert html.count('class="model small"') == 34 * 2  # every slot's deployment named on its partition
    # Compute changes badge their GPU, memory changes the node and its 8 GPUs; one in the legend.
    assert html.count('class="badge op"') == 17 + 17 * (1 + 8) + 1


def test_fleet_filters(client, viewer):
    client.force_login(viewer)
    simulated_fleet(3)
    html = client.get("/fleet/", {"mode": "CPX"}).content.decode()
    assert html.count('<article class="gpu') == 3
    html = client.get("/fleet/", {"node": "sim-0001"}).content.decode()
    assert re.findall(r'<h2>([^<]+)</h2>', html) == ["sim-0001"]
    html = client.get("/fleet/", {"free": "192"}).content.decode()
    assert html.count('<article class="gpu') == 24  # all idle: 192 GiB free each (8 × 24 in CPX)
    html = client.get("/fleet/", {"free": "193"}).content.decode()
    assert html.count('<article class="gpu') == 0 and "No GPUs match these filters" in html


def test_viewers_see_no_action_buttons(client, viewer, emulated):
    client.force_login(viewer)
    gpu = GPU.objects.get(node=emulated.node, index=0)
    assert "Memory mode" not in client.get("/fleet/").content.decode()
    html = client.get(f"/fleet/gpus/{gpu.pk}/").content.decode()
    assert "Preview the plan" not in html and "operators and admins can change it" in html
    assert client.post("/plans/1/apply/").status_code == 403
    assert client.get("/deployments/new/").status_code == 403


def test_viewers_posting_the_layout_editors_are_refused_and_no_plan_is_made(client, viewer, emulated):
    client.force_login(viewer)
    gpu = GPU.objects.get(node=emulated.node, index=1)
    assert client.post(f"/fleet/gpus/{gpu.pk}/", {"compute_mode": "CPX"}).status_code == 403
    assert client.post(f"/fleet/nodes/{emulated.node.name}/", {"pair": "NPS4:CPX"}).status_code == 403
    assert not Plan.objects.exists()
    assert client.get(f"/fleet/gpus/{gpu.pk}/").status_code == 200  # reading the editor stays open


def test_gpu_editor_disables_invalid_modes_with_the_reason(client, operator, emulated):
    client.force_login(operator)
    GPU.objects.filter(node=emulated.node).update(memory_mode="NPS4", compute_mode="CPX")
    Node.objects.filter(pk=emulated.node.pk).update(memory_mode="NPS4")
    gpu = GPU.objects.get(node=emulated.node, index=0)
    html = client.get(f"/fleet/gpus/{gpu.pk}/").content.decode()
    assert re.search(r'value="SPX" disabled', html) and "not valid under NPS4 (valid: QPX, CPX)" in html
    assert re.search(r'value="TPX" disabled', html) and "MI300X has no TPX mode" in html
    assert re.search(r'value="QPX"\s+>', html) or 'value="QPX" >' in html


def test_preview_then_apply_from_the_gpu_editor(client, operator, emulated):
    client.force_login(operator)
    gpu = GPU.objects.get(node=emulated.node, index=1)
    preview = client.post(f"/fleet/gpus/{gpu.pk}/", {"compute_mode": "CPX"}, HTTP_HX_REQUEST="true")
    assert preview.status_code == 200
    html = preview.content.decode()
    assert html.startswith('<div class="plan card"')  # an htmx partial
    assert "SPX → <strong>CPX</strong>" in html and "Apply plan" in html and "24 GiB" in html
    assert not Reconfiguration.objects.exists()  # a preview changes nothing
    plan = Plan.objects.get()
    response = client.post(f"/plans/{plan.pk}/apply/")
    op = Reconfiguration.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/operations/{op.pk}/"
    page = client.get(response["Location"]).content.decode()
    assert "emu-a/gpu1 → CPX" in page and 'id="op-progress"' in page


def test_invalid_preview_is_a_clear_error(client, operator, emulated):
    client.force_login(operator)
    gpu = GPU.objects.get(node=emulated.node, index=1)
    response = client.post(f"/fleet/gpus/{gpu.pk}/", {"compute_mode": "TPX"})
    assert response.status_code == 400 and "valid under NPS1" in response.content.decode()
    assert not Plan.objects.exists()


def test_node_editor_lists_pairs_and_previews_an_nps_change(client, operator, emulated):
    client.force_login(operator)
    html = client.get(f"/fleet/nodes/{emulated.node.name}/").content.decode()
    assert re.search(r'value="NPS4:SPX" disabled', html) and "SPX+NPS4 is not a valid pair" in html
    preview = client.post(f"/fleet/nodes/{emulated.node.name}/", {"pair": "NPS4:CPX"}).content.decode()
    assert "memory NPS1 → NPS4" in preview and "driver reload on 2 GPUs" in preview


def test_operations_pages(client, viewer, emulated):
    from partitions.services.reconfiguration import request_reconfiguration

    op = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=0), compute_mode="DPX", reason="<b>test</b>")
    client.force_login(viewer)
    listing = client.get("/operations/", {"state": "pending"}).content.decode()
    assert f'/operations/{op.pk}/' in listing
    assert client.get("/operations/", {"state": "failed", "kind": "reconfiguration"}).content.decode().count(f'/operations/{op.pk}/') == 0
    detail = client.get(f"/operations/{op.pk}/").content.decode()
    assert "requested: emu-a/gpu0 → DPX" in detail and "&lt;b&gt;test&lt;/b&gt;" in detail


def test_deployment_form_success_conflict_and_stop(client, operator, emulated, catalog):
    client.force_login(operator)
    form = client.get("/deployments/new/").content.decode()
    assert "free now:" in form
    llama = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                     gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    response = client.post("/deployments/new/", {"name": "llama8", "profile": llama.pk, "replicas": "1"})
    deployment = Deployment.objects.get(name="llama8")
    assert response.status_code == 302 and response["Location"] == f"/deployments/{deployment.pk}/"
    detail = client.get(response["Location"]).content.decode()
    assert "ROCR_VISIBLE_DEVICES=" in detail and "vllm serve meta-llama/Llama-3.1-8B-Instruct" in detail
    conflict = client.post("/deployments/new/", {"name": "many", "profile": llama.pk, "replicas": "8"})
    assert conflict.status_code == 409 and "suggested plan" in conflict.content.decode()
    bad = client.post("/deployments/new/", {"name": "llama8", "profile": llama.pk, "replicas": "1"})
    assert bad.status_code == 400 and "already called" in bad.content.decode()
    stop = client.post(f"/deployments/{deployment.pk}/stop/")
    assert stop.status_code == 302
    assert Deployment.objects.get(pk=deployment.pk).state == "stopped"

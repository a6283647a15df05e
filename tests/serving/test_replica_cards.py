"""Replica cards on a deployment's page (issue 13, 6): each names its node, GPU and partition
with links, numbers replicas as the API does, shows ROCR_VISIBLE_DEVICES with its node, and
gives the container spec as JSON (not a Python repr) with a copy button; the API says
whether a deployment runs on emulated nodes."""

from __future__ import annotations

import html
import json
import re

import pytest

from models.models import ModelProfile
from partitions.models import GPU, Node
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db


@pytest.fixture
def profile(catalog):  # type: ignore[no-untyped-def]
    return ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                    gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)


@pytest.fixture
def deployed(tmp_path, profile, api_client_for, operator):  # type: ignore[no-untyped-def]
    make_emulated_node(tmp_path, "emu-1", gpus=2)
    response = api_client_for(operator).post("/api/v1/deployments/", {"name": "chat", "profile": profile.pk, "replicas": 2,
                                                                      "spread": True}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def card(page: str, replica: int) -> str:
    start = page.index(f'id="replica-{replica}"')
    return page[start:page.index("</section>", start)]


def test_each_card_names_and_links_its_node_gpu_and_partition(client, viewer, deployed):
    client.force_login(viewer)
    page = client.get(f"/deployments/{deployed['id']}/").content.decode()
    for slot in deployed["slots"]:
        text = card(page, slot["replica"])
        gpu = GPU.objects.get(node__name=slot["node"], index=slot["gpu_index"])
        assert f'href="/fleet/#node-{slot["node"]}" class="node-link">{slot["node"]}</a>' in text
        assert f'href="/fleet/gpus/{gpu.pk}/" class="gpu-link"' in text
        assert f'href="/fleet/#gpu-{slot["node"]}-{slot["gpu_index"]}" class="partition-link">p{slot["partition_index"]}</a>' in text
        assert f"logical device {slot['logical_index']}" in text
        # The visibility variable is shown with the node it applies on.
        assert re.search(rf"on <strong>{slot['node']}</strong>: <code class=\"env\">ROCR_VISIBLE_DEVICES={slot['logical_index']}</code>",
                         text)
    assert client.get(f"/fleet/gpus/{GPU.objects.filter(node__name='emu-1').first().pk}/").status_code == 200


def test_replicas_are_numbered_as_in_the_api(client, viewer, deployed):
    client.force_login(viewer)
    page = client.get(f"/deployments/{deployed['id']}/").content.decode()
    numbers = sorted(w["replica"] for w in deployed["workloads"])
    assert numbers == [0, 1]
    headings = re.findall(r"<h3>Replica (\d+) <span class=\"muted small\">\((\d+) of (\d+)\)</span>", page)
    assert headings == [("0", "1", "2"), ("1", "2", "2")]


def test_the_container_spec_is_json_with_a_copy_button(client, viewer, deployed):
    client.force_login(viewer)
    page = client.get(f"/deployments/{deployed['id']}/").content.decode()
    for workload in deployed["workloads"]:
        text = card(page, workload["replica"])
        match = re.search(rf'<pre class="output spec" id="spec-{workload["replica"]}">(.*?)</pre>', text, re.S)
        assert match, text
        assert json.loads(html.unescape(match.group(1))) == workload["container"]
        assert f'data-copy-target="spec-{workload["replica"]}"' in text
    assert "{'command'" not in page  # no Python repr
    assert '/static/serving/copy.js' in page


def test_the_api_says_a_deployment_is_on_emulated_nodes(api_client_for, viewer, deployed):
    client = api_client_for(viewer)
    assert client.get(f"/api/v1/deployments/{deployed['id']}/").json()["emulated"] is True
    Node.objects.filter(name="emu-1").update(emulated=False)  # stands in for a real amd-smi node
    assert client.get(f"/api/v1/deployments/{deployed['id']}/").json()["emulated"] is False


def test_cards_are_labelled_emulated(client, viewer, deployed):
    client.force_login(viewer)
    page = client.get(f"/deployments/{deployed['id']}/").content.decode()
    assert '<span class="badge emulated"' in card(page, 0)

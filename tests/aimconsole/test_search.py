"""Global search (/search/?q=): nodes, GPUs, deployments, catalog models and operations, each
linking to its page, at most 20 a kind with a count of the rest; q bounded and checked."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from models.models import InferenceModel, ModelProfile
from partitions.models import GPU, Node, Reconfiguration
from serving.models import Deployment

pytestmark = pytest.mark.django_db


def results(html: str, kind: str) -> list[tuple[str, str]]:
    section = re.search(rf'<section class="results" id="results-{kind}">(.*?)</section>', html, re.S)
    return re.findall(r'<a href="([^"]+)">([^<]+)</a>', section.group(1)) if section else []


def search(client, q: str):  # type: ignore[no-untyped-def]
    return client.get(reverse("search"), {"q": q})


def test_it_finds_nodes_gpus_deployments_models_and_operations_with_links(client, viewer, catalog):
    node = Node.objects.create(name="Rack7-Alpha", backend=Node.Backend.SIMULATED)
    Node.objects.create(name="other-node", backend=Node.Backend.SIMULATED)
    gpu = GPU.objects.create(node=node, index=3, bdf="0000:c1:00.0")
    op = Reconfiguration.objects.create(kind=Reconfiguration.Kind.COMPUTE, node=node, gpu=gpu, gpu_index=3, target_compute_mode="CPX")
    deployment = Deployment.objects.create(name="chat-alpha", profile=ModelProfile.objects.first(), replicas=1)
    client.force_login(viewer)

    html = search(client, "rack7").content.decode()  # case-insensitive
    assert results(html, "nodes") == [(reverse("planning:node-editor", args=[node.name]), "Rack7-Alpha")]
    assert results(html, "gpus") == [(reverse("planning:gpu-editor", args=[gpu.pk]), "Rack7-Alpha GPU 3")]

    assert results(search(client, "rack7-alpha gpu 3").content.decode(), "gpus") == [
        (reverse("planning:gpu-editor", args=[gpu.pk]), "Rack7-Alpha GPU 3")]
    assert results(search(client, "C1:00").content.decode(), "gpus") == [
        (reverse("planning:gpu-editor", args=[gpu.pk]), "Rack7-Alpha GPU 3")]
    assert results(search(client, "ALPHA").content.decode(), "deployments") == [
        (reverse("serving:deployment-detail", args=[deployment.pk]), "chat-alpha")]

    llama = InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")
    found = results(search(client, "llama-3.1-8b-instr").content.decode(), "models")
    assert (reverse("catalog:model-detail", args=[llama.pk]), llama.hf_id) in found

    html = search(client, str(op.pk)).content.decode()
    assert (reverse("partitions:operation-detail", args=[op.pk]), f"operation #{op.pk}") in results(html, "operations")
    assert results(search(client, f"#{op.pk}").content.decode(), "operations") == [
        (reverse("partitions:operation-detail", args=[op.pk]), f"operation #{op.pk}")]


def test_it_shows_at_most_twenty_a_kind_and_counts_the_rest(client, viewer):
    Node.objects.bulk_create([Node(name=f"many-{i:02d}", backend=Node.Backend.SIMULATED) for i in range(27)])
    client.force_login(viewer)
    html = search(client, "many-").content.decode()
    assert len(results(html, "nodes")) == 20
    assert "7 more" in html


def test_the_query_count_does_not_grow_with_the_matches(client, viewer, catalog, django_assert_max_num_queries):
    profile = ModelProfile.objects.first()

    def add(start: int, count: int) -> None:
        for i in range(start, start + count):
            node = Node.objects.create(name=f"qc-{i}", backend=Node.Backend.SIMULATED)
            GPU.objects.create(node=node, index=0, bdf=f"qc-bdf-{i}")
            Deployment.objects.create(name=f"qc-dep-{i}", profile=profile, replicas=1, state=Deployment.State.STOPPED)

    add(0, 1)
    client.force_login(viewer)
    with django_assert_max_num_queries(20) as few:
        search(client, "qc-")
    add(1, 25)
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = search(client, "qc-").content.decode()
    assert len(results(html, "nodes")) == len(results(html, "gpus")) == len(results(html, "deployments")) == 20


def test_a_script_in_q_is_shown_escaped(client, viewer):
    client.force_login(viewer)
    response = search(client, "<script>alert(1)</script>")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize("q, message", [
    ("x" * 101, "at most 100 characters"),
    ("abc\u202edef", "control characters"),
    ("abc\x1b[2J", "control characters"),
    ("a\tb", "control characters"),
])
def test_a_bad_q_is_refused_inline(client, viewer, q, message):
    Node.objects.create(name="abcdef", backend=Node.Backend.SIMULATED)
    client.force_login(viewer)
    response = search(client, q)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html and 'role="alert"' in html
    assert "\u202e" not in html and "\x1b" not in html
    assert results(html, "nodes") == []


def test_the_header_has_the_search_form_and_an_empty_q_searches_nothing(client, viewer):
    Node.objects.create(name="n1", backend=Node.Backend.SIMULATED)
    client.force_login(viewer)
    fleet = client.get(reverse("partitions:fleet")).content.decode()
    assert re.search(r'<form[^>]*role="search"[^>]*action="/search/"', fleet)
    assert 'name="q"' in fleet
    response = client.get(reverse("search"))
    assert response.status_code == 200
    assert results(response.content.decode(), "nodes") == []


def test_search_needs_a_role(client, norole):
    client.force_login(norole)
    assert search(client, "x").status_code == 403
    client.logout()
    assert search(client, "x").status_code == 302

"""A deployment with a replica on an emulated node is labelled "emulated" on the deployments list
and on its page, so emulator numbers are never read as real hardware (issue 13, 6)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from models.models import ModelProfile
from partitions.models import Node, Partition
from serving.models import Deployment, DeploymentSlot
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db

BADGE = '<span class="badge emulated"'


@pytest.fixture
def profile(catalog):  # type: ignore[no-untyped-def]
    return ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                    gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)


@pytest.fixture
def nodes(tmp_path, catalog):  # type: ignore[no-untyped-def]
    make_emulated_node(tmp_path, "emu-1", gpus=4)
    make_emulated_node(tmp_path, "real-1", gpus=4)
    Node.objects.filter(name="real-1").update(emulated=False)  # stands in for an amd-smi node
    return Node.objects.get(name="emu-1"), Node.objects.get(name="real-1")


def deploy(name: str, profile: ModelProfile, *on: Node) -> Deployment:
    """A running deployment holding one free partition on each node of ``on`` (none: pending)."""
    deployment = Deployment.objects.create(name=name, profile=profile, replicas=max(1, len(on)),
                                           state=Deployment.State.RUNNING if on else Deployment.State.PENDING)
    for replica, node in enumerate(on):
        partition = Partition.objects.filter(gpu__node=node, slot__isnull=True).order_by("gpu__index", "index")[0]
        DeploymentSlot.objects.create(deployment=deployment, replica=replica, partition=partition)
    return deployment


def row_of(page: str, name: str) -> str:
    start = page.index(f">{name}</a>")
    return page[start:page.index("</tr>", start)]


def title_of(page: str) -> str:
    return page[page.index("<h1>"):page.index("</h1>")]


def test_the_list_labels_deployments_on_emulated_nodes(client, viewer, profile, nodes):
    emulated, real = nodes
    deploy("on-emu", profile, emulated)
    deploy("mixed", profile, real, emulated)
    deploy("on-real", profile, real)
    deploy("nowhere", profile)
    client.force_login(viewer)
    page = client.get("/deployments/").content.decode()
    assert BADGE in row_of(page, "on-emu")
    assert BADGE in row_of(page, "mixed")
    assert BADGE not in row_of(page, "on-real")
    assert BADGE not in row_of(page, "nowhere")


def test_the_label_costs_no_query_per_row(client, viewer, profile, nodes):
    emulated, real = nodes
    client.force_login(viewer)
    deploy("first", profile, emulated)
    with CaptureQueriesContext(connection) as one:
        assert client.get("/deployments/").status_code == 200
    for i in range(3):
        deploy(f"more-{i}", profile, emulated, real)
    with CaptureQueriesContext(connection) as four:
        page = client.get("/deployments/").content.decode()
    assert page.count(BADGE) == 4
    assert len(four) == len(one)


def test_the_deployment_page_labels_it_next_to_its_name(client, viewer, profile, nodes):
    emulated, real = nodes
    on_emu = deploy("on-emu", profile, real, emulated)
    on_real = deploy("on-real", profile, real)
    client.force_login(viewer)
    assert BADGE in title_of(client.get(f"/deployments/{on_emu.pk}/").content.decode())
    assert BADGE not in title_of(client.get(f"/deployments/{on_real.pk}/").content.decode())

"""Control and bidi characters in user-controlled text (a catalog model's notes, a deployment's
name or state message, a node's name) are shown as visible escapes on the console pages, as on
the audit page, instead of reversing or hiding the text around them (issue 13, 6)."""

from __future__ import annotations

import pytest

from models.models import InferenceModel, ModelProfile
from partitions.models import Node
from serving.models import Deployment

pytestmark = pytest.mark.django_db

RLO = "\u202e"  # right-to-left override: "harmless\u202egnp.exe" reads "harmlessexe.png"


def assert_escaped(page: str, visible: str) -> None:
    assert RLO not in page
    assert visible in page


@pytest.fixture
def hostile_model(catalog):  # type: ignore[no-untyped-def]
    model = InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")
    model.notes = f"harmless{RLO}gnp.exe"
    model.family = f"Llama{RLO}x"
    model.save(update_fields=["notes", "family"])
    return model


@pytest.fixture
def hostile_deployment(catalog):  # type: ignore[no-untyped-def]
    # The form and the API refuse such a name (SlugField); rows written another way (admin,
    # shell, an older version) still reach the pages.
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    return Deployment.objects.create(name=f"web{RLO}gpj", profile=profile, replicas=1, state=Deployment.State.DEGRADED,
                                     state_message=f"lost a replica{RLO}deliaf")


def test_the_catalog_detail_page_escapes_a_models_notes(client, viewer, hostile_model):
    client.force_login(viewer)
    page = client.get(f"/catalog/{hostile_model.pk}/").content.decode()
    assert_escaped(page, "harmless\\u202egnp.exe")
    assert "Llama\\u202ex" in page


def test_the_catalog_list_escapes_a_models_family(client, viewer, hostile_model):
    client.force_login(viewer)
    page = client.get("/catalog/", {"q": "Llama-3.1-8B"}).content.decode()
    assert_escaped(page, "Llama\\u202ex")


def test_the_deployment_list_escapes_name_and_state_message(client, viewer, hostile_deployment):
    client.force_login(viewer)
    page = client.get("/deployments/").content.decode()
    assert_escaped(page, "web\\u202egpj")
    assert "lost a replica\\u202edeliaf" in page


def test_the_deployment_page_escapes_name_and_state_message(client, viewer, hostile_deployment):
    client.force_login(viewer)
    page = client.get(f"/deployments/{hostile_deployment.pk}/").content.decode()
    assert_escaped(page, "web\\u202egpj")
    assert "lost a replica\\u202edeliaf" in page


def test_the_fleet_page_escapes_a_node_name(client, viewer, db):
    # Node names are validated on the forms and commands; a row written around them is shown safely.
    Node.objects.create(name=f"node{RLO}1", emulated=True)
    client.force_login(viewer)
    page = client.get("/fleet/").content.decode()
    start = page.index('<section class="card node"')
    section = page[start:page.index("</section>", start)]
    assert "<h2>node\\u202e1</h2>" in section
    # The raw name stays only in the attributes fleet.js matches live updates on (never shown).
    rest = section.replace(f'id="node-node{RLO}1"', "").replace(f'data-node="node{RLO}1"', "")
    assert RLO not in rest

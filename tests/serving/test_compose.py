"""Composing a deployment (issue 13, 4): "Deploy" from a catalog profile row opens the form with
that profile; links prefill the form (profile, pin_node, replicas, name) and values the form
cannot take are ignored with a note, never a 500; the profile picker is grouped by model and
preselects nothing; a custom context length and concurrency size the replicas and their
serving arguments, the same through the page and the API."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from models.models import InferenceModel, ModelProfile
from serving.models import Deployment
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture
def profile(catalog):  # type: ignore[no-untyped-def]
    return ModelProfile.objects.get(model__hf_id=LLAMA, precision__code="fp16", gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1)


@pytest.fixture
def node(tmp_path, catalog):  # type: ignore[no-untyped-def]
    return make_emulated_node(tmp_path, "emu-1", gpus=2)


class _Select(HTMLParser):
    """The profile <select>: its groups, options and which one is selected."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.group: str | None = None
        self.options: list[dict[str, object]] = []
        self.groups: list[str] = []
        self._option: dict[str, object] | None = None

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        a = dict(attrs)
        if tag == "select" and a.get("name") == "profile":
            self.inside = True
        elif self.inside and tag == "optgroup":
            self.group = a.get("label")
            self.groups.append(str(self.group))
        elif self.inside and tag == "option":
            self._option = {"value": a.get("value"), "selected": "selected" in a, "group": self.group, "text": ""}
            self.options.append(self._option)

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        if tag == "select":
            self.inside = False
        elif tag == "optgroup":
            self.group = None
        elif tag == "option":
            self._option = None

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        if self._option is not None:
            self._option["text"] = str(self._option["text"]) + data


def picker(page: str) -> _Select:
    parser = _Select()
    parser.feed(page)
    return parser


def value_of(page: str, name: str) -> str | None:
    match = re.search(rf'<input[^>]*name="{name}"[^>]*value="([^"]*)"', page)
    return match.group(1) if match else None


def test_the_picker_groups_by_model_and_preselects_nothing(client, operator, node, profile):
    client.force_login(operator)
    page = client.get("/deployments/new/").content.decode()
    select = picker(page)
    assert select.options[0]["value"] == "" and select.options[0]["group"] is None
    assert [o for o in select.options if o["selected"]] == [select.options[0]]
    assert LLAMA in select.groups and len(select.groups) == len(set(select.groups))
    llama = [o for o in select.options if o["group"] == LLAMA]
    assert {o["value"] for o in llama} >= {str(profile.pk)}
    text = next(str(o["text"]) for o in llama if o["value"] == str(profile.pk))
    assert text.startswith("fp16 · 8192 tokens · 19.5 GiB")
    assert 'id="profile-filter"' in page


def test_deploy_on_a_catalog_profile_row_opens_the_form_with_it(client, operator, node, profile):
    client.force_login(operator)
    model = InferenceModel.objects.get(hf_id=LLAMA)
    detail = client.get(f"/catalog/{model.pk}/").content.decode()
    link = f'href="/deployments/new/?profile={profile.pk}"'
    assert link in detail
    listing = client.get("/catalog/").content.decode()
    assert link in listing
    page = client.get(f"/deployments/new/?profile={profile.pk}").content.decode()
    assert [o["value"] for o in picker(page).options if o["selected"]] == [str(profile.pk)]
    assert 'id="prefill-notes"' not in page


def test_a_viewer_sees_no_deploy_link(client, viewer, node, profile):
    client.force_login(viewer)
    model = InferenceModel.objects.get(hf_id=LLAMA)
    assert "/deployments/new/" not in client.get(f"/catalog/{model.pk}/").content.decode()


def test_a_custom_profile_from_the_catalog_is_offered(client, operator, node, profile):
    custom = ModelProfile.objects.create(model=profile.model, precision=profile.precision, gpu_model="MI300X",
                                         context_tokens=32768, concurrent_sequences=4)
    from models.services import compute_profile

    compute_profile(custom)
    client.force_login(operator)
    page = client.get(f"/deployments/new/?profile={custom.pk}").content.decode()
    selected = [o for o in picker(page).options if o["selected"]]
    assert [o["value"] for o in selected] == [str(custom.pk)]
    assert "32768 tokens × 4 seqs" in str(selected[0]["text"])


def test_links_prefill_node_replicas_and_name(client, operator, node, profile):
    client.force_login(operator)
    page = client.get(f"/deployments/new/?pin_node=emu-1&replicas=3&name=chat-1&profile={profile.pk}").content.decode()
    assert re.search(r'<option value="emu-1" selected>', page)
    assert value_of(page, "replicas") == "3"
    assert value_of(page, "name") == "chat-1"
    assert 'id="prefill-notes"' not in page


@pytest.mark.parametrize("query, field", [
    ("profile=999999", "profile"),
    ("profile=abc", "profile"),
    ("profile=99999999999999999999999", "profile"),
    ("profile=%C2%B2", "profile"),
    ("pin_node=no-such-node", "pin_node"),
    ("replicas=0", "replicas"),
    ("replicas=100000000000", "replicas"),
    ("replicas=many", "replicas"),
    ("name=Bad%20Name%3Cscript%3E", "name"),
    ("name=" + "x" * 500, "name"),
])
def test_unknown_prefill_values_are_ignored_with_a_note(client, operator, node, profile, query, field):
    client.force_login(operator)
    response = client.get(f"/deployments/new/?{query}")
    assert response.status_code == 200
    page = response.content.decode()
    notes = page[page.index('id="prefill-notes"'):]
    notes = notes[:notes.index("</div>")]
    assert f"Ignored {field}=" in notes
    assert "<script>" not in page.split('id="prefill-notes"')[1].split("</div>")[0]
    assert [o["value"] for o in picker(page).options if o["selected"]] == [""]
    if field == "replicas":
        assert value_of(page, "replicas") == "1"


def test_a_profile_of_a_gpu_model_not_in_the_fleet_is_ignored_with_a_note(client, operator, node, profile):
    other = ModelProfile.objects.get(model=profile.model, precision=profile.precision, gpu_model="MI325X",
                                     context_tokens=8192, concurrent_sequences=1)
    client.force_login(operator)
    page = client.get(f"/deployments/new/?profile={other.pk}").content.decode()
    assert "no MI325X GPU in the fleet" in page
    assert [o["value"] for o in picker(page).options if o["selected"]] == [""]


# --- custom context length and concurrency --------------------------------------------------

def test_the_api_sizes_a_deployment_for_its_context_and_concurrency(api_client_for, operator, node, profile):
    response = api_client_for(operator).post("/api/v1/deployments/", {
        "name": "long-chat", "profile": profile.pk, "replicas": 1, "context_tokens": 32768, "concurrent_sequences": 4,
    }, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["context_tokens"], body["concurrent_sequences"]) == (32768, 4)
    # KV cache: 32768 tokens x 4 sequences x 32 layers x (2 x 8 x 128) x 2 B = 16 GiB.
    used = ModelProfile.objects.get(pk=body["profile"])
    assert used.kv_cache_gb == pytest.approx(16.0, abs=0.01)
    assert body["memory_required_gb"] == pytest.approx(used.memory_required_gb)
    assert body["sizing_snapshot"]["kv_cache_gb"] == pytest.approx(16.0, abs=0.01)
    args = body["workloads"][0]["args"]
    assert args[args.index("--max-model-len") + 1] == "32768"
    assert args[args.index("--max-num-seqs") + 1] == "4"


def test_a_default_profile_leaves_the_engines_batch_limit(api_client_for, operator, node, profile):
    response = api_client_for(operator).post("/api/v1/deployments/", {"name": "chat", "profile": profile.pk, "replicas": 1},
                                             format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["profile"] == profile.pk
    assert "--max-num-seqs" not in response.json()["workloads"][0]["args"]


@pytest.mark.parametrize("extra, field", [
    ({"context_tokens": 0}, "context_tokens"),
    ({"context_tokens": 131073}, "context_tokens"),
    ({"context_tokens": "lots"}, "context_tokens"),
    ({"concurrent_sequences": 0}, "concurrent_sequences"),
    ({"concurrent_sequences": 10**9}, "concurrent_sequences"),
])
def test_the_api_and_the_page_refuse_the_same_bad_sizing_input(api_client_for, client, operator, node, profile, extra, field):
    before = ModelProfile.objects.count()
    response = api_client_for(operator).post("/api/v1/deployments/", {"name": "chat", "profile": profile.pk, "replicas": 1, **extra},
                                             format="json")
    assert response.status_code == 400
    api_message = str(response.json())
    client.force_login(operator)
    page = client.post("/deployments/new/", {"name": "chat", "profile": str(profile.pk), "replicas": "1", "priority": "0",
                                             **{k: str(v) for k, v in extra.items()}})
    assert page.status_code == 400
    assert f'id="{field}-error"' in page.content.decode()
    assert field in api_message
    assert ModelProfile.objects.count() == before and not Deployment.objects.exists()


def test_a_concurrency_no_layout_holds_is_refused_with_the_sizing_message(api_client_for, operator, node, profile):
    response = api_client_for(operator).post("/api/v1/deployments/", {
        "name": "chat", "profile": profile.pk, "replicas": 1, "context_tokens": 131072, "concurrent_sequences": 65536,
    }, format="json")
    assert response.status_code == 400
    assert "cannot size" in str(response.json()["concurrent_sequences"] if "concurrent_sequences" in response.json()
                                else response.json())


def test_the_page_places_a_custom_context_deployment(client, operator, node, profile):
    client.force_login(operator)
    response = client.post("/deployments/new/", {"name": "long", "profile": str(profile.pk), "replicas": "1", "priority": "0",
                                                 "context_tokens": "65536", "concurrent_sequences": "2"})
    assert response.status_code == 302, response.content.decode()[:3000]
    deployment = Deployment.objects.get(name="long")
    assert (deployment.profile.context_tokens, deployment.profile.concurrent_sequences) == (65536, 2)
    assert deployment.profile.model_id == profile.model_id and deployment.profile.precision_id == profile.precision_id
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "--max-model-len 65536" in page and "--max-num-seqs 2" in page

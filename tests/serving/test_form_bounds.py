"""The deployment form and the API share one validation path (issue 13, §1): out-of-range
replicas and unusable names are field errors before placement runs and before anything is
written, and a demand that does not fit answers with its reasons counted, not repeated."""

from __future__ import annotations

import html
import re

import pytest

from models.models import ModelProfile
from planning import placement
from planning.placement.reasons import ReasonCount, count_reasons
from serving.models import Deployment, DeploymentSlot
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db

LLAMA8_FP16 = ("meta-llama/Llama-3.1-8B-Instruct", "fp16")  # ~19.5 GiB: one per SPX GPU of two
DEEPSEEK_V3_FP16 = ("deepseek-ai/DeepSeek-V3", "fp16")      # more than any one MI300X holds


def profile_pk(hf_id: str = LLAMA8_FP16[0], precision: str = LLAMA8_FP16[1]) -> int:
    return ModelProfile.objects.get(model__hf_id=hf_id, precision__code=precision, gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1).pk


def form(**overrides: str) -> dict[str, str]:
    return {"name": "llama8", "profile": str(profile_pk()), "replicas": "1", "priority": "0", "pin_node": "", **overrides}


@pytest.fixture
def node(tmp_path, catalog):  # type: ignore[no-untyped-def]
    return make_emulated_node(tmp_path, "emu-1", gpus=2)


@pytest.fixture
def place_calls(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """Counts calls to the placement engine; each call still runs the real one."""
    real_place = placement.place
    calls: list[int] = []

    def place(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_place(*args, **kwargs)

    monkeypatch.setattr(placement, "place", place)
    return calls


def field_error(page: str, field: str) -> str:
    """The text of the error shown next to ``field``'s input ('' when there is none)."""
    match = re.search(rf'<[^>]+id="{field}-error"[^>]*>(.*?)</', page, re.S)
    return html.unescape(match.group(1)).strip() if match else ""


def input_tag(page: str, field: str) -> str:
    match = re.search(rf'<(?:input|select)[^>]*name="{field}"[^>]*>', page)
    assert match, f"no {field} input on the page"
    return match.group(0)


BAD_NAMES = [
    pytest.param("llama 8", id="space"),
    pytest.param("<script>alert(1)</script>", id="script"),
    pytest.param("llama-\N{ROCKET}", id="emoji"),
    pytest.param("llama\N{RIGHT-TO-LEFT OVERRIDE}8b", id="rtl-override"),
    pytest.param("x" * 200, id="200-chars"),
]


@pytest.mark.parametrize("replicas", ["1000000000", "99999"])
def test_the_page_refuses_too_many_replicas_as_a_field_error_before_placing(client, operator, node, place_calls, replicas):
    client.force_login(operator)
    response = client.post("/deployments/new/", form(replicas=replicas))
    assert response.status_code == 400
    page = response.content.decode()
    assert "1024" in field_error(page, "replicas"), page
    assert 'aria-invalid="true"' in input_tag(page, "replicas")
    assert place_calls == []
    assert Deployment.objects.count() == 0 and DeploymentSlot.objects.count() == 0


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_page_refuses_an_unusable_name_as_a_field_error(client, operator, node, place_calls, name):
    client.force_login(operator)
    response = client.post("/deployments/new/", form(name=name))
    assert response.status_code == 400
    page = response.content.decode()
    assert field_error(page, "name"), page
    assert 'aria-invalid="true"' in input_tag(page, "name")
    assert "<script>alert(1)" not in page
    assert place_calls == []
    assert Deployment.objects.count() == 0


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_api_refuses_an_unusable_name_as_a_field_error(api_client_for, operator, node, place_calls, name):
    response = api_client_for(operator).post("/api/v1/deployments/", {"name": name, "profile": profile_pk(), "replicas": 1},
                                             format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["detail"]["name"]
    assert place_calls == []
    assert Deployment.objects.count() == 0


@pytest.mark.parametrize("replicas", [1_000_000_000, 99999])
def test_the_api_refuses_too_many_replicas_before_placing(api_client_for, operator, node, place_calls, replicas):
    response = api_client_for(operator).post("/api/v1/deployments/", {"name": "llama8", "profile": profile_pk(),
                                                                       "replicas": replicas}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"]["replicas"]
    assert place_calls == []
    assert Deployment.objects.count() == 0


# What a refusal may add to the empty form (whose profile list is most of the page).
CONFLICT_BYTES = 4_000


def test_the_page_shows_an_unplaceable_reason_once_with_its_count(client, operator, node):
    client.force_login(operator)
    empty_form = len(client.get("/deployments/new/").content)
    response = client.post("/deployments/new/", form(name="deepseek", profile=str(profile_pk(*DEEPSEEK_V3_FP16)), replicas="8"))
    assert response.status_code == 409
    assert len(response.content) < empty_form + CONFLICT_BYTES
    listed = re.search(r'<ul id="conflict-reasons">(.*?)</ul>', response.content.decode(), re.S)
    assert listed, "no list of reasons on the page"
    reasons = [html.unescape(i).strip() for i in re.findall(r"<li>(.*?)</li>", listed.group(1), re.S)]
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith("8 of 8 replicas: ")
    assert Deployment.objects.count() == 0


def test_the_page_stays_small_for_many_unplaceable_replicas(client, operator, node):
    client.force_login(operator)
    empty_form = len(client.get("/deployments/new/").content)
    response = client.post("/deployments/new/", form(name="deepseek", profile=str(profile_pk(*DEEPSEEK_V3_FP16)),
                                                     replicas="1024"))
    assert response.status_code == 409
    assert len(response.content) < empty_form + CONFLICT_BYTES
    assert response.content.decode().count("1024 of 1024 replicas: ") == 1


def test_the_apis_409_counts_each_reason_once(api_client_for, operator, node):
    response = api_client_for(operator).post("/api/v1/deployments/", {
        "name": "deepseek", "profile": profile_pk(*DEEPSEEK_V3_FP16), "replicas": 1024}, format="json")
    assert response.status_code == 409
    assert len(response.content) < 20_000
    body = response.json()
    assert body["code"] == "unplaceable"
    (reason,) = body["detail"]["reasons"]
    assert reason.startswith("1024 of 1024 replicas: ")
    (summary,) = body["detail"]["reasons_summary"]
    assert summary["replicas"] == 1024 and summary["of"] == 1024
    assert reason.endswith(summary["reason"])
    assert body["message"].count(summary["reason"]) == 1
    assert {"excluded", "suggested_plan"} <= body["detail"].keys()


def test_a_partial_fit_counts_only_the_unplaced_replicas(client, operator, node):
    """Two SPX GPUs hold two of three replicas; the page says so once."""
    client.force_login(operator)
    response = client.post("/deployments/new/", form(replicas="3", spread="on"))
    assert response.status_code == 409
    assert response.content.decode().count("1 of 3 replicas: ") == 1
    assert Deployment.objects.count() == 0


@pytest.mark.parametrize("reasons, of, expected", [
    ([], 3, ()),
    (["a"] * 5 + ["b"] * 3, 8, (ReasonCount("a", 5, 8), ReasonCount("b", 3, 8))),
    (["b", "a", "a", "b", "c"], 5, (ReasonCount("b", 2, 5), ReasonCount("a", 2, 5), ReasonCount("c", 1, 5))),
    (["a"], 4, (ReasonCount("a", 1, 4),)),
    (["a", "a"], 1, (ReasonCount("a", 2, 2),)),  # never "2 of 1"
])
def test_count_reasons_groups_identical_reasons_most_frequent_first(reasons, of, expected):
    assert count_reasons(reasons, of=of) == expected


def test_count_reasons_folds_the_long_tail_into_one_line():
    counted = count_reasons([f"r{i}" for i in range(100)] + ["r0"], of=101, limit=5)
    assert [str(c) for c in counted] == ["2 of 101 replicas: r0", "1 of 101 replicas: r1", "1 of 101 replicas: r2",
                                         "1 of 101 replicas: r3", "96 of 101 replicas: 96 other reasons"]


def test_one_replica_reads_in_the_singular():
    assert str(ReasonCount("needs 200 GiB", 1, 1)) == "1 of 1 replica: needs 200 GiB"

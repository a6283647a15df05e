"""Bad input to the catalog API gets a clear 400 and changes nothing: deep JSON, numbers the
database or the sizing cannot hold, pagination and filter parameters out of range, unknown
fields. Every catalog list is paginated and needs a role."""

from __future__ import annotations

import pytest

from models.models import InferenceModel, ModelProfile
from tests.models.test_api import NEW_MODEL

pytestmark = pytest.mark.django_db
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def _patch(client, model, body):  # type: ignore[no-untyped-def]
    etag = client.get(f"/api/v1/models/{model.pk}/")["ETag"]
    return client.patch(f"/api/v1/models/{model.pk}/", body, format="json", HTTP_IF_MATCH=etag)


# --- deep JSON ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000])
def test_a_deeply_nested_body_is_a_400(api_client_for, catalog, admin_user, depth):
    body = '{"hf_id": "acme/Deep", "notes": ' + "[" * depth + "]" * depth + "}"
    response = api_client_for(admin_user).generic("POST", "/api/v1/models/", body, content_type="application/json")
    assert response.status_code == 400
    assert "nested deeper than" in response.json()["message"]
    assert not InferenceModel.objects.filter(hf_id="acme/Deep").exists()


# --- numbers the catalog cannot hold -------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("context_length", 2**40), ("num_layers", 10**6), ("num_attention_heads", 10**5), ("num_kv_heads", 10**5),
    ("head_dim", 10**9), ("total_params_b", 1e308), ("total_params_b", "NaN"), ("total_params_b", "Infinity"),
    ("context_length", 2**70),
])
def test_out_of_range_numbers_are_refused_and_change_nothing(api_client_for, catalog, admin_user, field, value):
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id=LLAMA)
    profiles_before = list(ModelProfile.objects.filter(model=model).values_list("id", "memory_required_gb"))
    response = _patch(client, model, {field: value})
    assert response.status_code == 400, response.json()
    assert field in response.json()["detail"] and response.json()["message"].startswith(field)
    model.refresh_from_db()
    assert (model.context_length, model.num_layers, model.total_params_b) == (131072, 32, 8.03)
    assert list(ModelProfile.objects.filter(model=model).values_list("id", "memory_required_gb")) == profiles_before


def test_a_profile_with_a_context_beyond_any_model_is_refused(api_client_for, catalog, admin_user):
    payload = {"model": LLAMA, "precision": "fp16", "gpu": "MI300X", "context_tokens": 2**40, "concurrent_sequences": 1}
    response = api_client_for(admin_user).post("/api/v1/profiles/", payload, format="json")
    assert response.status_code == 400 and "context_tokens" in response.json()["detail"]


def test_the_limits_are_stated_in_the_schema(client, viewer):
    client.force_login(viewer)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    model = schema["components"]["schemas"]["PatchedInferenceModelRequest"]["properties"]
    assert model["context_length"]["maximum"] == InferenceModel._meta.get_field("context_length").validators[-1].limit_value
    for name in ("num_layers", "num_attention_heads", "num_kv_heads", "head_dim", "kv_lora_rank", "qk_rope_head_dim",
                 "total_params_b"):
        assert "maximum" in model[name], name
    limit = next(p for p in schema["paths"]["/api/v1/models/"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000 and limit["schema"]["minimum"] == 1


# --- pagination -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("params, name", [
    ({"limit": "99999999999999999999999"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "-1"}, "limit"),
    ({"limit": "0"}, "limit"), ({"limit": "1.5"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"limit": "10", "offset": "-5"}, "offset"), ({"offset": str(2**70)}, "offset"),
    ({"limit": str(2**70), "offset": "-1"}, "limit"),
])
def test_pagination_parameters_out_of_range_are_a_400_naming_them(api_client_for, catalog, viewer, params, name):
    response = api_client_for(viewer).get("/api/v1/profiles/", params)
    assert response.status_code == 400
    assert response.json()["message"].startswith(name)


def test_pagination_within_range_works(api_client_for, catalog, viewer):
    body = api_client_for(viewer).get("/api/v1/profiles/", {"limit": "1000", "offset": "3"}).json()
    assert len(body["results"]) == min(1000, body["count"] - 3)
    assert api_client_for(viewer).get("/api/v1/profiles/", {"limit": "", "offset": ""}).status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/models/", "/api/v1/profiles/", "/api/v1/precisions/"])
def test_every_catalog_list_is_paginated(api_client_for, catalog, viewer, path):
    body = api_client_for(viewer).get(path, {"limit": 2}).json()
    assert set(body) == {"count", "next", "previous", "results"} and len(body["results"]) == 2


@pytest.mark.parametrize("path", ["/api/v1/models/", "/api/v1/profiles/", "/api/v1/precisions/", "/api/v1/gpu-specs/"])
def test_a_user_without_a_role_is_refused_every_catalog_list(api_client_for, catalog, norole, path):
    assert api_client_for(norole).get(path).status_code == 403


# --- filters ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params, name", [
    ({"context_tokens": "1180591620717411303424"}, "context_tokens"), ({"context_tokens": "1.5"}, "context_tokens"),
    ({"context_tokens": "1e3"}, "context_tokens"), ({"gpus_needed": "abc"}, "gpus_needed"),
    ({"concurrent_sequences": str(-(2**64))}, "concurrent_sequences"),
])
def test_integer_filters_refuse_junk_floats_and_out_of_range_values(api_client_for, catalog, viewer, params, name):
    response = api_client_for(viewer).get("/api/v1/profiles/", params)
    assert response.status_code == 400
    assert response.json()["message"].startswith(name)


def test_integer_filters_within_range_work(api_client_for, catalog, viewer):
    response = api_client_for(viewer).get("/api/v1/profiles/", {"context_tokens": "8192", "gpus_needed": "1", "limit": 1})
    assert response.status_code == 200 and response.json()["count"] > 0


# --- unknown fields ------------------------------------------------------------------------------------------

def test_creating_a_model_with_an_unknown_field_is_refused_naming_it(api_client_for, catalog, admin_user):
    response = api_client_for(admin_user).post("/api/v1/models/", {**NEW_MODEL, "contxt_length": 8192}, format="json")
    assert response.status_code == 400
    assert response.json()["message"].startswith("contxt_length") and "contxt_length" in response.json()["detail"]
    assert not InferenceModel.objects.filter(hf_id=NEW_MODEL["hf_id"]).exists()


def test_patching_an_unknown_field_is_refused_and_changes_nothing(api_client_for, catalog, admin_user):
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id=LLAMA)
    response = _patch(client, model, {"notes": "changed", "bogus": 1})
    assert response.status_code == 400 and "bogus" in response.json()["detail"]
    model.refresh_from_db()
    assert model.notes != "changed"


def test_a_profile_with_an_unknown_field_is_refused(api_client_for, catalog, admin_user):
    payload = {"model": LLAMA, "precision": "fp16", "gpu": "MI300X", "context_tokens": 4096, "replicas": 3}
    response = api_client_for(admin_user).post("/api/v1/profiles/", payload, format="json")
    assert response.status_code == 400 and "replicas" in response.json()["detail"]


def test_read_only_fields_sent_back_are_ignored(api_client_for, catalog, admin_user):
    """A client may PUT back what it read: known read-only fields are not unknown."""
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id=LLAMA)
    current = client.get(f"/api/v1/models/{model.pk}/")
    response = client.put(f"/api/v1/models/{model.pk}/", {**current.json(), "notes": "round trip"}, format="json",
                          HTTP_IF_MATCH=current["ETag"])
    assert response.status_code == 200, response.json()

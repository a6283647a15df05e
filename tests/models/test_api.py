"""Catalog API: read for every signed-in role, write for admins only, filters, validation."""

from __future__ import annotations

import pytest

from models.models import InferenceModel, ModelProfile

pytestmark = pytest.mark.django_db

NEW_MODEL = {
    "hf_id": "acme/Tiny-2B",
    "name": "Tiny 2B",
    "vendor": "Acme",
    "family": "Tiny",
    "architecture": "dense",
    "modality": "text",
    "total_params_b": 2.0,
    "context_length": 4096,
    "num_layers": 24,
    "num_attention_heads": 16,
    "attention": "gqa",
    "num_kv_heads": 4,
    "head_dim": 128,
    "precisions": ["fp16", "int4"],
}


@pytest.mark.parametrize("path", ["/api/v1/models/", "/api/v1/profiles/", "/api/v1/gpu-specs/", "/api/v1/precisions/"])
def test_anonymous_requests_are_refused(api_client_for, catalog, path):
    response = api_client_for(None).get(path)
    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize("role", ["viewer", "operator", "admin_user"])
@pytest.mark.parametrize("path", ["/api/v1/models/", "/api/v1/profiles/", "/api/v1/gpu-specs/", "/api/v1/gpu-specs/MI300X/"])
def test_every_role_reads_the_catalog(request, api_client_for, catalog, role, path):
    response = api_client_for(request.getfixturevalue(role)).get(path)
    assert response.status_code == 200


def test_a_user_without_role_cannot_read_the_catalog(api_client_for, catalog, norole):
    assert api_client_for(norole).get("/api/v1/models/").status_code == 403


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_viewers_and_operators_cannot_write_the_catalog(request, api_client_for, catalog, role):
    client = api_client_for(request.getfixturevalue(role))
    model = InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")
    assert client.post("/api/v1/models/", NEW_MODEL, format="json").status_code == 403
    assert client.patch(f"/api/v1/models/{model.pk}/", {"context_length": 1}, format="json").status_code == 403
    assert client.delete(f"/api/v1/models/{model.pk}/").status_code == 403
    assert not InferenceModel.objects.filter(hf_id=NEW_MODEL["hf_id"]).exists()
    model.refresh_from_db()
    assert model.context_length == 131072


def test_admin_creates_a_model_and_its_profiles_appear(api_client_for, catalog, admin_user):
    response = api_client_for(admin_user).post("/api/v1/models/", NEW_MODEL, format="json")
    assert response.status_code == 201, response.json()
    profiles = ModelProfile.objects.filter(model__hf_id="acme/Tiny-2B")
    # 2 precisions x 6 GPU models, default context (8192 tokens capped at its 4096) and concurrency
    assert profiles.count() == 12
    assert set(profiles.values_list("context_tokens", "concurrent_sequences")) == {(4096, 1)}


def test_profiles_follow_a_change_of_sizing_inputs(api_client_for, catalog, admin_user):
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")
    before = ModelProfile.objects.get(model=model, precision__code="fp16", gpu_model="MI300X", context_tokens=8192)
    response = client.patch(f"/api/v1/models/{model.pk}/", {"total_params_b": 16.06}, format="json",
                            HTTP_IF_MATCH=client.get(f"/api/v1/models/{model.pk}/")["ETag"])
    assert response.status_code == 200, response.json()
    after = ModelProfile.objects.get(pk=before.pk)
    # Weights double: 8.03e9*2 B -> 16.06e9*2 B, i.e. +14.96 GiB, plus 10% overhead on it.
    assert after.weights_gb == pytest.approx(2 * before.weights_gb, rel=1e-3)
    assert after.memory_required_gb > before.memory_required_gb + 14.9


@pytest.mark.parametrize(
    "change, field",
    [
        ({"total_params_b": -1}, "total_params_b"),
        ({"context_length": 0}, "context_length"),
        ({"architecture": "moe", "active_params_b": 99.0}, "active_params_b"),
        ({"attention": "mla"}, "kv_lora_rank"),
        ({"precisions": ["fp64"]}, "precisions"),
    ],
)
def test_invalid_model_writes_are_refused_and_change_nothing(api_client_for, catalog, admin_user, change, field):
    client = api_client_for(admin_user)
    model = InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")
    profiles_before = list(ModelProfile.objects.filter(model=model).values_list("id", "memory_required_gb"))
    response = client.patch(f"/api/v1/models/{model.pk}/", change, format="json",
                            HTTP_IF_MATCH=client.get(f"/api/v1/models/{model.pk}/")["ETag"])
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert field in body["detail"]
    assert body["message"]
    model.refresh_from_db()
    assert model.total_params_b == 8.03 and model.context_length == 131072 and model.attention == "gqa"
    assert list(ModelProfile.objects.filter(model=model).values_list("id", "memory_required_gb")) == profiles_before


def test_profile_filters_by_model_precision_and_gpu(api_client_for, catalog, viewer):
    response = api_client_for(viewer).get(
        "/api/v1/profiles/", {"model": "meta-llama/Llama-3.1-8B-Instruct", "precision": "fp16", "gpu": "MI300X"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    profile = body["results"][0]
    assert profile["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert profile["precision"] == "fp16"
    assert profile["gpu"] == "MI300X"
    assert isinstance(profile["memory_required_gb"], float)
    assert profile["fits"] == {"SPX": True, "DPX": True, "QPX": True, "CPX": True}
    assert profile["smallest_partition"] == "CPX"
    assert profile["gpus_needed"] == 1


def test_a_671b_model_is_not_sized_like_a_small_one(api_client_for, catalog, viewer):
    body = api_client_for(viewer).get(
        "/api/v1/profiles/", {"model": "deepseek-ai/DeepSeek-V3", "precision": "fp8", "gpu": "MI300X"}
    ).json()
    profile = body["results"][0]
    assert profile["memory_required_gb"] > 600
    assert profile["smallest_partition"] is None
    assert not any(profile["fits"].values())
    assert profile["gpus_needed"] >= 4


def test_unknown_filter_value_is_a_clear_error(api_client_for, catalog, viewer):
    response = api_client_for(viewer).get("/api/v1/profiles/", {"gpu": "H100"})
    assert response.status_code == 400
    assert "gpu" in response.json()["detail"]


def test_admin_adds_a_long_context_profile(api_client_for, catalog, admin_user):
    client = api_client_for(admin_user)
    payload = {"model": "meta-llama/Llama-3.1-8B-Instruct", "precision": "fp16", "gpu": "MI300X",
               "context_tokens": 131072, "concurrent_sequences": 1}
    response = client.post("/api/v1/profiles/", payload, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    # 131072 tokens x 128 KiB per token = 16 GiB of KV cache (README worked example).
    assert body["kv_cache_gb"] == pytest.approx(16.0, abs=0.001)
    assert body["fits"]["CPX"] is False and body["fits"]["QPX"] is True
    assert body["smallest_partition"] == "QPX"
    duplicate = client.post("/api/v1/profiles/", payload, format="json")
    assert duplicate.status_code == 400


def test_profile_for_a_precision_the_model_is_not_offered_in_is_refused(api_client_for, catalog, admin_user):
    model = InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")
    model.model_precisions.filter(precision__code="int4").delete()
    response = api_client_for(admin_user).post(
        "/api/v1/profiles/",
        {"model": model.hf_id, "precision": "int4", "gpu": "MI300X", "context_tokens": 4096},
        format="json",
    )
    assert response.status_code == 400
    assert "not offered in int4" in response.json()["message"]


def test_profile_list_uses_a_fixed_number_of_queries(api_client_for, catalog, viewer, django_assert_max_num_queries):
    client = api_client_for(viewer)
    with django_assert_max_num_queries(4):
        small = client.get("/api/v1/profiles/", {"limit": 5})
    with django_assert_max_num_queries(4):
        large = client.get("/api/v1/profiles/", {"limit": 200})
    assert len(small.json()["results"]) == 5 and len(large.json()["results"]) == 200


def test_gpu_specs_list_every_model_with_its_layouts(api_client_for, viewer):
    body = api_client_for(viewer).get("/api/v1/gpu-specs/").json()["results"]
    assert [spec["model"] for spec in body] == ["MI300X", "MI325X", "MI300A", "MI308X", "MI350X", "MI355X", "MI350P"]
    mi300x = body[0]
    cpx = [layout for layout in mi300x["layouts"] if layout["compute_mode"] == "CPX"]
    assert {(l["memory_mode"], l["count"], l["memory_gb"]) for l in cpx} == {("NPS1", 8, 24.0), ("NPS4", 8, 24.0)}


def test_unknown_gpu_spec_is_404_naming_the_known_ones(api_client_for, viewer):
    response = api_client_for(viewer).get("/api/v1/gpu-specs/H100/")
    assert response.status_code == 404
    assert "MI300X" in response.json()["message"]


def test_token_authentication_works(client, catalog, viewer):
    from aimconsole.services import create_token

    _, key = create_token(user=viewer, name="ci")
    response = client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200
    assert response.json()["count"] == 37


def test_openapi_schema_is_served_to_signed_in_users(client, viewer):
    client.force_login(viewer)
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/v1/models/", "/api/v1/profiles/", "/api/v1/gpu-specs/"} <= set(paths)


def test_a_profile_that_cannot_be_sized_is_a_clear_400(api_client_for, catalog, admin_user):
    # Llama 4 Scout's 10M-token context x 64 sequences needs more than MAX_GPUS GPUs of KV cache.
    payload = {"model": "meta-llama/Llama-4-Scout-17B-16E-Instruct", "precision": "fp16", "gpu": "MI300X",
               "context_tokens": 10485760, "concurrent_sequences": 64}
    response = api_client_for(admin_user).post("/api/v1/profiles/", payload, format="json")
    assert response.status_code == 400, response.json()
    assert "cannot size this profile" in response.json()["message"]
    assert not ModelProfile.objects.filter(context_tokens=10485760).exists()

"""Django admin for the catalog: validation, inline precisions, computed fit table."""

from __future__ import annotations

import pytest

from models.models import InferenceModel, ModelProfile, Precision

pytestmark = pytest.mark.django_db


def _form_data(model: InferenceModel, **changes) -> dict:  # type: ignore[no-untyped-def]
    precisions = list(model.model_precisions.all())
    data = {
        "hf_id": model.hf_id, "upstream_id": model.upstream_id, "name": model.name,
        "vendor": model.vendor, "family": model.family, "modality": model.modality,
        "notes": model.notes, "architecture": model.architecture,
        "total_params_b": model.total_params_b, "active_params_b": model.active_params_b or "",
        "context_length": model.context_length, "num_layers": model.num_layers,
        "num_attention_heads": model.num_attention_heads or "", "attention": model.attention,
        "num_kv_heads": model.num_kv_heads or "", "head_dim": model.head_dim or "",
        "kv_lora_rank": model.kv_lora_rank or "", "qk_rope_head_dim": model.qk_rope_head_dim or "",
        "native_precision": model.native_precision, "config_confidence": model.config_confidence,
        "model_precisions-TOTAL_FORMS": len(precisions), "model_precisions-INITIAL_FORMS": len(precisions),
        "model_precisions-MIN_NUM_FORMS": 1, "model_precisions-MAX_NUM_FORMS": 1000,
    }
    for i, mp in enumerate(precisions):
        data[f"model_precisions-{i}-id"] = mp.pk
        data[f"model_precisions-{i}-model"] = model.pk
        data[f"model_precisions-{i}-precision"] = mp.precision_id
    data.update(changes)
    return data


@pytest.fixture
def llama(catalog):  # type: ignore[no-untyped-def]
    return InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")


def test_admin_change_page_shows_the_read_only_fit_table(client, admin_user, llama):
    client.force_login(admin_user)
    response = client.get(f"/admin/catalog/inferencemodel/{llama.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Fit per GPU model" in html
    assert "MI300X" in html and "CPX: 8" in html


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"total_params_b": "0"}, "greater than or equal to 0.001"),
        ({"context_length": "0"}, "greater than or equal to 1"),
        ({"architecture": "moe", "active_params_b": "9.5"}, "cannot exceed total parameters"),
        ({"attention": "mla"}, "Required for multi-head latent attention"),
    ],
)
def test_admin_refuses_invalid_sizes_and_saves_nothing(client, admin_user, llama, changes, message):
    client.force_login(admin_user)
    before = list(ModelProfile.objects.filter(model=llama).values_list("id", "memory_required_gb"))
    response = client.post(f"/admin/catalog/inferencemodel/{llama.pk}/change/", _form_data(llama, **changes))
    assert response.status_code == 200  # the form again, with errors
    assert message in response.content.decode()
    llama.refresh_from_db()
    assert (llama.total_params_b, llama.context_length, llama.attention) == (8.03, 131072, "gqa")
    assert list(ModelProfile.objects.filter(model=llama).values_list("id", "memory_required_gb")) == before


def test_admin_save_recomputes_profiles_and_inline_precisions(client, admin_user, llama):
    client.force_login(admin_user)
    data = _form_data(llama, total_params_b="16.06")
    # Drop the int4 precision through the inline.
    index = [i for i, mp in enumerate(llama.model_precisions.all()) if mp.precision.code == "int4"][0]
    data[f"model_precisions-{index}-DELETE"] = "on"
    response = client.post(f"/admin/catalog/inferencemodel/{llama.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    profiles = ModelProfile.objects.filter(model=llama)
    assert not profiles.filter(precision__code="int4").exists()
    fp16 = profiles.get(precision__code="fp16", gpu_model="MI300X", context_tokens=8192)
    assert fp16.weights_gb == pytest.approx(16.06e9 * 2 / 2**30, rel=1e-3)


def test_a_viewer_cannot_reach_the_admin(client, viewer):
    client.force_login(viewer)
    response = client.get("/admin/catalog/inferencemodel/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_precision_edit_in_admin_recomputes_profiles(client, admin_user, llama):
    client.force_login(admin_user)
    int8 = Precision.objects.get(code="int8")
    response = client.post(
        f"/admin/catalog/precision/{int8.pk}/change/",
        {"code": "int8", "label": int8.label, "bytes_per_weight": "2.00", "description": "", "sort_order": int8.sort_order},
    )
    assert response.status_code == 302
    int8_profile = ModelProfile.objects.get(model=llama, precision=int8, gpu_model="MI300X", context_tokens=8192)
    fp16_profile = ModelProfile.objects.get(model=llama, precision__code="fp16", gpu_model="MI300X", context_tokens=8192)
    assert int8_profile.memory_required_gb == pytest.approx(fp16_profile.memory_required_gb)


def test_admin_refuses_a_profile_that_cannot_be_sized(client, admin_user, catalog):
    client.force_login(admin_user)
    scout = InferenceModel.objects.get(hf_id="meta-llama/Llama-4-Scout-17B-16E-Instruct")
    response = client.post(
        "/admin/catalog/modelprofile/add/",
        {"model": scout.pk, "precision": Precision.objects.get(code="fp16").pk, "gpu_model": "MI300X",
         "context_tokens": 10485760, "concurrent_sequences": 64},
    )
    assert response.status_code == 200
    assert "cannot size this profile" in response.content.decode()
    assert not ModelProfile.objects.filter(context_tokens=10485760).exists()


def test_admin_adds_a_custom_profile_with_computed_results(client, admin_user, catalog):
    client.force_login(admin_user)
    llama = InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")
    response = client.post(
        "/admin/catalog/modelprofile/add/",
        {"model": llama.pk, "precision": Precision.objects.get(code="fp16").pk, "gpu_model": "MI300X",
         "context_tokens": 131072, "concurrent_sequences": 1},
    )
    assert response.status_code == 302
    profile = ModelProfile.objects.get(model=llama, context_tokens=131072, gpu_model="MI300X", precision__code="fp16")
    assert profile.smallest_partition == "QPX"

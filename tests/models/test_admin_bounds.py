"""Django admin refuses implausible sizing inputs, and inputs that cannot be sized, as field
errors on the form (200, nothing saved), never a 500 (issue 13, §1)."""

from __future__ import annotations

import pytest
from django.test import Client

from models.models import MAX_PARAMS_B, InferenceModel, ModelProfile, Precision
from tests.models.test_admin import _form_data

pytestmark = pytest.mark.django_db

LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"  # dense, GQA: 32 layers, 32 heads, 8 KV heads of 128


@pytest.fixture
def superuser(db, django_user_model):  # type: ignore[no-untyped-def]
    return django_user_model.objects.create_superuser(username="root", password="pw-root", email="root@example.com")


@pytest.fixture
def admin_client(superuser) -> Client:  # type: ignore[no-untyped-def]
    # A 500 comes back as a response (as a browser would see it), not as an exception.
    client = Client(raise_request_exception=False)
    client.force_login(superuser)
    return client


@pytest.fixture
def llama(catalog) -> InferenceModel:  # type: ignore[no-untyped-def]
    return InferenceModel.objects.get(hf_id=LLAMA8)


def saved_state(model: InferenceModel) -> tuple:
    row = InferenceModel.objects.filter(pk=model.pk).values().get()
    profiles = list(ModelProfile.objects.filter(model=model).order_by("pk").values_list(
        "pk", "precision_id", "gpu_model", "memory_required_gb", "gpus_needed", "computed_at"))
    return tuple(sorted((k, v) for k, v in row.items() if k != "updated_at")), profiles


def form_errors(response) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    return {field: [str(m) for m in messages] for field, messages in response.context["adminform"].form.errors.items()}


@pytest.mark.parametrize("changes, field, message", [
    pytest.param({"total_params_b": "100000"}, "total_params_b", "less than or equal to", id="100000B-parameters"),
    pytest.param({"architecture": "moe", "total_params_b": "500", "active_params_b": "100000"}, "active_params_b",
                 "less than or equal to", id="100000B-active"),
    pytest.param({"num_kv_heads": "100000"}, "num_kv_heads", "less than or equal to", id="100000-kv-heads"),
    pytest.param({"num_kv_heads": "1000"}, "num_kv_heads", "multiple of num_kv_heads", id="more-kv-heads-than-heads"),
    pytest.param({"num_attention_heads": "36"}, "num_attention_heads", "multiple of num_kv_heads",
                 id="heads-not-a-multiple-of-kv-heads"),
    pytest.param({"num_layers": "100000"}, "num_layers", "less than or equal to", id="100000-layers"),
    pytest.param({"context_length": str(10**14)}, "context_length", "less than or equal to", id="context-1e14"),
    pytest.param({"head_dim": "100000"}, "head_dim", "less than or equal to", id="huge-head-dim"),
    pytest.param({"total_params_b": "5000", "num_layers": "2"}, "total_params_b", "cannot be sized",
                 id="too-big-for-any-layout"),
])
def test_the_model_admin_refuses_implausible_sizes_as_field_errors(admin_client, llama, changes, field, message):
    before = saved_state(llama)
    response = admin_client.post(f"/admin/catalog/inferencemodel/{llama.pk}/change/", _form_data(llama, **changes))
    assert response.status_code == 200
    errors = form_errors(response)
    assert field in errors, errors
    assert any(message in m for m in errors[field]), errors
    assert message in response.content.decode()
    assert saved_state(llama) == before


def test_the_parameter_bound_states_its_unit(admin_client, llama):
    response = admin_client.post(f"/admin/catalog/inferencemodel/{llama.pk}/change/",
                                 _form_data(llama, total_params_b=str(MAX_PARAMS_B * 10)))
    assert response.status_code == 200
    assert f"{MAX_PARAMS_B:g}" in " ".join(form_errors(response)["total_params_b"])


def test_a_new_model_that_cannot_be_sized_is_refused_and_not_created(admin_client, llama):
    data = _form_data(llama, hf_id="example/too-big", total_params_b="5000", num_layers="2")
    for key in [k for k in data if k.endswith("-id") or k.endswith("-model")]:
        data[key] = ""
    data["model_precisions-INITIAL_FORMS"] = 0
    response = admin_client.post("/admin/catalog/inferencemodel/add/", data)
    assert response.status_code == 200
    assert "total_params_b" in form_errors(response)
    assert not InferenceModel.objects.filter(hf_id="example/too-big").exists()


def test_a_precision_offered_through_the_inline_is_sized_before_saving(admin_client, llama):
    """1.5 T parameters over 2 layers fit every GPU model at int4, not an MI300X at fp16."""
    int4, fp16 = Precision.objects.get(code="int4"), Precision.objects.get(code="fp16")
    data = _form_data(llama, total_params_b="1500", num_layers="2")
    for i in range(int(data["model_precisions-TOTAL_FORMS"])):
        if data[f"model_precisions-{i}-precision"] != int4.pk:
            data[f"model_precisions-{i}-DELETE"] = "on"
    response = admin_client.post(f"/admin/catalog/inferencemodel/{llama.pk}/change/", data)
    assert response.status_code == 302, form_errors(response)
    before = saved_state(llama)

    llama.refresh_from_db()
    data = _form_data(llama)
    n = int(data["model_precisions-TOTAL_FORMS"])
    data.update({"model_precisions-TOTAL_FORMS": n + 1, f"model_precisions-{n}-id": "",
                 f"model_precisions-{n}-model": llama.pk, f"model_precisions-{n}-precision": fp16.pk})
    response = admin_client.post(f"/admin/catalog/inferencemodel/{llama.pk}/change/", data)
    assert response.status_code == 200
    (message,) = form_errors(response)["total_params_b"]
    assert message.startswith("cannot be sized: fp16 on MI300X at 8192 tokens"), message
    assert saved_state(llama) == before
    assert not llama.precisions.filter(pk=fp16.pk).exists()


@pytest.mark.parametrize("changes, field, message", [
    pytest.param({"context_tokens": str(10**14)}, "context_tokens", "less than or equal to", id="context-1e14"),
    pytest.param({"concurrent_sequences": str(10**9)}, "concurrent_sequences", "less than or equal to", id="1e9-sequences"),
    pytest.param({"context_tokens": str(2**27), "concurrent_sequences": "65536"}, "context_tokens", "cannot size",
                 id="cannot-be-sized"),
])
def test_the_profile_admin_refuses_implausible_inputs_as_field_errors(admin_client, llama, changes, field, message):
    data = {"model": llama.pk, "precision": Precision.objects.get(code="fp16").pk, "gpu_model": "MI300X",
            "context_tokens": "8192", "concurrent_sequences": "2", **changes}
    count = ModelProfile.objects.count()
    response = admin_client.post("/admin/catalog/modelprofile/add/", data)
    assert response.status_code == 200
    errors = form_errors(response)
    assert field in errors and any(message in m for m in errors[field]), errors
    assert ModelProfile.objects.count() == count


@pytest.mark.parametrize("bytes_per_weight, message", [
    pytest.param("99.00", "less than or equal to 8", id="99-bytes"),
    pytest.param("8.00", "cannot be sized", id="8-bytes-for-a-1T-model"),
])
def test_the_precision_admin_refuses_a_size_its_models_cannot_take(admin_client, catalog, bytes_per_weight, message):
    fp16 = Precision.objects.get(code="fp16")
    # A 1T-parameter model with 2 layers: at 8 bytes per weight no layout of 1024 GPUs holds it.
    big = InferenceModel.objects.get(hf_id=LLAMA8)
    InferenceModel.objects.filter(pk=big.pk).update(total_params_b=1000, num_layers=2)
    before = list(ModelProfile.objects.filter(precision=fp16).order_by("pk").values_list("pk", "memory_required_gb"))
    response = admin_client.post(f"/admin/catalog/precision/{fp16.pk}/change/", {
        "code": "fp16", "label": fp16.label, "bytes_per_weight": bytes_per_weight, "description": "",
        "sort_order": fp16.sort_order})
    assert response.status_code == 200
    errors = form_errors(response)
    assert any(message in m for m in errors.get("bytes_per_weight", [])), errors
    fp16.refresh_from_db()
    assert str(fp16.bytes_per_weight) == "2.00"
    assert list(ModelProfile.objects.filter(precision=fp16).order_by("pk").values_list("pk", "memory_required_gb")) == before

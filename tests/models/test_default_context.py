"""The default profile is sized at min(8192 tokens, the model's max context): a model with a
shorter context is never sized (nor listed) for tokens its engine would clamp away (issue 13, 7)."""

from __future__ import annotations

import pytest

from models import sizing
from models.models import InferenceModel, ModelProfile
from models.services import (
    DEFAULT_CONTEXT_TOKENS,
    default_context_tokens,
    default_profiles,
    load_catalog,
    model_shape,
    refresh_profiles,
    sizing_policy,
)

pytestmark = pytest.mark.django_db

TINY = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"  # context_length 2048
LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"  # context_length 131072


@pytest.mark.parametrize("context_length, expected", [(1, 1), (2048, 2048), (8191, 8191), (8192, 8192), (131072, 8192)])
def test_the_default_context_is_8192_tokens_or_the_models_max(context_length, expected):
    assert default_context_tokens(context_length) == expected


def test_tinyllamas_default_profile_is_sized_for_its_2048_token_context(catalog):
    load_catalog()
    tiny = InferenceModel.objects.get(hf_id=TINY)
    assert tiny.context_length == 2048
    profiles = ModelProfile.objects.filter(model=tiny)
    assert set(profiles.values_list("context_tokens", "concurrent_sequences")) == {(2048, 1)}
    fp16 = profiles.get(precision__code="fp16", gpu_model="MI300X")
    expected = sizing.estimate_memory(model_shape(tiny), 2.0, context_tokens=2048, concurrent_sequences=1,
                                      policy=sizing_policy())
    assert fp16.kv_cache_gb == pytest.approx(expected.kv_cache_gb, abs=1e-3)
    assert fp16.memory_required_gb == pytest.approx(expected.total_gb, abs=1e-3)
    at_8192 = sizing.estimate_memory(model_shape(tiny), 2.0, context_tokens=8192, concurrent_sequences=1,
                                     policy=sizing_policy())
    assert fp16.kv_cache_gb < at_8192.kv_cache_gb


def test_long_context_models_keep_the_8192_token_default(catalog):
    profiles = ModelProfile.objects.filter(model__hf_id=LLAMA8)
    assert set(profiles.values_list("context_tokens", flat=True)) == {DEFAULT_CONTEXT_TOKENS}


def test_default_profiles_selects_one_per_model_precision_and_gpu(catalog):
    defaults = ModelProfile.objects.filter(default_profiles())
    tiny = InferenceModel.objects.get(hf_id=TINY)
    assert defaults.filter(model=tiny, gpu_model="MI300X", context_tokens=2048).count() == tiny.precisions.count()
    assert defaults.filter(model__hf_id=LLAMA8, context_tokens=DEFAULT_CONTEXT_TOKENS).count() == (
        ModelProfile.objects.filter(model__hf_id=LLAMA8, context_tokens=DEFAULT_CONTEXT_TOKENS,
                                    concurrent_sequences=1).count())


def test_an_old_over_long_default_is_replaced_when_unused(catalog):
    # A database loaded before the fix holds TinyLlama's default at 8192 tokens.
    tiny = InferenceModel.objects.get(hf_id=TINY)
    ModelProfile.objects.filter(model=tiny).update(context_tokens=DEFAULT_CONTEXT_TOKENS)
    refresh_profiles(model=tiny)
    assert set(ModelProfile.objects.filter(model=tiny).values_list("context_tokens", flat=True)) == {2048}


def test_an_old_over_long_default_a_deployment_uses_is_kept(catalog):
    from serving.models import Deployment

    tiny = InferenceModel.objects.get(hf_id=TINY)
    ModelProfile.objects.filter(model=tiny).update(context_tokens=DEFAULT_CONTEXT_TOKENS)
    used = ModelProfile.objects.get(model=tiny, precision__code="fp16", gpu_model="MI300X")
    Deployment.objects.create(name="tiny", profile=used, replicas=1)
    refresh_profiles(model=tiny)
    assert ModelProfile.objects.filter(pk=used.pk).exists()
    assert ModelProfile.objects.filter(default_profiles(), model=tiny, precision__code="fp16",
                                       gpu_model="MI300X").get().context_tokens == 2048

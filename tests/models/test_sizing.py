"""Tests for models.sizing: hand-computed memory estimates and partition/GPU fit.

Units: GiB = 2**30 bytes throughout (the GPUs' "192 GB" is 192 GiB).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.sizing import (
    BYTES_PER_WEIGHT,
    DEFAULT_POLICY,
    GIB,
    MAX_GPUS,
    FitResult,
    MemoryEstimate,
    ModelShape,
    SizingError,
    SizingPolicy,
    estimate_memory,
    fit,
)
from partitions.geometry import SPECS, GeometryError, get_spec

# Shapes from the catalog (config.json values), written out so these tests stand alone.
LLAMA_31_8B = ModelShape(
    total_params_b=8.03, num_layers=32, attention="gqa", num_kv_heads=8, head_dim=128,
    num_attention_heads=32,
)
LLAMA_33_70B = ModelShape(
    total_params_b=70.6, num_layers=80, num_kv_heads=8, head_dim=128, num_attention_heads=64
)
MISTRAL_LARGE = ModelShape(
    total_params_b=123.0, num_layers=88, num_kv_heads=8, head_dim=128, num_attention_heads=96
)
LLAMA_4_SCOUT = ModelShape(
    total_params_b=109.0, active_params_b=17.0, num_layers=48, num_kv_heads=8, head_dim=128,
    num_attention_heads=40,
)
QWEN3_235B = ModelShape(
    total_params_b=235.0, active_params_b=22.0, num_layers=94, num_kv_heads=4, head_dim=128,
    num_attention_heads=64,
)
DEEPSEEK_V3 = ModelShape(
    total_params_b=671.0, active_params_b=37.0, num_layers=61, attention="mla",
    num_kv_heads=128, head_dim=192, kv_lora_rank=512, qk_rope_head_dim=64,
    num_attention_heads=128,
)

MI300X, MI325X, MI355X, MI300A = (get_spec(m) for m in ("MI300X", "MI325X", "MI355X", "MI300A"))


# --- estimate_memory: hand-computed cases ------------------------------------------------


def test_llama_31_8b_fp16_one_8k_sequence() -> None:
    est = estimate_memory(LLAMA_31_8B, 2, context_tokens=8192, concurrent_sequences=1)
    # Weights: 8.03e9 params x 2 bytes = 16.06e9 bytes; / 2**30 = 14.957 GiB.
    assert est.weights_gb == pytest.approx(8.03e9 * 2 / 2**30)
    assert est.weights_gb == pytest.approx(14.9571, abs=1e-4)
    # KV per token: 32 layers x (2 x 8 KV heads x 128 head_dim = 2048 elements) x 2 bytes
    # = 131072 bytes (128 KiB); x 8192 tokens = 1073741824 bytes = exactly 1 GiB.
    assert LLAMA_31_8B.kv_elements_per_token_per_layer == 2048
    assert est.kv_bytes_per_token == 131072
    assert est.kv_cache_gb == 1.0
    # Overhead: 2 GiB fixed + 10 % of 14.957 GiB = 3.4957 GiB.
    assert est.overhead_gb == pytest.approx(2 + 0.1 * est.weights_gb)
    assert est.total_gb == pytest.approx(14.9571 + 1 + 3.4957, abs=1e-3)  # 19.45 GiB
    # The full 131072-token context needs 16 GiB of KV.
    assert estimate_memory(LLAMA_31_8B, 2, context_tokens=131072).kv_cache_gb == 16.0


def test_total_is_sum_of_parts() -> None:
    est = estimate_memory(QWEN3_235B, "int4", context_tokens=4096, concurrent_sequences=3)
    assert est.total_gb == pytest.approx(est.weights_gb + est.kv_cache_gb + est.overhead_gb)


@pytest.mark.parametrize(
    ("code", "bytes_per_weight"), [("fp16", 2.0), ("fp8", 1.0), ("int8", 1.0), ("int4", 0.5)]
)
def test_every_precision_scales_weights_but_not_kv(code: str, bytes_per_weight: float) -> None:
    assert BYTES_PER_WEIGHT[code] == bytes_per_weight
    by_code = estimate_memory(LLAMA_31_8B, code)
    by_number = estimate_memory(LLAMA_31_8B, bytes_per_weight)
    assert by_code == by_number
    assert by_code.weights_gb == pytest.approx(8.03e9 * bytes_per_weight / GIB)
    # KV dtype is the serving engine's, independent of weight quantization.
    assert by_code.kv_cache_gb == 1.0
    assert by_code.overhead_gb == pytest.approx(2.0 + 0.1 * by_code.weights_gb)


def test_precision_code_is_case_insensitive_and_unknown_code_rejected() -> None:
    assert estimate_memory(LLAMA_31_8B, "FP8") == estimate_memory(LLAMA_31_8B, 1)
    with pytest.raises(SizingError, match="Unknown precision 'fp4'"):
        estimate_memory(LLAMA_31_8B, "fp4")


def test_mla_kv_cache_deepseek_v3() -> None:
    # MLA caches one 512-element latent + one 64-element RoPE key per token per layer,
    # shared by all 128 heads: 576 elements, not 2 x 128 x 192 = 49152.
    assert DEEPSEEK_V3.kv_elements_per_token_per_layer == 576
    est = estimate_memory(DEEPSEEK_V3, "fp8", context_tokens=8192)
    # 576 elements x 61 layers x 2 bytes = 70272 bytes per token (~68.6 KiB).
    assert est.kv_bytes_per_token == 576 * 61 * 2 == 70272
    # x 8192 tokens = 575668224 bytes = 0.536 GiB.
    assert est.kv_cache_gb == pytest.approx(8192 * 70272 / 2**30)
    assert est.kv_cache_gb == pytest.approx(0.5361, abs=1e-4)


def test_moe_memory_uses_total_not_active_params() -> None:
    # DeepSeek-V3 fp8: 671e9 x 1 byte / 2**30 = 624.92 GiB of weights, all resident
    # (the prototype used the 37B active count and got 105 GB).
    est = estimate_memory(DEEPSEEK_V3, "fp8")
    assert est.weights_gb == pytest.approx(671e9 / 2**30)
    assert est.weights_gb == pytest.approx(624.92, abs=0.01)
    assert est.total_gb > 600
    dense_twin = dataclasses.replace(DEEPSEEK_V3, active_params_b=None)
    assert estimate_memory(dense_twin, "fp8") == est
    # Scout: 109B total -> 203 GiB of BF16 weights, not 17B -> 32 GiB.
    assert estimate_memory(LLAMA_4_SCOUT, "fp16").weights_gb == pytest.approx(109e9 * 2 / GIB)


def test_concurrency_scales_kv_linearly() -> None:
    one = estimate_memory(LLAMA_31_8B, "fp16", context_tokens=8192, concurrent_sequences=1)
    eight = estimate_memory(LLAMA_31_8B, "fp16", context_tokens=8192, concurrent_sequences=8)
    assert eight.kv_cache_gb == 8 * one.kv_cache_gb == 8.0
    assert eight.weights_gb == one.weights_gb
    assert eight.overhead_gb == one.overhead_gb
    assert eight.total_gb == pytest.approx(one.total_gb + 7)


def test_policy_override() -> None:
    policy = SizingPolicy(overhead_fixed_gb=4.0, overhead_fraction=0.2, kv_bytes=1.0)
    est = estimate_memory(LLAMA_31_8B, "fp16", policy=policy)
    weights = 8.03e9 * 2 / GIB
    assert est.weights_gb == pytest.approx(weights)
    assert est.kv_cache_gb == 0.5  # fp8 KV: 1 byte per element halves the 1 GiB
    assert est.kv_bytes_per_token == 65536
    assert est.overhead_gb == pytest.approx(4.0 + 0.2 * weights)
    no_overhead = estimate_memory(
        LLAMA_31_8B, "fp16", policy=SizingPolicy(overhead_fixed_gb=0, overhead_fraction=0)
    )
    assert no_overhead.total_gb == pytest.approx(weights + 1.0)


def test_default_policy_values() -> None:
    assert DEFAULT_POLICY == SizingPolicy() == SizingPolicy(2.0, 0.10, 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_POLICY.overhead_fixed_gb = 3.0  # type: ignore[misc]


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"total_params_b": 0}, "total_params_b must be positive"),
        ({"total_params_b": -8}, "total_params_b must be positive"),
        ({"total_params_b": float("nan")}, "total_params_b must be finite"),
        ({"total_params_b": "8B"}, "total_params_b must be a number"),
        ({"active_params_b": 9.0}, "active_params_b .* exceeds total_params_b"),
        ({"active_params_b": 0}, "active_params_b must be positive"),
        ({"num_layers": 0}, "num_layers must be positive"),
        ({"num_layers": 32.0}, "num_layers must be a whole number"),
        ({"num_layers": True}, "num_layers must be a whole number"),
        ({"attention": "mha"}, "Unknown attention kind 'mha'"),
        ({"num_kv_heads": None}, "gqa attention needs num_kv_heads and head_dim"),
        ({"head_dim": -128}, "head_dim must be positive"),
        ({"num_attention_heads": 0}, "num_attention_heads must be positive"),
        ({"num_attention_heads": 12}, "must be a multiple of num_kv_heads"),
        ({"attention": "mla"}, "mla attention needs kv_lora_rank and qk_rope_head_dim"),
        ({"attention": "mla", "kv_lora_rank": 512}, "mla attention needs"),
    ],
)
def test_model_shape_validation(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = dict(
        total_params_b=8.03, num_layers=32, num_kv_heads=8, head_dim=128, num_attention_heads=32
    )
    base.update(kwargs)
    with pytest.raises(SizingError, match=message):
        ModelShape(**base)  # type: ignore[arg-type]


def test_sizing_error_is_value_error() -> None:
    assert issubclass(SizingError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bytes_per_weight": 0}, "bytes_per_weight must be positive"),
        ({"bytes_per_weight": -2}, "bytes_per_weight must be positive"),
        ({"context_tokens": 0}, "context_tokens must be positive"),
        ({"context_tokens": -1}, "context_tokens must be positive"),
        ({"context_tokens": 8192.0}, "context_tokens must be a whole number"),
        ({"concurrent_sequences": 0}, "concurrent_sequences must be positive"),
    ],
)
def test_estimate_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"bytes_per_weight": 2.0}
    args.update(kwargs)
    with pytest.raises(SizingError, match=message):
        estimate_memory(LLAMA_31_8B, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overhead_fixed_gb": -1}, "overhead_fixed_gb must not be negative"),
        ({"overhead_fraction": -0.1}, "overhead_fraction must not be negative"),
        ({"kv_bytes": 0}, "kv_bytes must be positive"),
    ],
)
def test_policy_validation(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SizingError, match=message):
        SizingPolicy(**kwargs)


def test_fit_rejects_estimate_made_with_another_policy() -> None:
    est = estimate_memory(LLAMA_31_8B, "fp16", policy=SizingPolicy(overhead_fixed_gb=5))
    with pytest.raises(SizingError, match="pass the SizingPolicy used for estimate_memory"):
        fit(est, LLAMA_31_8B, MI300X)
    assert fit(est, LLAMA_31_8B, MI300X, SizingPolicy(overhead_fixed_gb=5)).gpus_needed == 1


def test_fit_rejects_bad_need_and_unknown_gpu() -> None:
    with pytest.raises(SizingError, match="must be positive"):
        fit(0.0, LLAMA_31_8B, MI300X)
    with pytest.raises(GeometryError, match="Unknown GPU model"):
        fit(10.0, LLAMA_31_8B, "MI999X")


def test_fit_fixed_overhead_filling_the_gpu_is_an_error() -> None:
    policy = SizingPolicy(overhead_fixed_gb=200.0)
    with pytest.raises(SizingError, match="fixed overhead .* leaves no room"):
        fit(500.0, LLAMA_31_8B, MI300X, policy)


def test_fit_gives_up_beyond_max_gpus() -> None:
    with pytest.raises(SizingError, match=f"up to {MAX_GPUS}"):
        fit(1e9, DEEPSEEK_V3, MI300X)


# --- fit: partitions --------------------------------------------------------------------


def test_llama_8b_fp16_on_mi300x_fits_cpx() -> None:
    est = estimate_memory(LLAMA_31_8B, "fp16")  # 19.45 GiB <= 24 GiB CPX partition
    result = fit(est, LLAMA_31_8B, MI300X)
    assert isinstance(result, FitResult)
    assert result.gpu_model == "MI300X"
    assert result.need_gb == est.total_gb
    assert result.fits == {"SPX": True, "DPX": True, "QPX": True, "CPX": True}
    assert result.smallest_partition == "CPX"
    assert result.replicas_per_gpu == {"SPX": 1, "DPX": 2, "QPX": 4, "CPX": 8}
    assert result.gpus_needed == 1
    assert result.per_gpu_gb == est.total_gb
    assert "CPX" in result.tensor_parallel_note and "8 replica" in result.tensor_parallel_note


def test_llama_8b_fp16_on_mi300a_needs_tpx() -> None:
    # MI300A partitions are sized by AMD's documented ~32 GiB (TPX) / ~16 GiB (CPX).
    result = fit(estimate_memory(LLAMA_31_8B, "fp16"), LLAMA_31_8B, MI300A)
    assert result.fits == {"SPX": True, "TPX": True, "CPX": False}
    assert result.smallest_partition == "TPX"
    assert result.replicas_per_gpu == {"SPX": 1, "TPX": 3, "CPX": 0}
    assert result.gpus_needed == 1
    # int4 (8.03e9 x 0.5 = 3.74 GiB + 1 GiB KV + 2.37 GiB overhead = 7.1 GiB) fits CPX.
    int4 = fit(estimate_memory(LLAMA_31_8B, "int4"), LLAMA_31_8B, MI300A)
    assert int4.smallest_partition == "CPX"
    assert int4.replicas_per_gpu["CPX"] == 6


def test_spec_may_be_given_by_name() -> None:
    est = estimate_memory(LLAMA_31_8B, "fp16")
    assert fit(est, LLAMA_31_8B, "AMD Instinct MI300X") == fit(est, LLAMA_31_8B, MI300X)


@pytest.mark.parametrize(
    ("shape", "precision", "gpu", "smallest", "gpus"),
    [
        # Llama-3.3-70B fp16: 131.5 weights + 2.5 KV + 15.2 overhead = 149.2 GiB.
        (LLAMA_33_70B, "fp16", MI300X, "SPX", 1),
        (LLAMA_33_70B, "fp16", MI325X, "SPX", 1),  # DPX would be 128 GiB
        (LLAMA_33_70B, "fp16", MI355X, "SPX", 1),  # DPX would be 144 GiB
        # fp8: 65.8 + 2.5 + 8.6 = 76.8 GiB: above a 48/64/72 GiB QPX partition.
        (LLAMA_33_70B, "fp8", MI300X, "DPX", 1),
        (LLAMA_33_70B, "fp8", MI325X, "DPX", 1),
        (LLAMA_33_70B, "fp8", MI355X, "DPX", 1),
        # int4: 32.9 + 2.5 + 5.3 = 40.7 GiB: QPX everywhere (MI355X CPX is 36 GiB).
        (LLAMA_33_70B, "int4", MI300X, "QPX", 1),
        (LLAMA_33_70B, "int4", MI355X, "QPX", 1),
        (LLAMA_33_70B, "int4", MI300A, "SPX", 1),  # TPX is 32 GiB
        # Mistral Large 2 (123B) fp16: 229.1 + 2.75 + 24.9 = 256.8 GiB: just over MI325X.
        (MISTRAL_LARGE, "fp16", MI300X, None, 2),
        (MISTRAL_LARGE, "fp16", MI325X, None, 2),
        (MISTRAL_LARGE, "fp16", MI355X, "SPX", 1),
        # Llama-4-Scout fp16: 203.0 + 1.5 + 22.3 = 226.8 GiB.
        (LLAMA_4_SCOUT, "fp16", MI300X, None, 2),
        (LLAMA_4_SCOUT, "fp16", MI325X, "SPX", 1),
        (LLAMA_4_SCOUT, "fp8", MI300X, "SPX", 1),
        # Qwen3-235B-A22B: fp16 485 GiB, fp8 244 GiB, int4 124 GiB.
        (QWEN3_235B, "fp16", MI300X, None, 4),
        (QWEN3_235B, "fp8", MI300X, None, 2),
        (QWEN3_235B, "fp8", MI355X, "SPX", 1),
        (QWEN3_235B, "int4", MI300X, "SPX", 1),
    ],
)
def test_representative_fits(
    shape: ModelShape, precision: str, gpu: object, smallest: str | None, gpus: int
) -> None:
    result = fit(estimate_memory(shape, precision), shape, gpu)  # type: ignore[arg-type]
    assert result.smallest_partition == smallest
    assert result.gpus_needed == gpus
    if smallest is None:
        assert not any(result.fits.values())
        assert set(result.replicas_per_gpu.values()) == {0}


# --- fit: tensor parallelism ------------------------------------------------------------


def test_deepseek_v3_fp8_needs_four_mi300x_by_memory() -> None:
    # Weights 624.9 GiB (671e9 x 1 byte), KV 0.54 GiB (8192 tokens, MLA), overhead
    # 2 + 62.5 = 64.5 GiB -> 690 GiB in all: far beyond one 192 GiB MI300X.
    # Per GPU with t GPUs: 624.9 x 1.1 / t + 0.54 (the MLA latent is replicated on every
    # TP rank, so it is not divided) + 2 fixed:
    #   t=2: 343.7 + 0.54 + 2 = 346.3 > 192;   t=4: 171.9 + 0.54 + 2 = 174.4 <= 192.
    # So by memory alone it fits 4 MI300X (768 GiB) with 17.6 GiB/GPU left for KV; the
    # usual 8-GPU node is the practical choice for long contexts and batching, not a
    # memory necessity. It does NOT need more than 8 GPUs.
    est = estimate_memory(DEEPSEEK_V3, "fp8")
    assert est.total_gb == pytest.approx(689.95, abs=0.01)
    result = fit(est, DEEPSEEK_V3, MI300X)
    assert result.smallest_partition is None
    assert result.gpus_needed == 4
    weights = 671e9 / GIB
    assert result.per_gpu_gb == pytest.approx(weights * 1.1 / 4 + est.kv_cache_gb + 2)
    assert result.per_gpu_gb == pytest.approx(174.39, abs=0.01)
    assert "tensor parallel 4" in result.tensor_parallel_note
    assert "MLA KV latent is replicated" in result.tensor_parallel_note
    # MI325X (256) and MI355X (288) also need 4: t=2 gives 346 GiB per GPU.
    assert fit(est, DEEPSEEK_V3, MI325X).gpus_needed == 4
    assert fit(est, DEEPSEEK_V3, MI355X).gpus_needed == 4


def test_deepseek_v3_bf16_needs_a_full_mi300x_node() -> None:
    # 1249.9 GiB of weights x 1.1 / 8 = 171.9 + 0.54 KV + 2 = 174.4 GiB per GPU at t=8;
    # at t=4 it would be 345.7 GiB.
    est = estimate_memory(DEEPSEEK_V3, "fp16")
    assert est.total_gb == pytest.approx(1377.4, abs=0.1)
    assert fit(est, DEEPSEEK_V3, MI300X).gpus_needed == 8


def test_deepseek_v3_bf16_on_mi300a_goes_multi_node() -> None:
    # MI300A has 128 GiB: t=8 gives 174.4 GiB per GPU, too much. t=16 = 2 nodes of TP 8 x
    # 2 pipeline stages: 1374.8 / 16 = 85.9 + 0.54 / 2 (stages split layers) + 2 = 88.2.
    est = estimate_memory(DEEPSEEK_V3, "fp16")
    result = fit(est, DEEPSEEK_V3, MI300A)
    assert result.gpus_needed == 16
    assert result.per_gpu_gb == pytest.approx(est.weights_gb * 1.1 / 16 + est.kv_cache_gb / 2 + 2)
    assert "2 nodes" in result.tensor_parallel_note
    assert "2 pipeline stages" in result.tensor_parallel_note


def test_mla_kv_replication_changes_the_answer_for_long_contexts() -> None:
    # 131072 tokens x 16 sequences x 70272 B = 137.25 GiB of MLA KV. With t=8 each rank
    # holds all of it: 85.9 (weights+overhead) + 137.25 + 2 = 225 > 192. t=16 (2 stages)
    # halves it: 43.0 + 68.6 + 2 = 113.6. Splitting KV 8 ways would wrongly say 8 GPUs.
    est = estimate_memory(DEEPSEEK_V3, "fp8", context_tokens=131072, concurrent_sequences=16)
    assert est.kv_cache_gb == pytest.approx(131072 * 16 * 70272 / GIB)
    result = fit(est, DEEPSEEK_V3, MI300X)
    assert result.gpus_needed == 16
    assert result.per_gpu_gb == pytest.approx(est.weights_gb * 1.1 / 16 + est.kv_cache_gb / 2 + 2)


def test_gqa_kv_splits_at_most_num_kv_heads_ways() -> None:
    # Qwen3-235B has 4 KV heads: beyond TP 4 they are replicated, so at TP 8 each GPU still
    # holds a quarter of the KV. 40960 tokens x 48 sequences x 94 layers x 1024 x 2 B =
    # 352.5 GiB of KV. t=4: 120.3 + 88.1 + 2 = 210.5 > 192; t=8: 60.2 + 88.1 + 2 = 150.3.
    est = estimate_memory(QWEN3_235B, "fp16", context_tokens=40960, concurrent_sequences=48)
    assert est.kv_cache_gb == pytest.approx(352.5)
    result = fit(est, QWEN3_235B, MI300X)
    assert result.gpus_needed == 8
    assert result.per_gpu_gb == pytest.approx(est.weights_gb * 1.1 / 8 + est.kv_cache_gb / 4 + 2)
    assert "KV cache splits only 4 ways" in result.tensor_parallel_note


def test_plain_need_splits_everything_but_the_fixed_overhead() -> None:
    # 700 GiB on MI300X: t=4 gives (700 - 2) / 4 + 2 = 176.5 <= 192.
    result = fit(700.0, LLAMA_33_70B, MI300X)
    assert result.gpus_needed == 4
    assert result.per_gpu_gb == pytest.approx(176.5)
    assert result.need_gb == 700.0
    assert fit(192.0, LLAMA_33_70B, MI300X).gpus_needed == 1
    assert fit(192.01, LLAMA_33_70B, MI300X).gpus_needed == 2


def test_plain_need_matches_estimate_when_kv_splits_evenly() -> None:
    # With 8 KV heads and TP <= 8 the KV divides t ways, so both forms agree.
    est = estimate_memory(MISTRAL_LARGE, "fp16")
    by_estimate = fit(est, MISTRAL_LARGE, MI300X)
    by_need = fit(est.total_gb, MISTRAL_LARGE, MI300X)
    assert by_estimate.gpus_needed == by_need.gpus_needed == 2
    assert by_estimate.per_gpu_gb == pytest.approx(by_need.per_gpu_gb)


def _needs_tp(heads: int, kv_heads: int) -> ModelShape:
    return ModelShape(
        total_params_b=300.0, num_layers=60, num_kv_heads=kv_heads, head_dim=128,
        num_attention_heads=heads,
    )


def test_tp_must_divide_attention_heads() -> None:
    # 300B fp16 = 558.8 GiB of weights; per GPU at t=4: 614.7 / 4 + KV + 2 = 156 GiB (fits).
    assert fit(estimate_memory(_needs_tp(16, 2), "fp16"), _needs_tp(16, 2), MI300X).gpus_needed == 4
    # 14 heads (like Qwen2.5-0.5B): TP 4 and TP 8 cannot split them. The next workable
    # layout is 16 GPUs = TP 2 within a node x 8 pipeline stages.
    shape = _needs_tp(14, 2)
    result = fit(estimate_memory(shape, "fp16"), shape, MI300X)
    assert result.gpus_needed == 16
    assert "TP 4 skipped: 14 attention heads are not divisible by 4" in result.tensor_parallel_note
    assert "TP 8 skipped" in result.tensor_parallel_note
    assert "tensor parallel 2 within a node x 8 pipeline stages" in result.tensor_parallel_note
    # 28 heads (like DeepSeek-R1-Distill-Qwen-7B): TP 4 works.
    assert fit(estimate_memory(_needs_tp(28, 4), "fp16"), _needs_tp(28, 4), MI300X).gpus_needed == 4


def test_tp_must_split_or_replicate_kv_heads_evenly() -> None:
    # 24 heads, 6 KV heads: TP 4 divides the heads but 6 KV heads neither split 4 ways nor
    # replicate evenly over 4 ranks; TP 8 fails on the heads. -> 16 GPUs (TP 2 x 8 stages).
    shape = _needs_tp(24, 6)
    result = fit(estimate_memory(shape, "fp16"), shape, MI300X)
    assert result.gpus_needed == 16
    assert "6 KV heads cannot be split or replicated evenly over 4 ranks" in (
        result.tensor_parallel_note
    )


def test_unknown_head_count_skips_the_divisibility_check() -> None:
    shape = dataclasses.replace(_needs_tp(14, 2), num_attention_heads=None)
    assert fit(estimate_memory(shape, "fp16"), shape, MI300X).gpus_needed == 4


# --- property tests ---------------------------------------------------------------------

shapes = st.builds(
    lambda total, layers, kv, hd, group: ModelShape(
        total_params_b=total, num_layers=layers, num_kv_heads=kv, head_dim=hd,
        num_attention_heads=kv * group,
    ),
    st.floats(min_value=0.1, max_value=1000, allow_nan=False),
    st.integers(min_value=1, max_value=128),
    st.sampled_from([1, 2, 4, 8, 16, 32]),
    st.sampled_from([64, 128, 256]),
    st.sampled_from([1, 2, 4, 8]),
)
contexts = st.integers(min_value=1, max_value=1_000_000)
concurrency = st.integers(min_value=1, max_value=256)
precisions = st.sampled_from(sorted(set(BYTES_PER_WEIGHT.values())))
gpus = st.sampled_from(sorted(SPECS))


@settings(max_examples=200, deadline=None)
@given(shapes, precisions, contexts, contexts, concurrency)
def test_monotone_in_context(
    shape: ModelShape, bpw: float, a: int, b: int, seqs: int
) -> None:
    lo, hi = sorted((a, b))
    assert estimate_memory(shape, bpw, lo, seqs).total_gb <= estimate_memory(shape, bpw, hi, seqs).total_gb


@settings(max_examples=200, deadline=None)
@given(shapes, precisions, contexts, concurrency, concurrency)
def test_monotone_in_concurrency(
    shape: ModelShape, bpw: float, ctx: int, a: int, b: int
) -> None:
    lo, hi = sorted((a, b))
    small = estimate_memory(shape, bpw, ctx, lo)
    big = estimate_memory(shape, bpw, ctx, hi)
    assert small.total_gb <= big.total_gb
    assert big.kv_cache_gb == pytest.approx(small.kv_cache_gb * hi / lo)


@settings(max_examples=200, deadline=None)
@given(shapes, precisions, precisions, contexts)
def test_monotone_in_bytes_per_weight(shape: ModelShape, a: float, b: float, ctx: int) -> None:
    lo, hi = sorted((a, b))
    small = estimate_memory(shape, lo, ctx)
    big = estimate_memory(shape, hi, ctx)
    assert small.total_gb <= big.total_gb
    assert small.kv_cache_gb == big.kv_cache_gb


def _fit_or_none(need: float, shape: ModelShape, gpu: str) -> FitResult | None:
    """fit(), or None where no layout of up to MAX_GPUS GPUs works (e.g. a 1-layer,
    1-head model too big for one GPU: it can be split neither by heads nor by layers)."""
    try:
        return fit(need, shape, gpu)
    except SizingError:
        return None


@settings(max_examples=300, deadline=None)
@given(shapes, gpus, st.floats(min_value=0.1, max_value=20_000), st.floats(min_value=0.1, max_value=20_000))
def test_more_memory_never_fits_more_modes_or_fewer_gpus(
    shape: ModelShape, gpu: str, a: float, b: float
) -> None:
    lo, hi = sorted((a, b))
    small, big = _fit_or_none(lo, shape, gpu), _fit_or_none(hi, shape, gpu)
    if small is None:
        assert big is None  # what cannot be placed stays unplaceable with more memory
        return
    if big is None:
        return
    fits_small = {m for m, ok in small.fits.items() if ok}
    fits_big = {m for m, ok in big.fits.items() if ok}
    assert fits_big <= fits_small
    assert big.gpus_needed >= small.gpus_needed
    for mode in small.replicas_per_gpu:
        assert big.replicas_per_gpu[mode] <= small.replicas_per_gpu[mode]


@settings(max_examples=300, deadline=None)
@given(shapes, precisions, st.integers(1, 131072), st.integers(1, 64), gpus)
def test_fit_result_is_self_consistent(
    shape: ModelShape, bpw: float, ctx: int, seqs: int, gpu_name: str
) -> None:
    gpu = get_spec(gpu_name)
    est = estimate_memory(shape, bpw, ctx, seqs)
    try:
        result = fit(est, shape, gpu)
    except SizingError:
        # Only when the model cannot be split enough: more than one GPU is needed and
        # neither heads nor layers allow it within MAX_GPUS.
        assert est.total_gb > gpu.memory_gb
        return
    for mode in gpu.compute_modes:
        fits = est.total_gb <= gpu.smallest_partition_gb(mode)
        assert result.fits[mode.value] is fits
        assert result.replicas_per_gpu[mode.value] == (gpu.partition_count(mode) if fits else 0)
    if result.smallest_partition is None:
        assert result.gpus_needed > 1
    else:
        assert result.gpus_needed == 1
        # No mode with more partitions fits.
        count = gpu.partition_count(result.smallest_partition)
        assert all(
            not result.fits[m.value] for m in gpu.compute_modes if gpu.partition_count(m) > count
        )
    assert result.per_gpu_gb <= gpu.memory_gb
    if result.gpus_needed > 1:
        assert result.gpus_needed in (2, 4, 8) or result.gpus_needed % 8 == 0


def test_memory_estimate_is_frozen() -> None:
    est = estimate_memory(LLAMA_31_8B, "fp16")
    assert isinstance(est, MemoryEstimate)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.total_gb = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("layers, expected", [(3, 24), (2, None)])
def test_pipeline_stages_never_exceed_the_layers(layers: int, expected: int | None) -> None:
    # ~3,000 GiB of fp16 weights: 8-way tensor parallel per node x 3 pipeline stages (24 GPUs).
    shape = ModelShape(total_params_b=1600.0, num_layers=layers, num_kv_heads=8, head_dim=128, num_attention_heads=32)
    est = estimate_memory(shape, "fp16")
    if expected is None:  # 3 stages are needed and only 2 layers exist to split
        with pytest.raises(SizingError, match="no layout"):
            fit(est, shape, "MI300X")
    else:
        result = fit(est, shape, "MI300X")
        assert result.gpus_needed == expected and "3 pipeline stages" in result.tensor_parallel_note

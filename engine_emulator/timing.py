"""Latency model of the emulated engine: how long prefill and decode steps take (pure functions).

The server loop (``engine.py``) runs one *step* at a time for the whole running batch, as vLLM's
continuous batching does: every running sequence gets one token per step, and sequences admitted
at the start of a step are prefilled in that same step (their first token comes at its end).
So a step with a batch of ``b`` sequences, ``n`` of which were just admitted with prompts of
``p_1 .. p_n`` tokens, lasts::

    step_s = decode_step_s(b) + sum(prefill_s(p_i))

    prefill_s(p)     = (PREFILL_BASE_S + p * K_PREFILL_S * params_b / share) * time_scale
    decode_step_s(b) = (DECODE_BASE_S + K_DECODE_S * params_b / share)
                       * (1 + BATCH_ALPHA * (b - 1)) * time_scale
    share            = compute_share * tensor_parallel_size

with ``params_b`` the model size in billions of parameters and ``compute_share`` the share of one
GPU's compute a partition has (1 for SPX, 1/8 for a CPX partition of an MI300X). Tensor
parallelism over ``t`` partitions multiplies the compute (communication is not modelled).

Constants: an 8 B model on a whole MI300X prefills a 32-token prompt in ~23 ms (20 ms + 32 x
10 us x 8), so its time to first token on an idle engine is ~35 ms (that prefill plus one 12 ms
decode step), then ~12 ms per output token at batch 1 (4 ms + 8 x 1 ms), ~21 ms at batch 16;
on a CPX partition (1/8) the same model takes ~108 ms to the first token and ~68 ms per token.
Prefill throughput (~12.5k tokens/s for 8 B) and decode speed are in the range vLLM reaches on
that hardware: plausible, not measured.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFILL_BASE_S = 0.020  # scheduling + kernel launch overhead of a prefill
K_PREFILL_S = 10e-6  # seconds per prompt token per billion parameters, whole GPU
DECODE_BASE_S = 0.004  # fixed cost of one decode step
K_DECODE_S = 0.001  # seconds per decode step per billion parameters, whole GPU
BATCH_ALPHA = 0.05  # each extra sequence in the batch slows a step by 5 %


def _share(compute_share: float, tensor_parallel_size: int) -> float:
    if not 0 < compute_share <= 1:
        raise ValueError("compute_share must be within (0, 1]")
    if tensor_parallel_size < 1:
        raise ValueError("tensor_parallel_size must be >= 1")
    return compute_share * tensor_parallel_size


def prefill_seconds(prompt_tokens: int, *, params_b: float, compute_share: float = 1.0,
                    tensor_parallel_size: int = 1, time_scale: float = 1.0) -> float:
    """Seconds to prefill a prompt of ``prompt_tokens`` tokens (see the module docstring)."""
    share = _share(compute_share, tensor_parallel_size)
    return (PREFILL_BASE_S + max(0, prompt_tokens) * K_PREFILL_S * params_b / share) * time_scale


def decode_step_seconds(batch: int, *, params_b: float, compute_share: float = 1.0,
                        tensor_parallel_size: int = 1, time_scale: float = 1.0) -> float:
    """Seconds of one decode step (one token for each of ``batch`` running sequences)."""
    share = _share(compute_share, tensor_parallel_size)
    per_token = DECODE_BASE_S + K_DECODE_S * params_b / share
    return per_token * (1 + BATCH_ALPHA * (max(1, batch) - 1)) * time_scale


def step_seconds(batch: int, new_prompt_tokens: Iterable[int], *, params_b: float,
                 compute_share: float = 1.0, tensor_parallel_size: int = 1,
                 time_scale: float = 1.0) -> float:
    """Seconds of one engine step: a decode step for the ``batch`` running sequences plus the
    prefill of the prompts admitted in this step."""
    decode = decode_step_seconds(batch, params_b=params_b, compute_share=compute_share,
                                 tensor_parallel_size=tensor_parallel_size, time_scale=time_scale)
    return decode + sum(prefill_seconds(p, params_b=params_b, compute_share=compute_share,
                                        tensor_parallel_size=tensor_parallel_size, time_scale=time_scale)
                        for p in new_prompt_tokens)

"""The documented latency formula (engine_emulator/timing.py) and the tokenizer, as pure functions."""

from __future__ import annotations

import pytest

from engine_emulator import timing, tokens
from engine_emulator.__main__ import guess_params_b
from engine_emulator.smi import occupancy_load


def test_prefill_follows_the_documented_formula():
    # 20 ms + 32 tokens x 10 us x 8 B / 1
    assert timing.prefill_seconds(32, params_b=8) == pytest.approx(0.02256)
    # a CPX partition: share 1/8
    assert timing.prefill_seconds(32, params_b=8, compute_share=1 / 8) == pytest.approx(0.02 + 32 * 10e-6 * 64)


def test_decode_step_follows_the_documented_formula():
    assert timing.decode_step_seconds(1, params_b=8) == pytest.approx(0.012)
    assert timing.decode_step_seconds(16, params_b=8) == pytest.approx(0.012 * 1.75)
    assert timing.decode_step_seconds(1, params_b=8, compute_share=0.125) == pytest.approx(0.068)
    assert timing.decode_step_seconds(1, params_b=70, compute_share=0.5, tensor_parallel_size=2) == \
        pytest.approx(0.004 + 0.070)


def test_step_adds_the_prefills_of_admitted_prompts():
    step = timing.step_seconds(3, [10, 20], params_b=8)
    assert step == pytest.approx(timing.decode_step_seconds(3, params_b=8)
                                 + timing.prefill_seconds(10, params_b=8) + timing.prefill_seconds(20, params_b=8))
    assert timing.step_seconds(3, [], params_b=8) == timing.decode_step_seconds(3, params_b=8)


def test_time_scale_multiplies_every_delay():
    assert timing.step_seconds(4, [100], params_b=8, time_scale=0.01) == \
        pytest.approx(timing.step_seconds(4, [100], params_b=8) * 0.01)


@pytest.mark.parametrize("fn", [
    lambda **kw: timing.prefill_seconds(64, **kw),
    lambda **kw: timing.decode_step_seconds(4, **kw),
])
def test_latency_grows_with_params_and_with_a_smaller_share(fn):
    sizes = [fn(params_b=b) for b in (1, 8, 70, 405)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    shares = [fn(params_b=8, compute_share=s) for s in (1, 0.5, 0.25, 0.125)]
    assert shares == sorted(shares) and len(set(shares)) == 4


def test_decode_step_grows_with_the_batch():
    steps = [timing.decode_step_seconds(b, params_b=8) for b in (1, 2, 8, 64)]
    assert steps == sorted(steps) and len(set(steps)) == 4


def test_plausible_numbers_for_an_8b_model_on_a_whole_mi300x():
    ttft = timing.step_seconds(1, [32], params_b=8)  # idle engine: the first step prefills and decodes
    assert 0.020 <= ttft <= 0.040
    assert timing.step_seconds(1, [32], params_b=8, compute_share=1 / 8) > ttft
    assert 0.010 <= timing.decode_step_seconds(1, params_b=8) <= 0.020


@pytest.mark.parametrize("share, tp", [(0, 1), (1.5, 1), (1, 0)])
def test_invalid_shares_are_refused(share, tp):
    with pytest.raises(ValueError):
        timing.decode_step_seconds(1, params_b=8, compute_share=share, tensor_parallel_size=tp)


@pytest.mark.parametrize("text, n", [("", 0), ("Hello, world!", 4), ("[emulated] x", 2), ("a  b\n\tc", 3)])
def test_tokenizer_counts(text, n):
    assert tokens.count_tokens(text) == n


def test_each_generated_piece_is_one_token():
    text = "".join(tokens.piece(i) for i in range(100))
    assert tokens.count_tokens(text) == 100
    assert text.startswith("[emulated]")


def test_a_stop_string_cuts_the_text_before_it():
    assert tokens.apply_stop("[emulated] This", " text", ["text"]) == ("[emulated] This ", True)
    assert tokens.apply_stop("[emulated] This", " text", ["model"]) == ("[emulated] This text", False)
    # completed across pieces: the cut falls inside text generated earlier
    assert tokens.apply_stop("a b", "c", ["bc"]) == ("a ", True)
    assert tokens.stop_holdback(["bc", "long stop"]) == 8 and tokens.stop_holdback([]) == 0


@pytest.mark.parametrize("name, b", [("meta-llama/Llama-3.1-70B-Instruct", 70), ("Qwen/Qwen2.5-0.5B", 0.5),
                                     ("mistralai/Mixtral-8x7B-v0.1", 7), ("some/model", 8)])
def test_model_size_is_guessed_from_the_name(name, b):
    assert guess_params_b(name) == b


def test_load_blends_occupancy_with_an_idle_floor():
    assert occupancy_load(0, 16) == 0.03
    assert occupancy_load(8, 16) == pytest.approx(0.52, abs=0.01)
    assert occupancy_load(16, 16) == 1.0

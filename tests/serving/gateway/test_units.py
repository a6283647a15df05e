"""The gateway's pure parts: SSE boundaries and usage, the route table, the balancer, the
verdict cache and the in-memory request tallies."""

from __future__ import annotations

import json

import pytest

from aimconsole.counters import ITL_BUCKETS, REQUEST_BUCKETS, TTFT_BUCKETS, RequestTally
from serving.gateway import sse
from serving.gateway.auth import VerdictCache
from serving.gateway.registry import Balancer, Upstream, base_url, build_table


def event(payload: dict | str) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


@pytest.mark.parametrize(("buf", "cut"), [
    (b"", 0), (b"data: {", 0), (b"data: 1\n\n", 9), (b"data: 1\n\ndata: 2", 9), (b"data: 1\r\n\r\ndata", 11),
])
def test_complete_prefix_finds_the_end_of_the_last_complete_event(buf, cut):
    assert sse.complete_prefix(buf) == cut


def test_the_usage_chunk_is_taken_out_unless_the_client_asked_for_it():
    usage = {"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
    block = event({"choices": [{"delta": {"content": 'say "usage": {'}}]}) + event(usage) + event("[DONE]")
    out, found, dropped = sse.take_usage(block, keep=False)
    assert found == sse.Usage(7, 3) and dropped == 1
    assert out == event({"choices": [{"delta": {"content": 'say "usage": {'}}]}) + event("[DONE]")
    kept, found, dropped = sse.take_usage(block, keep=True)
    assert kept == block and found == sse.Usage(7, 3) and dropped == 0


def test_blocks_without_a_usage_object_are_passed_untouched():
    block = event({"choices": [{"delta": {"content": "hi"}}], "usage": None})
    assert sse.take_usage(block, keep=False) == (block, None, 0)


def test_the_error_event_is_openai_shaped_and_ends_the_stream():
    raw = sse.error_event("boom")
    first, done = raw.split(b"\n\n")[:2]
    assert json.loads(first[len(b"data: "):]) == {"error": {"message": "boom", "type": "server_error", "param": None,
                                                            "code": "upstream_error"}}
    assert done == b"data: [DONE]"


@pytest.mark.parametrize("endpoint", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"])
def test_endpoints_lose_their_v1_suffix(endpoint):
    assert base_url(endpoint) == "http://h:1"


def test_the_table_finds_replicas_by_name_then_catalog_id_and_knows_models_without_replicas():
    rows = [("k1", "llama", "org/llama", "http://a", "", True, 1.0), ("k2", "llama-b", "org/llama", "http://b", "x", False, 1.0)]
    table = build_table(rows, [("llama", "org/llama"), ("llama-b", "org/llama"), ("qwen", "org/qwen")], 0.0)
    assert [u.key for u in table.lookup("llama") or ()] == ["k1"]
    assert {u.key for u in table.lookup("org/llama") or ()} == {"k1", "k2"}
    assert table.lookup("qwen") == () and table.lookup("org/qwen") == ()
    assert table.lookup("nope") is None


def up(key: str, version: float = 1.0) -> Upstream:
    return Upstream(key=key, deployment="d", model_id="m", base_url="http://x", served_model="", emulated=False, version=version)


def test_the_balancer_picks_least_outstanding_counting_other_processes():
    b = Balancer()
    a, c = up("a"), up("c")
    b.acquire(a)
    assert b.pick([a, c], set()) == c
    b.remote = {"c": 2}
    assert b.pick([a, c], set()) == a
    assert b.pick([a, c], {"a"}) == c
    b.release(a)
    assert b.local == {}


def test_an_ejected_replica_comes_back_with_a_newer_row_or_a_readmission():
    b = Balancer()
    a = up("a", version=5.0)
    b.eject(a)
    assert b.pick([a], set()) is None
    assert b.pick([up("a", version=5.0)], set()) is None
    assert b.pick([up("a", version=6.0)], set()) is not None
    b.readmit("a")
    assert b.pick([a], set()) == a


def test_verdicts_expire_and_the_cache_is_bounded(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("serving.gateway.auth.time.monotonic", lambda: now[0])
    cache = VerdictCache(size=2, ok_s=30, refused_s=3)
    cache.put("a", 200, "")
    cache.put("b", 401, "bad")
    now[0] += 4
    assert cache.get("b") is None and cache.get("a") is not None
    cache.put("c", 200, "")
    cache.put("d", 200, "")
    assert cache.get("a") is None and cache.get("d") is not None  # least recently used dropped


def test_tallies_bucket_and_merge():
    t = RequestTally()
    t.observe("ok", 0.3, ttft_s=0.02, prompt_tokens=5, generated_tokens=9)
    t.observe("cancelled", 99.0)
    t.observe_gap(0.004, 3)
    other = RequestTally()
    other.observe("error", 30.0)
    t.merge(other)
    assert t.results == {"ok": 1, "cancelled": 1, "error": 1}
    assert sum(t.durations) == 2 and t.durations[len(REQUEST_BUCKETS)] == 1  # cancelled not timed; 30 s in +Inf
    assert sum(t.ttft) == 1 and t.ttft[TTFT_BUCKETS.index(0.025)] == 1
    assert t.itl[ITL_BUCKETS.index(0.005)] == 3 and t.itl_sum == pytest.approx(0.012)
    assert (t.prompt_tokens, t.generated_tokens) == (5, 9)


def test_an_accepted_verdict_is_due_for_a_recheck_after_half_its_lifetime(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("serving.gateway.auth.time.monotonic", lambda: now[0])
    cache = VerdictCache(size=10, ok_s=30, refused_s=3)
    ok, refused = cache.put("a", 200, ""), cache.put("b", 403, "no")
    assert not cache.due(ok) and not cache.due(refused)
    now[0] = 16
    assert cache.due(cache.get("a")) and cache.get("b") is None

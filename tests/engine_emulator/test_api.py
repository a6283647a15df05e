"""The OpenAI-compatible API over real HTTP: shapes, streaming, stop, usage, errors."""

from __future__ import annotations

import json

import httpx
import pytest

from engine_emulator import tokens

from .conftest import MODEL, EngineProcess


def sse_events(response: httpx.Response) -> list:
    """Parsed ``data:`` events of a stream (``[DONE]`` kept as the string)."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        else:
            assert line == "", line
    return events


def test_health_and_models_say_emulated(shared_engine: EngineProcess):
    with shared_engine.client() as c:
        health = c.get("/health")
        assert health.status_code == 200 and health.content == b""
        models = c.get("/v1/models").json()
    assert models["object"] == "list"
    [entry] = models["data"]
    assert entry["id"] == MODEL and entry["object"] == "model" and entry["max_model_len"] == 256
    assert entry["emulated"] is True and entry["owned_by"] == "aim-engine-emulator"


def test_completion_counts_tokens_and_defaults_to_16(shared_engine: EngineProcess):
    with shared_engine.client() as c:
        body = c.post("/v1/completions", json={"model": MODEL, "prompt": "Hello, world!"}).json()
    assert body["object"] == "text_completion"
    [choice] = body["choices"]
    assert choice["text"].startswith("[emulated]") and choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}
    assert tokens.count_tokens(choice["text"]) == 16


def test_chat_completion_honours_max_completion_tokens(shared_engine: EngineProcess):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    with shared_engine.client() as c:
        body = c.post("/v1/chat/completions", json={"messages": messages, "max_completion_tokens": 7}).json()
    assert body["object"] == "chat.completion"
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    assert tokens.count_tokens(choice["message"]["content"]) == 7
    # 3 + (4 + 3) + (4 + 2) tokens: chat template overhead per message and before the reply
    assert body["usage"]["prompt_tokens"] == 16 and body["usage"]["completion_tokens"] == 7


def test_chat_without_max_tokens_fills_the_context_up_to_the_cap(shared_engine: EngineProcess):
    with shared_engine.client() as c:
        body = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    # max_model_len 256, 8 prompt tokens: until the context is full
    assert body["usage"]["completion_tokens"] == 256 - 8


def test_streamed_chat_has_role_first_usage_last_and_done(shared_engine: EngineProcess):
    req = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True,
           "stream_options": {"include_usage": True}}
    with shared_engine.client() as c, c.stream("POST", "/v1/chat/completions", json=req) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    assert len({ch["id"] for ch in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in ch["choices"][0]["delta"] for ch in chunks[1:-1])
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13}
    finals = [ch["choices"][0]["finish_reason"] for ch in chunks[:-1]]
    assert finals[-1] == "length" and set(finals[:-1]) == {None}
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks[:-1])
    assert tokens.count_tokens(text) == 5


def test_streamed_completion_without_include_usage_has_no_usage_chunk(shared_engine: EngineProcess):
    req = {"prompt": "x", "max_tokens": 3, "stream": True}
    with shared_engine.client() as c, c.stream("POST", "/v1/completions", json=req) as r:
        events = sse_events(r)
    assert events[-1] == "[DONE]" and len(events) == 4
    assert all(ev["object"] == "text_completion" and "usage" not in ev for ev in events[:-1])
    assert "".join(ev["choices"][0]["text"] for ev in events[:-1]) == "[emulated] This text"


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_string_ends_generation_before_it(shared_engine: EngineProcess, stream):
    # the filler reads "[emulated] This text comes from the AIM engine emulator, ..."
    req = {"prompt": "x", "max_tokens": 50, "stop": ["AIM eng", "never"], "stream": stream}
    with shared_engine.client() as c:
        if stream:
            with c.stream("POST", "/v1/completions", json=req) as r:
                events = sse_events(r)[:-1]
            text = "".join(ev["choices"][0]["text"] for ev in events)
            reason = events[-1]["choices"][0]["finish_reason"]
        else:
            body = c.post("/v1/completions", json=req).json()
            text, reason = body["choices"][0]["text"], body["choices"][0]["finish_reason"]
            assert body["usage"]["completion_tokens"] == 8  # up to and including " engine"
    assert text == "[emulated] This text comes from the "
    assert reason == "stop"


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/completions", b"{not json", 400, "Invalid JSON"),
    ("/v1/completions", b'{"max_tokens": 3}', 400, "prompt"),
    ("/v1/chat/completions", b'{"messages": []}', 400, "messages"),
    ("/v1/completions", b'{"prompt": "x", "model": "gpt-4"}', 404, "The model `gpt-4` does not exist."),
    ("/v1/completions", b'{"prompt": "x", "priority": 5}', 400, "Got priority 5 but Priority scheduling is not enabled."),
    ("/v1/completions", b'{"prompt": "x", "n": 2}', 400, "n must be 1"),
    ("/v1/completions", json.dumps({"prompt": "word " * 300}).encode(), 400, "maximum context length is 256"),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 300}', 400, "'max_tokens' or 'max_completion_tokens' is too large"),
])
def test_errors_use_vllms_shape(shared_engine: EngineProcess, path, body, status, message):
    with shared_engine.client() as c:
        r = c.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    err = r.json()
    assert err["object"] == "error" and err["code"] == status and message in err["message"]
    assert err["type"] == ("NotFoundError" if status == 404 else "BadRequestError")


def test_an_oversized_body_is_refused_with_413(shared_engine: EngineProcess):
    big = json.dumps({"prompt": "x" * (9 * 1024 * 1024)}).encode()
    with shared_engine.client() as c:
        r = c.post("/v1/completions", content=big)
        assert r.status_code == 413 and r.json()["code"] == 413
        assert c.get("/health").status_code == 200  # the server lives on


def test_metrics_count_tokens_and_requests(shared_engine: EngineProcess):
    before = shared_engine.metrics()
    with shared_engine.client() as c:
        c.post("/v1/completions", json={"prompt": "one two three", "max_tokens": 4})
    after = shared_engine.metrics()
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == 3
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 4
    assert after["vllm:request_success_total:length"] - before["vllm:request_success_total:length"] == 1
    assert after["vllm:time_to_first_token_seconds_count"] - before["vllm:time_to_first_token_seconds_count"] == 1
    assert after["vllm:inter_token_latency_seconds_count"] - before["vllm:inter_token_latency_seconds_count"] == 3
    assert after["aim_engine_emulator_info"] == 1
    text = httpx.get(shared_engine.url + "/metrics").text
    assert "# HELP vllm:num_requests_running Number of requests in model execution batches. (emulated)" in text

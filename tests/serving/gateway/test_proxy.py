"""Proxying through the gateway to real engine-emulator processes: streaming, usage, routing by
deployment name and catalog id, least-outstanding spreading, retries, a replica dying
mid-stream and a client going away."""

from __future__ import annotations

import json
import socket

import pytest

from tests.processes import wait_for
from tests.serving.gateway.conftest import HF_ID, add_replica, chat, make_deployment, sse_events

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_a_streamed_chat_arrives_chunk_by_chunk_while_the_engine_is_still_generating(start_engine, start_gateway):
    engine = start_engine("llama-served", time_scale=1.0)
    add_replica(make_deployment("llama"), engine.url, served_model="llama-served")
    gw = start_gateway()
    with gw.client() as client, client.stream("POST", "/v1/chat/completions", json=chat("llama", stream=True, max_tokens=60)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        # The first chunk is here and the engine has not finished: nothing was buffered to the end.
        assert engine.running() == 1 and engine.served() == 0
        events = [first[len("data: "):], *sse_events(lines)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # The gateway asked for usage (to count tokens) but the client did not: no usage chunk.
    assert not any(c.get("usage") for c in chunks)
    assert engine.served() == 1


def test_the_usage_chunk_reaches_a_client_that_asked_for_it(start_engine, start_gateway):
    engine = start_engine("llama")
    add_replica(make_deployment("llama"), engine.url, served_model="llama")
    gw = start_gateway()
    body = chat("llama", stream=True, max_tokens=12, stream_options={"include_usage": True})
    with gw.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        events = sse_events(r.iter_lines())
    usage = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")]
    assert len(usage) == 1 and usage[0]["completion_tokens"] == 12 and usage[0]["prompt_tokens"] > 0


def test_a_whole_completion_is_passed_through_with_its_usage(start_engine, start_gateway):
    engine = start_engine("llama")
    add_replica(make_deployment("llama"), engine.url)
    gw = start_gateway()
    with gw.client() as client:
        r = client.post("/v1/completions", json={"model": "llama", "prompt": "Hello", "max_tokens": 5})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion" and r.json()["usage"]["completion_tokens"] == 5
    assert engine.served() == 1


def test_requests_route_by_deployment_name_and_by_catalog_id(start_engine, start_gateway):
    engine = start_engine("served-name")
    add_replica(make_deployment("llama"), engine.url, served_model="served-name")
    gw = start_gateway()
    with gw.client() as client:
        by_name = client.post("/v1/chat/completions", json=chat("llama"))
        by_id = client.post("/v1/chat/completions", json=chat(HF_ID))
    assert by_name.status_code == 200 and by_id.status_code == 200, (by_name.text, by_id.text)
    # The upstream saw its own name (it answers 404 to any other).
    assert by_name.json()["model"] == "served-name"
    assert engine.served() == 2


def test_streams_spread_over_replicas_by_least_outstanding_requests(start_engine, start_gateway):
    a, b = start_engine("m", time_scale=1.0), start_engine("m", time_scale=1.0)
    deployment = make_deployment("m")
    add_replica(deployment, a.url, replica=0)
    add_replica(deployment, b.url, replica=1)
    gw = start_gateway()
    client = gw.client()
    streams = []
    try:
        for _ in range(4):
            cm = client.stream("POST", "/v1/chat/completions", json=chat("m", stream=True, max_tokens=400))
            r = cm.__enter__()
            lines = r.iter_lines()  # kept: dropping the iterator closes the response
            next(line for line in lines if line.startswith("data: "))
            streams.append((cm, lines))
        assert (a.running(), b.running()) == (2, 2)
    finally:
        for cm, _ in streams:
            cm.__exit__(None, None, None)
        client.close()
    wait_for(lambda: a.running() == 0 and b.running() == 0, 20, "the upstreams to see the disconnects")
    assert (a.served(), b.served()) == (2, 2)


def test_a_replica_that_refuses_connections_is_skipped_before_the_first_byte(start_engine, start_gateway):
    engine = start_engine("m")
    deployment = make_deployment("m")
    # A port bound but never listening: connections to it are refused, and no other test (or
    # xdist worker) can take it meanwhile, as it could a port that free_port() found free.
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        add_replica(deployment, f"http://127.0.0.1:{refusing.getsockname()[1]}", replica=0)
        add_replica(deployment, engine.url, replica=1)
        gw = start_gateway(probe_interval_s=3600)
        with gw.client() as client:
            codes = [client.post("/v1/chat/completions", json=chat("m", stream=i % 2 == 0)).status_code for i in range(6)]
            ready = client.get("/readyz").json()
    assert codes == [200] * 6
    assert engine.served() == 6
    assert len(ready["ejected"]) == 1


def test_a_replica_dying_mid_stream_ends_the_stream_with_an_error_event_and_leaves_routing(start_engine, start_gateway):
    a, b = start_engine("m", time_scale=1.0), start_engine("m", time_scale=1.0)
    deployment = make_deployment("m")
    add_replica(deployment, a.url, replica=0)
    add_replica(deployment, b.url, replica=1)
    gw = start_gateway(probe_interval_s=0.2)  # the killed engine's /health is refused: it stays out
    with gw.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=chat("m", stream=True, max_tokens=500)) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            victim, survivor = (a, b) if a.running() == 1 else (b, a)
            assert victim.running() == 1
            victim.kill()
            rest = sse_events(lines)  # ends: no hang (the client's read timeout would fail the test)
        assert rest[-1] == "[DONE]"
        error = json.loads(rest[-2])["error"]
        assert error["type"] == "server_error" and error["code"] == "upstream_error"
        served = survivor.served()
        codes = [client.post("/v1/chat/completions", json=chat("m", max_tokens=2)).status_code for _ in range(4)]
    assert codes == [200] * 4
    assert survivor.served() == served + 4


def test_a_client_that_goes_away_cancels_the_upstream_request(start_engine, start_gateway):
    engine = start_engine("m", time_scale=1.0)
    add_replica(make_deployment("m"), engine.url)
    gw = start_gateway()
    with gw.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=chat("m", stream=True, max_tokens=2000)) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            assert engine.running() == 1
        # Leaving the block closed the connection mid-stream.
        wait_for(lambda: engine.running() == 0, 20, "the engine to see the request cancelled")
    assert engine.served() == 1  # finished as "abort", long before its 2000 tokens
    wait_for(lambda: gw.gateway.balancer.local == {}, 10, "the outstanding count to drop")

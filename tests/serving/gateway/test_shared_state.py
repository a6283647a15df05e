"""What the gateway keeps in Redis and reads from it: replica-change announcements, the
outstanding counts shared between gateway processes, the request metrics — and how it keeps
routing when Redis is down."""

from __future__ import annotations

import json

import pytest

from tests.processes import free_port, wait_for
from tests.serving.gateway.conftest import HF_ID, add_replica, chat, make_deployment, sse_events

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_a_replica_change_announced_on_redis_is_routed_without_waiting_for_the_timer(start_engine, start_gateway):
    from serving.events import publish_replicas_changed
    from serving.models import Replica

    engine = start_engine("m")
    deployment = make_deployment("m")
    replica = add_replica(deployment, engine.url, state="starting")
    gw = start_gateway(refresh_s=3600)
    wait_for(lambda: gw.gateway.subscribed, 10, "the gateway to subscribe")
    with gw.client() as client:
        assert client.post("/v1/chat/completions", json=chat("m")).status_code == 503
        before = gw.gateway.refreshes
        Replica.objects.filter(pk=replica.pk).update(state="ready")
        publish_replicas_changed([deployment.pk])  # outside a transaction: published at once
        wait_for(lambda: gw.gateway.refreshes > before, 10, "the announcement to trigger a refresh", interval=0.05)
        assert client.post("/v1/chat/completions", json=chat("m")).status_code == 200
    assert engine.served() == 1


def test_gateway_processes_share_their_outstanding_counts_through_redis(start_engine, start_gateway):
    a, b = start_engine("m", time_scale=1.0), start_engine("m", time_scale=1.0)
    deployment = make_deployment("m")
    add_replica(deployment, a.url, replica=0)
    add_replica(deployment, b.url, replica=1)
    # A long TTL: on a loaded test machine a tick may come late; the count must not lapse meanwhile.
    first, second = (start_gateway(share_ttl_s=10, redis_timeout_s=2) for _ in range(2))
    with first.client() as c1, second.client() as c2:
        with c1.stream("POST", "/v1/chat/completions", json=chat("m", stream=True, max_tokens=2000)) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            busy, idle = (a, b) if a.running() == 1 else (b, a)
            wait_for(lambda: sum(second.gateway.balancer.remote.values()) == 1, 10, "the second gateway to read the count")
            assert second.gateway.peers == 1
            # The second gateway has nothing outstanding itself, yet sends every request to the
            # idle replica: without the shared count each would be a coin toss.
            for _ in range(6):
                assert c2.post("/v1/chat/completions", json=chat("m", max_tokens=2)).status_code == 200
            assert (idle.served(), busy.served()) == (6, 0)
    wait_for(lambda: sum(second.gateway.balancer.remote.values()) == 0, 10, "the count to drop once the stream ends")


def test_without_redis_the_gateway_routes_from_its_list_and_says_so(start_engine, start_gateway):
    engine = start_engine("m")
    deployment = make_deployment("m")
    add_replica(deployment, engine.url, replica=0)
    gw = start_gateway(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.2)
    with gw.client() as client:
        wait_for(lambda: client.get("/readyz").json()["redis"] == "down", 10, "the gateway to notice Redis is down")
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["replicas_as_of"]
        for i in range(4):
            assert client.post("/v1/chat/completions", json=chat("m", stream=i % 2 == 0)).status_code == 200
        # The database timer still refreshes the list: a second replica appears without Redis.
        other = start_engine("m")
        add_replica(deployment, other.url, replica=1)
        wait_for(lambda: len(gw.gateway.table.upstreams) == 2, 10, "the timer refresh")
        assert client.get("/readyz").json()["redis"] == "down"
    assert engine.served() == 4
    assert sum(t.results.get("ok", 0) for t in gw.gateway.tallies.values()) == 4  # kept for when Redis is back


def test_readyz_is_503_before_any_list_and_when_the_database_is_gone_too_long(start_gateway, monkeypatch):
    gw = start_gateway()
    with gw.client() as client:
        assert client.get("/readyz").status_code == 200
        monkeypatch.setattr("serving.gateway.app.load_table", lambda: (_ for _ in ()).throw(RuntimeError("db down")))
        gw.gateway.config = type(gw.gateway.config)(**{**gw.gateway.config.__dict__, "stale_after_s": 0.5})
        wait_for(lambda: client.get("/readyz").status_code == 503, 10, "the list to go stale")
        body = client.get("/readyz").json()
        assert body["ready"] is False and "db down" in body["database"]


def test_request_metrics_reach_the_console_metrics(start_engine, start_gateway, client, viewer):
    from tests.serving.gateway.conftest import make_key

    engine = start_engine("m", time_scale=1.0)
    add_replica(make_deployment("m"), engine.url)
    gw = start_gateway(flush_interval_s=0.2)
    prompt = 0
    with gw.client() as c:
        for i in range(3):
            body = chat("m", stream=True, max_tokens=5 + i, stream_options={"include_usage": True})
            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                events = sse_events(r.iter_lines())
            assert events[-1] == "[DONE]"
            prompt += json.loads(events[-2])["usage"]["prompt_tokens"]
        r = c.post("/v1/completions", json={"model": "m", "prompt": "hi", "max_tokens": 4})
        prompt += r.json()["usage"]["prompt_tokens"]
        with c.stream("POST", "/v1/chat/completions", json=chat("m", stream=True, max_tokens=2000)) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
    wait_for(lambda: engine.running() == 0, 20, "the cancelled stream to end")
    metrics_key = make_key(viewer, ["metrics"])

    def scrape() -> str:
        return client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_key}").content.decode()

    def sample(text: str, name: str, **labels: str) -> float:
        want = {"model": HF_ID, "emulated": "true", **labels}
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in want.items()):
                return float(line.rsplit(" ", 1)[1])
        return -1.0

    wait_for(lambda: sample(scrape(), "aim_model_requests_total", result="cancelled") == 1.0, 10, "the flush")
    text = scrape()
    assert sample(text, "aim_model_requests_total", result="ok") == 4.0
    assert sample(text, "aim_model_requests_total", result="error") == 0.0
    assert sample(text, "aim_model_generated_tokens_total") >= 5 + 6 + 7 + 4  # + the cancelled stream's chunks
    assert sample(text, "aim_model_prompt_tokens_total") == prompt > 0
    assert sample(text, "aim_model_time_to_first_token_seconds_count") == 4.0  # the streams, cancelled one too
    assert sample(text, "aim_model_inter_token_latency_seconds_count") >= 4 + 5 + 6
    assert sample(text, "aim_model_request_duration_seconds_count") == 4.0  # cancelled: counted, not timed

"""What the gateway refuses itself, in OpenAI's error shape, without forwarding anything: the
engine behind it counts no request and no prompt token for any of these."""

from __future__ import annotations

import pytest

from tests.processes import wait_for
from tests.serving.gateway.conftest import add_replica, chat, make_deployment, make_key

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture
def setup(start_engine, start_gateway):  # type: ignore[no-untyped-def]
    engine = start_engine("llama")
    add_replica(make_deployment("llama"), engine.url)
    starting = make_deployment("loading")
    add_replica(starting, engine.url, state="starting")
    make_deployment("nothing-yet")  # active, no replica row at all
    return engine, start_gateway(max_body_bytes=64 * 1024)


def assert_openai_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code and error["message"]
    return error


def test_refusals_are_answered_by_the_gateway_and_never_forwarded(setup, viewer):
    engine, gw = setup
    api_only = make_key(viewer, ["api", "metrics"])
    with gw.client(None) as anonymous, gw.client("aim_bogus_key") as bad, gw.client(api_only) as wrong_scope, gw.client() as good:
        r = anonymous.post("/v1/chat/completions", json=chat("llama"))
        assert_openai_error(r, 401, "invalid_api_key")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_openai_error(bad.post("/v1/chat/completions", json=chat("llama")), 401, "invalid_api_key")
        assert_openai_error(bad.get("/v1/models"), 401, "invalid_api_key")
        error = assert_openai_error(wrong_scope.post("/v1/chat/completions", json=chat("llama")), 403, "insufficient_scope")
        assert "inference" in error["message"]
        assert_openai_error(good.post("/v1/chat/completions", content=b'{"model": "llama", ',
                                      headers={"content-type": "application/json"}), 400, "invalid_json")
        assert_openai_error(good.post("/v1/chat/completions", json={"messages": []}), 400, "missing_model")
        assert_openai_error(good.post("/v1/chat/completions", json=["llama"]), 400, "missing_model")
        big = chat("llama")
        big["messages"][0]["content"] = "x" * (70 * 1024)
        assert_openai_error(good.post("/v1/chat/completions", json=big), 413, "request_too_large")
        # Chunked (no Content-Length): read incrementally, refused once past the limit.
        assert_openai_error(good.post("/v1/chat/completions", content=iter([b'{"model": "llama", "x": "', b"y" * 40_000,
                                                                            b"y" * 40_000, b'"}'])), 413, "request_too_large")
        assert_openai_error(good.post("/v1/chat/completions", json=chat("no-such-model")), 404, "model_not_found")
        for model in ("loading", "nothing-yet"):
            r = good.post("/v1/chat/completions", json=chat(model, stream=True))
            assert_openai_error(r, 503, "no_ready_replica")
            assert int(r.headers["retry-after"]) >= 1
        assert_openai_error(good.get("/v1/chat/completions"), 405, "method_not_allowed")
        assert_openai_error(good.get("/v2/anything"), 404, "not_found")
    assert engine.served() == 0 and engine.prompt_tokens() == 0
    # And the same key, once right, goes through (the refusals above were not cached against it).
    with gw.client() as good:
        assert good.post("/v1/chat/completions", json=chat("llama")).status_code == 200
    assert engine.served() == 1


def test_models_lists_deployments_with_a_routable_replica(setup):
    _, gw = setup
    with gw.client() as client:
        body = client.get("/v1/models").json()
        assert client.get("/healthz").json() == {"status": "ok"}
    assert body["object"] == "list"
    assert [(m["id"], m["catalog_id"], m["emulated"], m["replicas"]) for m in body["data"]] == [
        ("llama", "meta-llama/Llama-3.1-8B-Instruct", True, 1)]


def test_a_key_in_use_is_rechecked_in_the_background_and_its_revocation_seen(setup, viewer, monkeypatch):
    from django.utils import timezone

    from aimconsole.models import ApiToken

    engine, gw = setup
    monkeypatch.setattr(gw.gateway.verdicts, "ok_s", 0.4)  # re-checked after 0.2 s, trusted 0.4 s
    with gw.client() as client:
        assert client.post("/v1/chat/completions", json=chat("llama")).status_code == 200
        ApiToken.objects.update(revoked_at=timezone.now())
        checks = gw.gateway.auth_checks

        def refused() -> bool:
            return client.post("/v1/chat/completions", json=chat("llama", max_tokens=1)).status_code == 401
        wait_for(refused, 10, "the revocation to be seen", interval=0.05)
    assert gw.gateway.auth_checks > checks


def test_verdicts_are_cached_so_a_revoked_token_is_refused_only_after_the_cache(setup, viewer):
    from django.utils import timezone

    from aimconsole.models import ApiToken

    engine, gw = setup
    with gw.client() as client:
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=chat("llama")).status_code == 200
        assert gw.gateway.auth_checks == 1  # one token read for three requests
        ApiToken.objects.update(revoked_at=timezone.now())
        # Within the accepted verdict's lifetime the key still works (at most 30 s)...
        assert client.post("/v1/chat/completions", json=chat("llama")).status_code == 200
        gw.gateway.verdicts._items.clear()  # ...the lifetime, elapsed (or a background re-check saw it)
        assert_openai_error(client.post("/v1/chat/completions", json=chat("llama")), 401, "invalid_api_key")
        assert_openai_error(client.post("/v1/chat/completions", json=chat("llama")), 401, "invalid_api_key")
        assert gw.gateway.auth_checks == 2  # the refusal is cached too
    assert engine.served() == 4

"""/healthz and /readyz against a real Redis server that the test stops."""

from __future__ import annotations

import socket

import pytest
from django.db import OperationalError

from aimconsole import embedded
from tests.conftest import _wait_for_redis

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.redis
def test_readyz_is_ok_with_database_and_redis(client, redis_url):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


@pytest.mark.redis
def test_readyz_answers_503_naming_redis_when_redis_stops(client, settings, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = embedded.start_redis(port, tmp_path)
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_redis(settings.REDIS_URL)
        assert client.get("/readyz").status_code == 200
    finally:
        server.terminate()
        server.wait(10)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"
    assert "redis" in body["reason"] and "Connection" in body["reason"]


def test_readyz_answers_503_when_the_database_fails(client, monkeypatch):
    from aimconsole import health

    monkeypatch.setattr(health, "_check_redis", lambda: None)

    def broken_cursor(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("database is gone")

    monkeypatch.setattr(health.connection, "cursor", broken_cursor)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "database is gone" in response.json()["reason"]

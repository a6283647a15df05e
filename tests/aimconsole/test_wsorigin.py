"""The WebSocket Origin check compares scheme, host and port: a page served from another port of
the same host is another origin and may not open the console's sockets."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from aimconsole.wsorigin import SameOriginValidator, origin_allowed

HOSTS = ["localhost", "127.0.0.1", "[::1]", ".example.com"]


@pytest.mark.parametrize("origin, host, allowed", [
    ("http://localhost:8000", "localhost:8000", True),
    ("http://localhost:9999", "localhost:8000", False),  # same host, another port
    ("http://localhost", "localhost", True),
    ("http://localhost:80", "localhost", True),  # the default port, spelt out
    ("http://localhost:8000", "localhost", False),
    ("http://localhost", "localhost:8000", False),
    ("https://console.example.com", "console.example.com", True),  # behind a TLS proxy
    ("https://console.example.com:8443", "console.example.com", False),
    ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
    ("http://[::1]:8000", "[::1]:8000", True),
    ("http://[::1]:8001", "[::1]:8000", False),
    ("http://evil.example", "localhost", False),
    ("http://localhost", "evil.test", False),  # a Host header outside ALLOWED_HOSTS
    ("null", "localhost", False), (None, "localhost", False), ("http://localhost:99999", "localhost", False),
    ("ftp://localhost", "localhost", False),
])
def test_origin_must_match_the_host_including_the_port(origin, host, allowed):
    assert origin_allowed(origin, host, allowed_hosts=HOSTS, trusted_origins=[]) is allowed


def test_trusted_origins_are_matched_exactly_including_the_port():
    trusted = ["https://console.example.com:8443"]
    assert origin_allowed("https://console.example.com:8443", "127.0.0.1:8000", allowed_hosts=HOSTS, trusted_origins=trusted)
    assert not origin_allowed("https://console.example.com:9443", "127.0.0.1:8000", allowed_hosts=HOSTS,
                              trusted_origins=trusted)


def _attempt(application, origin: bytes, host: bytes) -> bool:  # type: ignore[no-untyped-def]
    async def run() -> bool:
        communicator = WebsocketCommunicator(application, "/ws/operations/1/", headers=[(b"origin", origin), (b"host", host)])
        connected, _ = await communicator.connect()
        if connected:
            await communicator.disconnect()
        return connected

    return async_to_sync(run)()


def test_the_validator_lets_the_same_origin_through():
    async def accept(scope, receive, send):  # type: ignore[no-untyped-def]
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    app = SameOriginValidator(accept)
    assert _attempt(app, b"http://localhost:8000", b"localhost:8000")
    assert not _attempt(app, b"http://localhost:9999", b"localhost:8000")


@pytest.mark.django_db(transaction=True)
def test_the_console_refuses_a_socket_from_another_port_before_any_consumer_runs():
    from aimconsole.asgi import application

    assert not _attempt(application, b"http://localhost:9999", b"localhost:8000")

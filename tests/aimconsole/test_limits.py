"""Unbounded requests are refused fast and change nothing: over-long sign-in fields, bodies
larger than AIM_MAX_BODY_BYTES (refused on the announced Content-Length before a byte of the
body is read: Django middleware, the ASGI app and daphne itself), malformed Content-Length."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

import pytest
from axes.models import AccessAttempt

from aimconsole.models import AuditEvent

pytestmark = pytest.mark.django_db
HUGE = "10000000000"  # 10 GB announced


# --- sign-in ---------------------------------------------------------------------------------------

def test_a_ten_megabyte_username_is_refused_fast_with_413(client, viewer):
    started = time.monotonic()
    response = client.post("/accounts/login/", {"username": "u" * 10_000_000, "password": "x"})
    assert response.status_code == 413 and time.monotonic() - started < 3
    assert not AccessAttempt.objects.exists() and not AuditEvent.objects.filter(action__in=("auth.login", "auth.login_failed")).exists()


@pytest.mark.parametrize("field, size", [("username", 151), ("username", 1_000_000), ("password", 4097)])
def test_over_long_sign_in_fields_are_refused_before_authenticating(client, viewer, field, size):
    data = {"username": "vera", "password": "pw-vera", field: "a" * size}
    response = client.post("/accounts/login/", data)
    assert response.status_code == 400
    assert field.encode() in response.content and b"a" * 200 not in response.content  # not echoed back
    assert not AccessAttempt.objects.exists() and not AuditEvent.objects.filter(action__in=("auth.login", "auth.login_failed")).exists()
    assert "_auth_user_id" not in client.session


def test_a_wrong_password_is_still_an_ordinary_failed_sign_in(client, viewer):
    response = client.post("/accounts/login/", {"username": "vera", "password": "nope"})
    assert response.status_code == 200 and AuditEvent.objects.filter(action="auth.login_failed").exists()


def test_the_admin_sign_in_does_not_authenticate_over_long_fields(client, admin_user):
    client.post("/admin/login/", {"username": "ada", "password": "p" * 5000})
    assert not AccessAttempt.objects.exists() and not AuditEvent.objects.filter(action__in=("auth.login", "auth.login_failed")).exists()


# --- announced body sizes (Django) -----------------------------------------------------------------

def test_a_body_announced_larger_than_the_limit_is_refused_before_it_is_read(api_client_for, admin_user):
    # The test client's payload holds 10 bytes: reading the announced 10 GB would fail loudly.
    response = api_client_for(admin_user).generic("POST", "/api/v1/tokens/", b'{"name":1}', content_type="application/json",
                                                  CONTENT_LENGTH=HUGE)
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "too_large" and "AIM_MAX_BODY_BYTES" in body["message"]
    assert body["detail"]["limit_bytes"] > 0


def test_an_oversized_body_is_refused_with_413(api_client_for, operator, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api_client_for(operator).post("/api/v1/tokens/", {"name": "x" * 5000}, format="json")
    assert response.status_code == 413


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "12, 13"])
def test_a_malformed_content_length_is_400(api_client_for, admin_user, value):
    response = api_client_for(admin_user).generic("POST", "/api/v1/tokens/", b"{}", content_type="application/json",
                                                  CONTENT_LENGTH=value)
    assert response.status_code == 400 and "Content-Length" in response.json()["message"]


# --- the ASGI application ---------------------------------------------------------------------------

def _scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/api/v1/tokens/", "raw_path": b"/api/v1/tokens/", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"), *headers],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


def _run_asgi(scope: dict, chunks: list[bytes]) -> tuple[list[dict], int]:
    from aimconsole.asgi import application

    sent: list[dict] = []
    reads = 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        if reads > len(chunks):
            await asyncio.sleep(30)  # a client that announced more than it sends
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[reads - 1], "more_body": reads < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(application(scope, receive, send), timeout=10))
    return sent, reads


def test_the_asgi_app_refuses_an_announced_oversized_body_without_reading_it():
    started = time.monotonic()
    sent, reads = _run_asgi(_scope([(b"content-length", HUGE.encode())]), [b'{"name": 1}'])
    assert time.monotonic() - started < 3 and reads == 0
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["code"] == "too_large"


def test_the_asgi_app_refuses_a_body_that_grows_past_the_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    sent, _ = _run_asgi(_scope([]), [b"x" * 600, b"x" * 600, b"x" * 600])  # no Content-Length (chunked)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413


# --- daphne -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_daphne_answers_413_at_once_to_an_announced_oversized_body(process_env, tmp_path):
    from tests.processes import Process, free_port, wait_for

    port = free_port()
    server = Process([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aimconsole.asgi:application"],
                     process_env, tmp_path / "daphne.log")
    try:
        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(up, 60, "daphne to listen")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"POST /api/v1/tokens/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + HUGE.encode() + b"\r\n\r\n0123456789")
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413"), (reply, server.output())
        assert time.monotonic() - started < 3
    finally:
        server.stop()

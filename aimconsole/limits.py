"""Request body size: refused with 413 before the body is read.

A client may announce ``Content-Length: 10000000000`` and send 10 bytes; a server that waits
for the body holds a worker until it times out. The limit is ``DATA_UPLOAD_MAX_MEMORY_SIZE``
(``AIM_MAX_BODY_BYTES``) and one rule, ``content_length_refusal``, judges the announced length
at each layer a request can reach first:

- daphne (``install_daphne_limit``, called by aimconsole/asgi.py): Twisted reads the whole
  body before daphne calls the application, so an ASGI middleware would learn of the request
  only once the body had arrived. The check runs when the headers are in, answers 413 and
  closes the connection;
- the ASGI application (``BodySizeLimitASGI``): for other ASGI servers, and for bodies without
  a Content-Length (chunked), whose size is counted as they arrive;
- Django (``BodySizeLimitMiddleware``, first in MIDDLEWARE): for WSGI and the test client.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def max_body_bytes() -> int:
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    limit_bytes: int

    def body(self) -> bytes:
        return json.dumps({"code": self.code, "message": self.message,
                           "detail": {"limit_bytes": self.limit_bytes}}).encode()


def too_large(limit: int, announced: int | None = None) -> Refusal:
    size = f"{announced} bytes announced" if announced is not None else "the body grew past the limit"
    return Refusal(413, "too_large", f"Request body too large: {size}; the limit is {limit} bytes (AIM_MAX_BODY_BYTES).",
                   limit)


def content_length_refusal(values: Sequence[str], limit: int) -> Refusal | None:
    """The refusal for a request's Content-Length header values (none: no header), or None.

    Several headers must agree (RFC 9110 §8.6); each value is a decimal byte count.
    """
    if not values:
        return None
    distinct = {value.strip() for value in values}
    if len(distinct) != 1 or not next(iter(distinct)).isdigit():
        return Refusal(400, "invalid", f"Content-Length must be one non-negative whole number, got {', '.join(values)!r}",
                       limit)
    announced = int(distinct.pop())
    return too_large(limit, announced) if announced > limit else None


def _refusal_response(refusal: Refusal) -> HttpResponse:
    return JsonResponse(json.loads(refusal.body()), status=refusal.status)


class BodySizeLimitMiddleware:
    """First in MIDDLEWARE: nothing before it reads the body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = request.META.get("CONTENT_LENGTH")
        refusal = content_length_refusal([raw] if raw else [], max_body_bytes())
        if refusal is not None:
            return _refusal_response(refusal)
        return self.get_response(request)


async def _send_refusal(send: Send, refusal: Refusal) -> None:
    body = refusal.body()
    await send({"type": "http.response.start", "status": refusal.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimitASGI:
    """Wraps the HTTP application: refuses on the announced length without receiving the body,
    and counts bodies of unannounced length, answering 413 once they pass the limit (the
    application is told the client left, so it answers nothing itself)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = max_body_bytes()
        lengths = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name.lower() == b"content-length"]
        refusal = content_length_refusal(lengths, limit)
        if refusal is not None:
            await _send_refusal(send, refusal)
            return
        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, tracked_send)
        if exceeded and not started:
            await _send_refusal(send, too_large(limit))


class _Discard(io.BytesIO):
    """Where the bytes of a refused body go (daphne keeps writing what it already read)."""

    def write(self, data: Any) -> int:
        return len(data)


def install_daphne_limit() -> None:
    """Make daphne answer 413 as soon as an oversized Content-Length is announced (see the
    module doc). Idempotent; a no-op where daphne is not installed."""
    try:
        from daphne import http_protocol
    except ImportError:  # pragma: no cover - daphne is a dependency; other servers need nothing
        return
    if getattr(http_protocol.WebRequest, "aim_body_limit", False):
        return

    base = http_protocol.WebRequest

    class LimitedWebRequest(base):  # type: ignore[misc, valid-type]
        aim_body_limit = True

        def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
            limit = max_body_bytes()
            if length is None or length <= limit:
                super().gotLength(length)
                return
            body = too_large(limit, length).body()
            self.content = _Discard()
            self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the refusal
            self.channel.transport.write(
                b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            self.channel.loseConnection()

    # HTTPFactory.buildProtocol reads the module's WebRequest for every connection.
    http_protocol.WebRequest = LimitedWebRequest

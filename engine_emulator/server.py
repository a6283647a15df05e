"""The emulator's HTTP API: a plain ASGI app shaped like vLLM's OpenAI-compatible server.

Routes: ``GET /health`` (200 empty when ready; 503 while the model "loads" or while draining),
``GET /v1/models``, ``GET /metrics`` (Prometheus text), ``POST /v1/completions`` and
``POST /v1/chat/completions`` (optionally ``stream: true``: server-sent events
``data: {chunk}`` ... ``data: [DONE]``). Errors use vLLM's shape
``{"object": "error", "message", "type", "param", "code"}``.

Sampling fields the emulator cannot honour (temperature, top_p, seed, ...) are accepted and
ignored; ``n`` must be 1. A request's ``priority`` (vLLM's extra field) must be 0 unless the
engine runs ``--scheduling-policy priority``. A client that disconnects aborts its sequence:
it leaves the queue or the running batch at once.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from . import tokens
from .engine import Engine, Sequence
from .metrics import CONTENT_TYPE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_DRAIN_BYTES = 8 * MAX_BODY_BYTES
CHAT_DEFAULT_MAX_TOKENS = 256  # vLLM's default is "until the context is full": capped so it ends
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's and vLLM's default for /v1/completions
OWNED_BY = "aim-engine-emulator"


class ApiError(Exception):
    """An error answered in vLLM's shape."""

    def __init__(self, status: int, message: str, err_type: str = "BadRequestError",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.err_type, self.param = status, message, err_type, param

    def body(self) -> dict:
        return {"object": "error", "message": self.message, "type": self.err_type,
                "param": self.param, "code": self.status}


@dataclass(frozen=True)
class GenerationRequest:
    """A validated completion or chat request."""

    chat: bool
    model: str
    prompt_tokens: int
    max_tokens: int
    stop: list[str]
    stream: bool
    include_usage: bool
    priority: int


class App:
    """ASGI application around one ``Engine``. ``ready`` turns true when the model has
    "loaded"; ``draining`` is set on SIGTERM/SIGINT."""

    def __init__(self, engine: Engine, model_root: str) -> None:
        self.engine = engine
        self.model_root = model_root
        self.ready = False
        self.draining = False
        self.created = int(time.time())

    @property
    def model_name(self) -> str:
        return self.engine.config.served_model_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        try:
            if path == "/health" and method == "GET":
                await _respond(send, 200 if self.ready and not self.draining else 503, b"", b"text/plain")
            elif path == "/v1/models" and method == "GET":
                await _json(send, 200, self._models())
            elif path == "/metrics" and method == "GET":
                await _respond(send, 200, self.engine.metrics.render(), CONTENT_TYPE.encode())
            elif path in ("/v1/completions", "/v1/chat/completions"):
                if method != "POST":
                    raise ApiError(405, "Method Not Allowed", "MethodNotAllowed")
                await self._generate(scope, receive, send, chat=path.endswith("chat/completions"))
            else:
                raise ApiError(404, "Not Found", "NotFoundError")
        except ApiError as err:
            await _json(send, err.status, err.body())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _models(self) -> dict:
        return {"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": self.created, "owned_by": OWNED_BY,
            "root": self.model_root, "parent": None, "max_model_len": self.engine.config.max_model_len,
            "permission": [], "emulated": True,
        }]}

    # -- generation ----------------------------------------------------------------------
    async def _generate(self, scope: Scope, receive: Receive, send: Send, *, chat: bool) -> None:
        if self.draining or not self.ready:
            raise ApiError(503, "The server is shutting down." if self.draining else "The model is loading.",
                           "ServiceUnavailableError")
        body = await _read_body(scope, receive)
        req = self._parse(body, chat=chat)
        seq = Sequence(request_id=("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
                       prompt_tokens=req.prompt_tokens, max_tokens=req.max_tokens, stop=req.stop,
                       priority=req.priority)
        self.engine.submit(seq)
        gone = asyncio.get_running_loop().create_task(_wait_disconnect(receive))
        try:
            if req.stream:
                await self._stream(send, req, seq, gone)
            else:
                if await _wait_finished(seq, gone):
                    await _json(send, 200, self._full_response(req, seq))
        finally:
            gone.cancel()
            if not seq.finished:  # the client went away (or the send failed): free the slot now
                self.engine.abort(seq)
            print(f"INFO: {seq.request_id} {'chat' if chat else 'completion'} prompt_tokens={seq.prompt_tokens} "
                  f"completion_tokens={seq.completion_tokens} finish={seq.finish_reason}", flush=True)

    def _parse(self, body: bytes, *, chat: bool) -> GenerationRequest:
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, f"Invalid JSON body: {err}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        model = data.get("model", self.model_name)
        if model != self.model_name:
            raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError")
        if chat:
            messages = data.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise ApiError(400, "Field required: messages (a non-empty list of objects)", param="messages")
            prompt_tokens = tokens.chat_prompt_tokens(messages)
        else:
            prompt = data.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise ApiError(400, "Field required: prompt (a string)", param="prompt")
            prompt_tokens = tokens.count_tokens(prompt)
        if data.get("n", 1) != 1:
            raise ApiError(400, "n must be 1 on the emulated engine", param="n")
        max_len = self.engine.config.max_model_len
        if prompt_tokens >= max_len:
            raise ApiError(400, f"This model's maximum context length is {max_len} tokens. However, your "
                                f"request has {prompt_tokens} input tokens. Please reduce the length of the "
                                "input messages.", param="messages" if chat else "prompt")
        max_tokens = data.get("max_completion_tokens") if chat else None
        if max_tokens is None:
            max_tokens = data.get("max_tokens")
        if max_tokens is None:
            max_tokens = (min(CHAT_DEFAULT_MAX_TOKENS, max_len - prompt_tokens) if chat
                          else COMPLETION_DEFAULT_MAX_TOKENS)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ApiError(400, "max_tokens must be an integer of at least 1", param="max_tokens")
        if prompt_tokens + max_tokens > max_len:
            raise ApiError(400, f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This "
                                f"model's maximum context length is {max_len} tokens and your request has "
                                f"{prompt_tokens} input tokens ({max_tokens} > {max_len} - {prompt_tokens}).",
                           param="max_tokens")
        stop = data.get("stop")
        stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ApiError(400, "stop must be a string or a list of strings", param="stop")
        priority = data.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ApiError(400, "priority must be an integer", param="priority")
        if priority != 0 and self.engine.config.scheduling_policy != "priority":
            raise ApiError(400, f"Got priority {priority} but Priority scheduling is not enabled.")
        options = data.get("stream_options") or {}
        stream = bool(data.get("stream", False))
        return GenerationRequest(chat=chat, model=model, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                                 stop=[s for s in stop if s], stream=stream,
                                 include_usage=stream and bool(isinstance(options, dict) and options.get("include_usage")),
                                 priority=priority)

    def _usage(self, seq: Sequence) -> dict:
        return {"prompt_tokens": seq.prompt_tokens, "completion_tokens": seq.completion_tokens,
                "total_tokens": seq.prompt_tokens + seq.completion_tokens}

    def _full_response(self, req: GenerationRequest, seq: Sequence) -> dict:
        if req.chat:
            choice: dict = {"index": 0, "message": {"role": "assistant", "content": seq.text},
                            "logprobs": None, "finish_reason": seq.finish_reason, "stop_reason": None}
        else:
            choice = {"index": 0, "text": seq.text, "logprobs": None, "finish_reason": seq.finish_reason,
                      "stop_reason": None}
        return {"id": seq.request_id, "object": "chat.completion" if req.chat else "text_completion",
                "created": int(time.time()), "model": self.model_name, "choices": [choice],
                "usage": self._usage(seq), "emulated": True}

    def _chunk(self, req: GenerationRequest, seq: Sequence, delta: str, *, first: bool,
               finish_reason: str | None) -> dict:
        if req.chat:
            d: dict = {"role": "assistant", "content": delta} if first else {"content": delta}
            choice: dict = {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"id": seq.request_id, "object": "chat.completion.chunk" if req.chat else "text_completion",
                "created": int(time.time()), "model": self.model_name, "choices": [choice]}

    async def _stream(self, send: Send, req: GenerationRequest, seq: Sequence, gone: asyncio.Task[None]) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]})
        holdback = tokens.stop_holdback(seq.stop)
        sent, first = 0, True

        async def event(payload: dict | str) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            await send({"type": "http.response.body", "body": f"data: {text}\n\n".encode(), "more_body": True})

        if req.chat:  # vLLM's first chat chunk: the role, no content yet
            await event(self._chunk(req, seq, "", first=True, finish_reason=None))
            first = False
        while True:
            if not await _wait_changed(seq, gone):
                return  # client gone: the caller aborts the sequence
            upto = len(seq.text) if seq.finished else max(sent, len(seq.text) - holdback)
            delta, sent = seq.text[sent:upto], upto
            if seq.finished:
                await event(self._chunk(req, seq, delta, first=first, finish_reason=seq.finish_reason))
                break
            if delta:
                await event(self._chunk(req, seq, delta, first=first, finish_reason=None))
                first = False
        if req.include_usage:
            usage_chunk = self._chunk(req, seq, "", first=False, finish_reason=None)
            usage_chunk["choices"], usage_chunk["usage"] = [], self._usage(seq)
            await event(usage_chunk)
        await event("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_changed(seq: Sequence, gone: asyncio.Task[None]) -> bool:
    """Wait for the next token or the finish; False if the client disconnected first."""
    changed = asyncio.ensure_future(seq.changed.wait())
    try:
        await asyncio.wait({changed, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        changed.cancel()
    if seq.changed.is_set():
        seq.changed.clear()
        return True
    return False


async def _wait_finished(seq: Sequence, gone: asyncio.Task[None]) -> bool:
    while not seq.finished:
        if not await _wait_changed(seq, gone):
            return False
    return True


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    """The request body, at most ``MAX_BODY_BYTES`` (else 413). An oversized body is still read
    to its end (up to ``MAX_DRAIN_BYTES``) so that the client, still sending, gets the 413 rather
    than a reset connection."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "Client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        more = message.get("more_body", False)
        if size > MAX_BODY_BYTES and (not more or size > MAX_DRAIN_BYTES):
            raise ApiError(413, f"Request body too large (limit {MAX_BODY_BYTES} bytes)", "RequestTooLarge")
        if not more:
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json(send: Send, status: int, payload: dict) -> None:
    await _respond(send, status, json.dumps(payload).encode(), b"application/json")

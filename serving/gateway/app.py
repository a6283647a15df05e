"""The gateway's ASGI application: routing of the five paths, lifespan (background loops),
authentication, and proxying with retries, streaming and metrics. See the package docstring
for the design."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import redis
import redis.asyncio as aioredis

from aimconsole import counters
from serving.gateway import sse
from serving.gateway.auth import VerdictCache, check
from serving.gateway.config import GatewayConfig
from serving.gateway.registry import Balancer, RouteTable, Upstream, load_table

log = logging.getLogger("serving.gateway")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")

INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions")
SHARD_STREAMS = 8  # requests one upstream pool carries before the next pool is opened
JSON = b"application/json"


class ClientGone(Exception):
    """The client disconnected while we read its request."""


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


async def respond(send: Send, status: int, body: bytes, *, content_type: bytes = JSON,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def respond_error(send: Send, status: int, message: str, type_: str, code: str | None,
                        headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await respond(send, status, error_body(message, type_, code), headers=headers)


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class Gateway:
    """One gateway process's state: the route table, the balancer, the verdict cache, the
    metrics tallies, the pooled upstream client and the background loops."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        from django.conf import settings

        from serving.events import replicas_channel

        self.config = config or GatewayConfig.from_settings()
        self.prefix = settings.REDIS_KEY_PREFIX  # read once: every key of this process
        self.channel = replicas_channel()
        self.id = uuid.uuid4().hex[:12]
        self.table: RouteTable | None = None
        self.balancer = Balancer()
        self.verdicts = VerdictCache(self.config.auth_cache_size, self.config.auth_ok_cache_s, self.config.auth_refused_cache_s)
        self.tallies: dict[tuple[str, bool], counters.RequestTally] = {}
        self.redis_up: bool | None = None   # None until the first Redis call
        self.db_ok_at = 0.0                 # monotonic time of the last good database read
        self.db_error = ""
        self.refreshes = 0                  # database reads of the table (tests and /readyz)
        self.auth_checks = 0                # database reads of tokens (cache misses)
        self.peers = 0                      # other gateway processes seen in Redis
        self.subscribed = False             # listening to the replica announcements
        self._remote_at = 0.0               # monotonic time of the last read of the others' counts
        self._refresh = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.AsyncClient | None = None      # health probes
        self._shards: dict[str, list[_Shard]] = {}       # base URL -> proxying clients
        self._rechecking: set[str] = set()                # key digests being re-checked
        self._ssl: ssl.SSLContext | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._redis: aioredis.Redis | None = None
        self._sync_redis: redis.Redis | None = None

    # --- ASGI entry -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 — reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        c = self.config
        self._refresh = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=c.db_threads, thread_name_prefix="gateway-db")
        self._client = self._new_client(c.max_connections)
        self._redis = aioredis.Redis.from_url(c.redis_url, socket_connect_timeout=c.redis_timeout_s,
                                              socket_timeout=c.redis_timeout_s)
        self._sync_redis = redis.Redis.from_url(c.redis_url, socket_connect_timeout=c.redis_timeout_s,
                                                socket_timeout=c.redis_timeout_s)
        await self.refresh_table()
        for loop in (self._refresh_loop, self._probe_loop, self._share_loop, self._subscribe_loop, self._flush_loop):
            self._tasks.append(asyncio.create_task(loop(), name=f"gateway-{loop.__name__}"))

    def _new_client(self, max_connections: int) -> httpx.AsyncClient:
        c = self.config
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()  # once: loading the CA bundle takes ~25 ms per client
        return httpx.AsyncClient(
            verify=self._ssl,
            timeout=httpx.Timeout(connect=c.connect_timeout_s, read=c.first_token_timeout_s, write=c.write_timeout_s,
                                  pool=c.connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                                keepalive_expiry=30),
            follow_redirects=False, trust_env=False,
        )

    def _client_for(self, u: Upstream) -> _Shard:
        """A pooled client for ``u``'s endpoint, the least busy of up to ``client_shards``; a new
        one is made only when every existing one carries ``SHARD_STREAMS`` requests, so light
        traffic stays on one warm pool. Why several: httpcore's pool scans all its requests
        against all its connections whenever a request starts or ends (O(requests x
        connections)); small pools keep that cheap at hundreds of concurrent streams."""
        shards = self._shards.setdefault(u.base_url, [])
        best = min(shards, key=lambda shard: shard.active) if shards else None
        if best is None or (best.active >= SHARD_STREAMS and len(shards) < max(1, self.config.client_shards)):
            best = _Shard(self._new_client(self.config.max_connections))
            shards.append(best)
        return best

    async def shutdown(self) -> None:
        """Stop the loops, flush the metrics, close the clients. Every step is bounded: a
        stuck Redis or database must not keep the process from exiting."""
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=3)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush_metrics(), 3)
        for client in [self._client, *(shard.client for shards in self._shards.values() for shard in shards)]:
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), 2)
        self._shards.clear()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._redis.delete(self._counts_key()), 1)
                await asyncio.wait_for(self._redis.zrem(self._members_key(), self.id), 1)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._redis.aclose(), 1)
        if self._sync_redis is not None:
            self._sync_redis.close()
        if self._pool is not None:
            self._pool.submit(_close_db)
            self._pool.shutdown(wait=False)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._pool is not None, "the gateway has not started (ASGI lifespan)"
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- routing of the paths -----------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path in INFERENCE_PATHS:
            if method != "POST":
                return await respond_error(send, 405, f"{path} takes POST.", "invalid_request_error", "method_not_allowed",
                                           [(b"allow", b"POST")])
            if await self._authenticate(scope, send):
                await self._proxy(scope, receive, send, path)
            return
        if method not in ("GET", "HEAD"):
            return await respond_error(send, 405 if path in ("/v1/models", "/healthz", "/readyz") else 404,
                                       f"No route for {method} {path}.", "invalid_request_error", "not_found")
        if path == "/v1/models":
            if await self._authenticate(scope, send):
                await respond(send, 200, json.dumps(self.models()).encode())
        elif path == "/healthz":
            await respond(send, 200, b'{"status": "ok"}')
        elif path == "/readyz":
            ready, body = self.readiness()
            await respond(send, 200 if ready else 503, json.dumps(body).encode())
        else:
            await respond_error(send, 404, f"No route for {method} {path}.", "invalid_request_error", "not_found")

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: deployments with a routable replica (id = deployment name)."""
        table = self.table or RouteTable()
        data = []
        for name, group in sorted(table.by_name.items()):
            usable = [u for u in group if self.balancer.usable(u)]
            data.append({"id": name, "object": "model", "created": int(table.loaded_at), "owned_by": "aim-console",
                         "root": group[0].model_id, "catalog_id": group[0].model_id,
                         "emulated": any(u.emulated for u in group), "replicas": len(usable)})
        return {"object": "list", "data": data}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``: 503 when no replica list was ever loaded, or the database has not
        answered for ``stale_after_s`` (the list may be that old); otherwise 200, with Redis
        "up" or "down" (routing goes on without it; the counts of other processes are then
        unknown) and the list's age."""
        table = self.table
        age = time.monotonic() - self.db_ok_at if table is not None else None
        ready = table is not None and age is not None and age <= self.config.stale_after_s
        body: dict[str, Any] = {
            "ready": ready,
            "redis": "unknown" if self.redis_up is None else ("up" if self.redis_up else "down"),
            "replicas_as_of": datetime.fromtimestamp(table.loaded_at, UTC).isoformat() if table else None,
            "replicas_age_s": round(age, 3) if age is not None else None,
            "replicas": len(table.upstreams) if table else 0,
            "ejected": sorted(self.balancer.ejected),
            "peers": self.peers,
        }
        if self.db_error:
            body["database"] = self.db_error
        return ready, body

    # --- authentication ------------------------------------------------------------------------------

    async def _authenticate(self, scope: Scope, send: Send) -> bool:
        """True when the bearer key holds the inference scope; otherwise answers 401/403."""
        raw = header(scope, b"authorization") or b""
        parts = raw.decode("latin-1").split()
        if len(parts) != 2 or parts[0].lower() not in ("bearer", "token"):
            await respond_error(send, 401, "Missing or malformed credentials: send 'Authorization: Bearer <key>'.",
                                "invalid_request_error", "invalid_api_key", [(b"www-authenticate", b"Bearer")])
            return False
        digest = hashlib.sha256(parts[1].encode()).hexdigest()
        verdict = self.verdicts.get(digest)
        if verdict is None:
            self.auth_checks += 1
            try:
                status, message = await self.in_thread(check, parts[1])
            except Exception:  # noqa: BLE001 — the database is down: say so, do not cache
                log.warning("gateway: token check failed", exc_info=True)
                await respond_error(send, 503, "Credentials cannot be checked right now.", "server_error", "auth_unavailable",
                                    [(b"retry-after", str(self.config.retry_after_s).encode())])
                return False
            verdict = self.verdicts.put(digest, status, message)
        elif self.verdicts.due(verdict) and digest not in self._rechecking:
            self._rechecking.add(digest)
            task = asyncio.create_task(self._recheck(digest, parts[1]))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if verdict.status == 200:
            return True
        if verdict.status == 403:
            await respond_error(send, 403, verdict.message, "permission_error", "insufficient_scope")
        else:
            await respond_error(send, 401, verdict.message, "invalid_request_error", "invalid_api_key",
                                [(b"www-authenticate", b"Bearer")])
        return False

    async def _recheck(self, digest: str, key: str) -> None:
        try:
            self.auth_checks += 1
            status, message = await self.in_thread(check, key)
            self.verdicts.put(digest, status, message)
        except Exception:  # noqa: BLE001 — the verdict expires on its own; the next request checks again
            log.warning("gateway: background token check failed", exc_info=True)
        finally:
            self._rechecking.discard(digest)

    # --- proxying ----------------------------------------------------------------------------------

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request body, or None once it exceeds ``max_body_bytes``: nothing past the limit
        is kept; the rest is read and dropped (up to 16x the limit, so a client still sending
        gets the 413 rather than a reset connection), then reading stops."""
        limit = self.config.max_body_bytes
        drain = 16 * limit
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > drain:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            more = message.get("more_body", False)
            if size > limit and (not more or size > drain):
                return None
            if not more:
                return b"".join(chunks)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        arrived = time.perf_counter()
        try:
            body = await self._read_body(scope, receive)
        except ClientGone:
            return
        if body is None:
            return await respond_error(send, 413, f"Request body over {self.config.max_body_bytes} bytes.",
                                       "invalid_request_error", "request_too_large")
        try:
            payload = json.loads(body)
        except ValueError:
            return await respond_error(send, 400, "The body is not valid JSON.", "invalid_request_error", "invalid_json")
        if not isinstance(payload, dict) or not isinstance(payload.get("model"), str) or not payload["model"]:
            return await respond_error(send, 400, "Say which model: a JSON object with a 'model' string.",
                                       "invalid_request_error", "missing_model")
        model = payload["model"]
        candidates = (self.table or RouteTable()).lookup(model)
        if candidates is None:
            return await respond_error(send, 404, f"The model {model!r} does not exist.", "invalid_request_error",
                                       "model_not_found")
        retry_after = [(b"retry-after", str(self.config.retry_after_s).encode())]
        if not any(self.balancer.usable(u) for u in candidates):
            return await respond_error(send, 503, f"No ready replica of {model!r}; try again shortly.", "server_error",
                                       "no_ready_replica", retry_after)

        stream = payload.get("stream") is True
        options = payload.get("stream_options")
        client_usage = isinstance(options, dict) and options.get("include_usage") is True
        task = asyncio.current_task()
        assert task is not None
        finished = False

        async def tracked(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True  # before sending: the server reports a disconnect once the response ends
            await send(message)

        watcher = asyncio.create_task(_cancel_on_disconnect(receive, task, lambda: finished))
        tried: set[str] = set()
        try:
            for _ in range(max(1, self.config.max_attempts)):
                upstream = self.balancer.pick(candidates, tried)
                if upstream is None:
                    break
                tried.add(upstream.key)
                last = len(tried) >= self.config.max_attempts or self.balancer.pick(candidates, tried) is None
                data = _upstream_body(payload, body, model, upstream, stream, client_usage)
                self.balancer.acquire(upstream)
                try:
                    done = await self._attempt(scope, tracked, path, upstream, data, stream=stream, client_usage=client_usage,
                                               arrived=arrived, last=last)
                finally:
                    self.balancer.release(upstream)
                if done:
                    return
            await respond_error(tracked, 503, f"No replica of {model!r} could be reached; try again shortly.", "server_error",
                                "no_ready_replica", retry_after)
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled():
                task.uncancel()
                return  # the client went away: the upstream request is closed, nothing more to send
            raise
        finally:
            watcher.cancel()

    async def _attempt(self, scope: Scope, send: Send, path: str, u: Upstream, data: bytes, *, stream: bool,
                       client_usage: bool, arrived: float, last: bool) -> bool:
        """One try on ``u``. False: nothing was sent to the client, try another replica."""
        shard = self._client_for(u)
        shard.active += 1
        try:
            return await self._attempt_on(scope, send, path, u, data, shard.client, stream=stream, client_usage=client_usage,
                                          arrived=arrived, last=last)
        finally:
            shard.active -= 1

    async def _attempt_on(self, scope: Scope, send: Send, path: str, u: Upstream, data: bytes, client: httpx.AsyncClient, *,
                          stream: bool, client_usage: bool, arrived: float, last: bool) -> bool:
        headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
        request_id = header(scope, b"x-request-id")
        if request_id:
            headers["x-request-id"] = request_id.decode("latin-1")[:200]
        request = client.build_request("POST", u.base_url + path, content=data, headers=headers)
        try:
            response = await client.send(request, stream=True)
        except asyncio.CancelledError:
            self._tally(u).observe("cancelled", time.perf_counter() - arrived)
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            log.warning("gateway: %s unreachable (%s); ejected", u.key, exc)
            self.balancer.eject(u)
            return False
        except httpx.TransportError as exc:  # read timeout before the headers: slow, not dead
            log.warning("gateway: %s did not answer (%s)", u.key, exc)
            return False
        try:
            if response.status_code >= 500 and not last:
                await response.aclose()
                log.warning("gateway: %s answered %s; trying another replica", u.key, response.status_code)
                return False
            if not stream or response.status_code != 200:
                return await self._forward_whole(send, u, response, arrived)
            return await self._forward_stream(send, u, response, arrived, client_usage)
        finally:
            await response.aclose()

    async def _forward_whole(self, send: Send, u: Upstream, response: httpx.Response, arrived: float) -> bool:
        try:
            body = await response.aread()
        except asyncio.CancelledError:
            self._tally(u).observe("cancelled", time.perf_counter() - arrived)
            raise
        except httpx.TransportError as exc:
            log.warning("gateway: %s failed before its response was read (%s); ejected", u.key, exc)
            self.balancer.eject(u)
            return False
        ok = response.status_code == 200
        usage: dict[str, Any] = {}
        if ok:
            with contextlib.suppress(ValueError, AttributeError):
                usage = json.loads(body).get("usage") or {}
        await respond(send, response.status_code, body,
                      content_type=response.headers.get("content-type", "application/json").encode("latin-1"))
        self._tally(u).observe("ok" if ok else "error", time.perf_counter() - arrived,
                               prompt_tokens=_int(usage.get("prompt_tokens")),
                               generated_tokens=_int(usage.get("completion_tokens")))
        return True

    async def _forward_stream(self, send: Send, u: Upstream, response: httpx.Response, arrived: float,
                              client_usage: bool) -> bool:
        """Pass the SSE stream through as it arrives, event-aligned (a partial event waits for
        its end); drop the usage-only chunk the client did not ask for."""
        started = False
        buf = b""
        events = 0
        first: float | None = None
        previous = 0.0
        usage: sse.Usage | None = None
        upstream_error = False
        chunks = response.aiter_raw()
        try:
            async for chunk in chunks:
                buf += chunk
                cut = sse.complete_prefix(buf)
                if not cut:
                    if len(buf) < 65536:
                        continue
                    cut = len(buf)  # not SSE as we know it: pass it on rather than hold it
                block, buf = buf[:cut], buf[cut:]
                n = sse.count_events(block)
                block, found, dropped = sse.take_usage(block, keep=client_usage)
                if found is not None:
                    usage = found
                    n -= 1  # the usage chunk is no token
                n -= block.count(b"data: [DONE]")
                if b'data: {"error"' in block:
                    upstream_error = True
                now = time.perf_counter()
                if n > 0:
                    if first is None:
                        first = now
                    else:
                        self._tally(u).observe_gap((now - previous) / n, n)
                    previous = now
                    events += n
                if not block:
                    continue
                if not started:
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no")]})
                    started = True
                await send({"type": "http.response.body", "body": block, "more_body": True})
        except asyncio.CancelledError:
            self._tally(u).observe("cancelled", time.perf_counter() - arrived, ttft_s=None if first is None else first - arrived,
                                   generated_tokens=events)
            raise
        except httpx.TransportError as exc:
            if not started:
                log.warning("gateway: %s failed before its first byte (%s); ejected", u.key, exc)
                self.balancer.eject(u)
                return False
            log.warning("gateway: %s failed mid-stream (%s); ejected", u.key, exc)
            self.balancer.eject(u)
            message = "The model server failed while streaming; the response is incomplete."
            if isinstance(exc, httpx.TimeoutException):
                message = "The model server stopped sending tokens; the response is incomplete."
            await send({"type": "http.response.body", "body": sse.error_event(message), "more_body": False})
            self._tally(u).observe("error", time.perf_counter() - arrived, ttft_s=None if first is None else first - arrived,
                          generated_tokens=events)
            return True
        if not started:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": buf, "more_body": False})
        self._tally(u).observe("error" if upstream_error else "ok", time.perf_counter() - arrived,
                      ttft_s=None if first is None else first - arrived,
                      prompt_tokens=usage.prompt_tokens if usage else 0,
                      generated_tokens=usage.completion_tokens if usage else events)
        return True

    def _tally(self, u: Upstream) -> counters.RequestTally:
        # Looked up at each observation, never held: a flush swaps the dict out.
        key = (u.model_id, u.emulated)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = counters.RequestTally()
        return tally

    # --- background loops -----------------------------------------------------------------------

    async def refresh_table(self) -> bool:
        """Re-read the routable replicas from the database (in a thread) and swap the table."""
        try:
            table = await self.in_thread(_load)
        except Exception as exc:  # noqa: BLE001 — keep routing from the last list
            self.db_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("gateway: could not read the replicas (%s); routing from the last list", exc)
            return False
        self.balancer.forget_missing(table)
        self.table = table
        self.db_ok_at = time.monotonic()
        self.db_error = ""
        self.refreshes += 1
        return True

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), self.config.refresh_s)
            self._refresh.clear()
            await self.refresh_table()

    async def _subscribe_loop(self) -> None:
        """Re-read the table when a node agent announces replica changes (serving.events)."""
        channel = self.channel
        while True:
            client = aioredis.Redis.from_url(self.config.redis_url, socket_connect_timeout=self.config.redis_timeout_s,
                                             socket_timeout=max(5.0, self.config.redis_timeout_s))
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(channel)
                self.subscribed = True
                # A message may have been missed while we were not subscribed: read once now.
                self._refresh.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._refresh.set()
            except (redis.RedisError, OSError) as exc:
                self.subscribed = False
                if self.redis_up is not False:
                    log.warning("gateway: Redis pub/sub unavailable (%s); refreshing on the timer only", exc)
                self.redis_up = False
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.aclose(), 1)
            await asyncio.sleep(1.0)

    def _counts_key(self, gateway_id: str | None = None) -> str:
        return f"{self.prefix}gateway:outstanding:{gateway_id or self.id}"

    def _members_key(self) -> str:
        return f"{self.prefix}gateway:members"

    async def _share_loop(self) -> None:
        """Publish this process's outstanding counts (a hash with a short TTL) and read the
        other processes' every ``share_interval_s``; routing adds them to the local counts."""
        assert self._redis is not None
        c = self.config
        ttl_ms = int(c.share_ttl_s * 1000)
        while True:
            try:
                mine = self._counts_key()
                # MULTI/EXEC: a reader never sees the hash between its DEL and its HSET.
                pipe = self._redis.pipeline(transaction=True)
                pipe.delete(mine)
                pipe.hset(mine, mapping={"_": 0, **{k: v for k, v in self.balancer.local.items()}})
                pipe.pexpire(mine, ttl_ms)
                pipe.zadd(self._members_key(), {self.id: time.time()})
                # Members are only an index: a dead process's hash expires by itself.
                pipe.zremrangebyscore(self._members_key(), "-inf", time.time() - 60)
                pipe.zrange(self._members_key(), 0, -1)
                results = await pipe.execute()
                others = [m.decode() for m in results[-1] if m.decode() != self.id]
                remote: dict[str, int] = {}
                alive = 0
                if others:
                    pipe = self._redis.pipeline(transaction=False)
                    for other in others:
                        pipe.hgetall(self._counts_key(other))
                    for counts in await pipe.execute():
                        alive += 1 if counts else 0
                        for k, v in counts.items():
                            if k != b"_":
                                remote[k.decode()] = remote.get(k.decode(), 0) + int(v)
                self.balancer.remote = remote
                self._remote_at = time.monotonic()
                self.peers = alive
                if self.redis_up is False:
                    log.info("gateway: Redis is back")
                self.redis_up = True
            except (redis.RedisError, OSError) as exc:
                if self.redis_up is not False:
                    log.warning("gateway: Redis unavailable (%s); routing on local counts", exc)
                self.redis_up = False
                # One slow tick keeps the last view; counts older than their TTL are dropped.
                if time.monotonic() - self._remote_at > c.share_ttl_s:
                    self.balancer.remote = {}
                    self.peers = 0
            await asyncio.sleep(c.share_interval_s)

    async def flush_metrics(self) -> None:
        """Hand the tallies to ``counters.record_request_tallies`` (in a thread); a failed
        flush goes back into the next one."""
        if not self.tallies:
            return
        batch, self.tallies = self.tallies, {}
        ok = await self.in_thread(lambda: counters.record_request_tallies(batch, client=self._sync_redis))
        if not ok:
            for key, tally in batch.items():
                self._tally_for(key).merge(tally)

    def _tally_for(self, key: tuple[str, bool]) -> counters.RequestTally:
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = counters.RequestTally()
        return tally

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            try:
                await self.flush_metrics()
            except Exception:  # noqa: BLE001 — never let metrics stop the loop
                log.warning("gateway: metrics flush failed", exc_info=True)

    async def _probe_loop(self) -> None:
        """Readmit an ejected replica when its ``/health`` answers 200 again."""
        assert self._client is not None
        while True:
            await asyncio.sleep(self.config.probe_interval_s)
            table = self.table
            if table is None or not self.balancer.ejected:
                continue
            for u in table.upstreams:
                if u.key not in self.balancer.ejected:
                    continue
                try:
                    response = await self._client.get(u.base_url + "/health", timeout=self.config.connect_timeout_s)
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    log.info("gateway: %s answers its health check again; readmitted", u.key)
                    self.balancer.readmit(u.key)


class _Shard:
    """One pooled upstream client and how many requests it carries now."""

    __slots__ = ("client", "active")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.active = 0


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _upstream_body(payload: dict[str, Any], raw: bytes, model: str, u: Upstream, stream: bool, client_usage: bool) -> bytes:
    """The body sent to ``u``: the client's bytes unless the model name or the usage option
    must change (then re-encoded once per request)."""
    served = u.served_model or model
    if served == model and (not stream or client_usage):
        return raw
    body = dict(payload, model=served)
    if stream and not client_usage:
        options = payload.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(body).encode()


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any], finished: Callable[[], bool]) -> None:
    """Cancel the request's task when the client disconnects before the response ended (its
    body is read already, so the next message is the disconnect, or the end of the response)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not finished():
                task.cancel()
            return


def _load() -> RouteTable:
    from django.db import close_old_connections

    close_old_connections()
    try:
        return load_table()
    finally:
        close_old_connections()


def _close_db() -> None:
    from django.db import connections

    connections.close_all()

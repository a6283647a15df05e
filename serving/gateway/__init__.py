"""The console's inference gateway: an OpenAI-compatible ASGI application (no framework) that
``manage.py run_gateway`` serves with uvicorn, as its own process (or several).

Paths: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` (these three
need ``Authorization: Bearer <key>`` of an API token holding the ``inference`` scope), and
``GET /healthz`` (the process answers) and ``GET /readyz`` (it can route; see below). Errors
use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 401 no or bad key, 403
a key without the scope, 400 malformed JSON or no ``model``, 413 body over
``GATEWAY_MAX_BODY_BYTES``, 404 unknown model, 503 + ``Retry-After`` no ready replica. None of
these forwards anything upstream.

Hot path. Django is set up once per process for the ORM; a request touches neither the
database nor Redis. Token verdicts are cached by the key's SHA-256 (``auth.py``; 30 s when
accepted, re-checked in the background after 15 s so a key in use never waits; 3 s when
refused; bounded LRU); a miss runs ``aimconsole.tokens.check_key`` in a small thread pool.
Upstream connections are pooled per endpoint in up to ``GATEWAY_CLIENT_SHARDS`` httpx clients
(a new pool once each carries 8 streams: httpcore's per-pool bookkeeping grows with
requests x connections). The routable replicas (``Replica.objects.routable()``) are an immutable
``RouteTable`` swapped as a whole (``registry.py``).

Routing. ``model`` is a deployment's name, else a catalog id (``profile.model.hf_id``: the
replicas of every active deployment of that model). The upstream body's ``model`` becomes the
replica's ``served_model`` when they differ. Least outstanding requests first, ties at random.

Replica list. Read from the database at start, whenever a message arrives on the Redis channel
``serving.events.replicas_channel()`` (the node agents publish on every Replica change), and
every ``GATEWAY_REFRESH_S`` (5 s), so a missed message costs at most that. With Redis down the
gateway keeps routing from the last list and keeps re-reading the database on the timer.

Shared state (several processes behind a load balancer, or ``--workers N``). Each process
publishes its own outstanding counts per replica every ``GATEWAY_SHARE_INTERVAL_S`` (250 ms) to
the hash ``<prefix>gateway:outstanding:<process id>`` with a 2 s TTL (``GATEWAY_SHARE_TTL_S``;
a dead process's counts vanish with it) and lists itself in the sorted set
``<prefix>gateway:members``; in the same tick it reads the other members' hashes. A request is
routed on local counts (exact, updated at once) + the others' last read counts (at most one tick
old). Without Redis each process balances on its own counts. Metrics are aggregated in memory
(``counters.RequestTally`` per model and emulated flag) and flushed by
``counters.record_request_tallies`` every ``GATEWAY_FLUSH_INTERVAL_S`` (1 s) in one MULTI/EXEC
(a failed flush is kept for the next); never a Redis write per token or per request.

Ejection. A replica that refuses connections, or whose stream breaks mid-way, is taken out of
this process's routing at once. It comes back when (a) the registry shows a newer state of it
(its row's ``updated_at`` is later than the one the failure was seen on: the agent noticed,
restarted it, and reported it ready), or (b) a background ``GET <endpoint>/health`` (every
``GATEWAY_PROBE_INTERVAL_S``, 2 s) answers 200. A 5xx answer only moves the request to another
replica; a slow replica (no headers within the first-token timeout) is not ejected.

Streaming. Server-sent events pass through as they arrive (``httpx`` ``aiter_raw`` on a pooled
``AsyncClient``), cut at event boundaries only (a partial event waits for its end), never
decoded per token. Streaming requests ask the upstream for ``stream_options.include_usage``;
the final usage chunk is dropped from the client's stream unless the client asked for it.
Token counts come from that usage (else the count of streamed chunks). Response headers are
sent with the first upstream event, so a replica failing before it (connect error, 5xx,
broken stream) is retried on another one, up to ``GATEWAY_MAX_ATTEMPTS`` (3) replicas; after the
first byte there is no retry: the client gets ``data: {"error": {...}}`` then ``data: [DONE]``.
A client disconnect cancels the request and closes the upstream response (the engine aborts
the sequence). Timeouts: ``GATEWAY_CONNECT_TIMEOUT_S`` (2 s) to connect,
``GATEWAY_FIRST_TOKEN_TIMEOUT_S`` (60 s) for the headers and for any silence after them.

``/readyz``: 503 when no replica list was ever loaded, or the last good database read is older
than ``GATEWAY_STALE_AFTER_S`` (60 s); otherwise 200 ``{"ready": true, "redis": "up" | "down",
"replicas_as_of": ISO time, ...}``.

Settings: ``GATEWAY_<FIELD>`` for each field of ``config.GatewayConfig`` (read with defaults).
"""

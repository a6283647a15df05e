"""The telemetry store: the latest sample of each node, in Redis.

Each node's agent writes its latest shaped sample (partitions/telemetry.py) under
``<prefix>telemetry:<node>`` (``aim:telemetry:<node>`` by default, see ``key_prefix``); it
expires after ``SNAPSHOT_TTL_S``, so a dead agent's data disappears rather than looking live.
The API, the WebSocket consumers, the dashboard and the ``/metrics`` collector read it here.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from django.conf import settings

SNAPSHOT_TTL_S = 30


def key_prefix() -> str:
    """The prefix of the console's keys in Redis: setting ``REDIS_KEY_PREFIX`` (environment
    ``AIM_REDIS_KEY_PREFIX``), ``aim:`` by default. Consoles, or tests, that share one Redis
    each use their own and never read one another's snapshots. Read on every call, so a
    changed setting applies at once."""
    return str(settings.REDIS_KEY_PREFIX)


def snapshot_key(node_name: str) -> str:
    """Where the latest snapshot of ``node_name`` lives (``snapshot_key("*")``: a pattern for all)."""
    return f"{key_prefix()}telemetry:{node_name}"


def read_snapshot(client: redis.Redis, node_name: str) -> dict[str, Any] | None:
    raw: bytes | None = client.get(snapshot_key(node_name))  # type: ignore[assignment]  # sync client: bytes, not Awaitable
    return None if raw is None else json.loads(raw)


def read_snapshots_sync(node_names: list[str]) -> dict[str, Any]:
    """Latest snapshots of these nodes, for sync callers (the telemetry API)."""
    if not node_names:
        return {}
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        raws: list[bytes | None] = client.mget([snapshot_key(name) for name in node_names])  # type: ignore[assignment]  # sync client
    finally:
        client.close()
    return {name: json.loads(raw) for name, raw in zip(node_names, raws) if raw is not None}


async def read_snapshots(node_names: list[str]) -> dict[str, Any]:
    """Latest snapshots of these nodes (missing: the agent is down or its data expired)."""
    import redis.asyncio as aioredis

    if not node_names:
        return {}
    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        raws = await client.mget([snapshot_key(name) for name in node_names])
    except redis.RedisError:
        return {}
    finally:
        await client.aclose()
    return {name: json.loads(raw) for name, raw in zip(node_names, raws) if raw is not None}



"""The telemetry store: the latest sample of each node, in Redis.

Each node's agent writes its latest shaped sample (partitions/telemetry.py) under
``<prefix>telemetry:<node>`` (``aim:telemetry:<node>`` by default, see ``key_prefix``); it
expires after ``SNAPSHOT_TTL_S``, so a dead agent's data disappears rather than looking live.
Next to it, under ``<prefix>telemetry-summary:<node>``, the agent stores the node's summary
(partitions/aggregate.py ``node_summary``: per node and GPU, its busiest and idlest
partitions, each partition's activity), with the same lifetime: fleet-wide views read the
summaries (about 3 KB per node of 64 partitions, a few objects once decoded) instead of
every partition's sample.
The API, the WebSocket consumers, the dashboard and the ``/metrics`` collector read it here,
on pooled connections (a WebSocket connect or an API call reuses one instead of opening its
own).
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from django.conf import settings

SNAPSHOT_TTL_S = 30

# Connection pools of the readers: per URL and process (sync), per URL and event loop (async).
_SYNC_POOLS: dict[tuple[str, int], redis.ConnectionPool] = {}
_ASYNC_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.ConnectionPool]] = weakref.WeakKeyDictionary()


def key_prefix() -> str:
    """The prefix of the console's keys in Redis: setting ``REDIS_KEY_PREFIX`` (environment
    ``AIM_REDIS_KEY_PREFIX``), ``aim:`` by default. Consoles, or tests, that share one Redis
    each use their own and never read one another's snapshots. Read on every call, so a
    changed setting applies at once."""
    return str(settings.REDIS_KEY_PREFIX)


def snapshot_key(node_name: str) -> str:
    """Where the latest snapshot of ``node_name`` lives (``snapshot_key("*")``: a pattern for all)."""
    return f"{key_prefix()}telemetry:{node_name}"


def summary_key(node_name: str) -> str:
    """Where the latest summary of ``node_name`` lives (not matched by ``snapshot_key("*")``)."""
    return f"{key_prefix()}telemetry-summary:{node_name}"


def read_snapshot(client: redis.Redis, node_name: str) -> dict[str, Any] | None:
    raw: bytes | None = client.get(snapshot_key(node_name))  # type: ignore[assignment]  # sync client: bytes, not Awaitable
    return None if raw is None else json.loads(raw)


def _sync_client() -> redis.Redis:
    """A client on this process's pool for ``REDIS_URL`` (created once per URL and process):
    readers reuse its connections instead of connecting anew on every call."""
    url = str(settings.REDIS_URL)
    key = (url, os.getpid())  # a forked child must not share its parent's sockets
    pool = _SYNC_POOLS.get(key)
    if pool is None:
        pool = _SYNC_POOLS[key] = redis.ConnectionPool.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    return redis.Redis(connection_pool=pool)


def async_client() -> aioredis.Redis:
    """A client on this event loop's pool for ``REDIS_URL``: WebSocket connects reuse pooled
    connections (an asyncio connection belongs to the loop it was opened on, so one pool per
    loop; a closed loop's pool is dropped with it)."""
    loop = asyncio.get_running_loop()
    url = str(settings.REDIS_URL)
    pools = _ASYNC_POOLS.setdefault(loop, {})
    pool = pools.get(url)
    if pool is None:
        pool = pools[url] = aioredis.ConnectionPool.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    return aioredis.Redis(connection_pool=pool)


def read_snapshots_sync(node_names: list[str]) -> dict[str, Any]:
    """Latest snapshots of these nodes, for sync callers (the telemetry API)."""
    if not node_names:
        return {}
    raws: list[bytes | None] = _sync_client().mget([snapshot_key(name) for name in node_names])  # type: ignore[assignment]  # sync client
    return {name: json.loads(raw) for name, raw in zip(node_names, raws) if raw is not None}


def read_summaries_sync(node_names: list[str]) -> dict[str, Any]:
    """Latest summaries of these nodes, in one round trip (missing: no agent stored one, or
    it expired). Raises redis.RedisError when Redis cannot be reached."""
    if not node_names:
        return {}
    raws: list[bytes | None] = _sync_client().mget([summary_key(name) for name in node_names])  # type: ignore[assignment]  # sync client
    # orjson: a fleet's summaries are decoded on every fleet-wide read (3x faster than json).
    return {name: orjson.loads(raw) for name, raw in zip(node_names, raws) if raw is not None}


async def read_snapshot_texts(node_names: list[str]) -> dict[str, str]:
    """Latest snapshots of these nodes as the JSON text the agent stored (not decoded: a
    consumer can relay it as is). Missing: the agent is down or its data expired; all
    missing when Redis cannot be reached."""
    if not node_names:
        return {}
    try:
        raws = await async_client().mget([snapshot_key(name) for name in node_names])
    except redis.RedisError:
        return {}
    return {name: raw.decode() for name, raw in zip(node_names, raws) if raw is not None}


async def read_snapshots(node_names: list[str]) -> dict[str, Any]:
    """Latest snapshots of these nodes (missing: the agent is down or its data expired)."""
    return {name: json.loads(text) for name, text in (await read_snapshot_texts(node_names)).items()}

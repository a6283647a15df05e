"""Counters that every process adds to, kept in Redis hashes: placement decisions and served
requests. Writers call ``count_placement`` and ``observe_requests`` where things happen; the
``/metrics`` collector (observability/metrics.py) reads the hashes. Keeping them in Redis means
every process (web, agents, a gateway) adds to the same series and a console restart does not
reset them. Labels are bounded (see the tuples below).

A write never fails or stalls what it counts: after a Redis error, writers skip Redis for 10 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

GIB = 2**30
MIB = 2**20

# --- bounded label values ----------------------------------------------------------------------

OPERATION_KINDS = ("compute", "memory")
OPERATION_RESULTS = ("succeeded", "failed", "rolled_back")
OPERATION_ACTIVE_STATES = ("draining", "applying", "verifying")
GPU_HEALTH_STATES = ("healthy", "unhealthy", "unknown")
PLACEMENT_SOURCES = ("deployment", "plan")
PLACEMENT_RESULTS = ("placed", "unplaced", "conflict")
# Reason classes of unplaced replicas: the placement engine's codes (planning.placement.REASON_CODES,
# repeated here because this module imports no app; a test keeps the two equal), "concurrent"
# (a partition taken between placing and binding) and "other" (a code this list does not know).
PLACEMENT_REASONS = (
    "no_gpu_model", "unschedulable", "exceeds_gpu", "tensor_parallel", "memory_mode",
    "no_free_partition", "not_allowed_model", "concurrent", "other",
)
REQUEST_RESULTS = ("ok", "error")

# Seconds. 2.0 is the latency SLO threshold the alert rules use (le="2.0").
REQUEST_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
OPERATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


def placement_key() -> str:
    """The Redis hash of placement decisions, under the console's key prefix
    (``settings.REDIS_KEY_PREFIX``, ``aim:`` by default; read on every call)."""
    return f"{settings.REDIS_KEY_PREFIX}metrics:placement"


def requests_key() -> str:
    """The Redis hash of served requests, under the console's key prefix."""
    return f"{settings.REDIS_KEY_PREFIX}metrics:requests"


SEP = "\t"
MAX_MODEL_LABEL = 200


def classify_reason(code: str) -> str:
    """The metric's reason label for an unplaced replica's ``code`` (bounded: unknown codes are "other")."""
    return code if code in PLACEMENT_REASONS else "other"


# --- Redis ---------------------------------------------------------------------------------------

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()
_down_until = 0.0  # after a failed write, writers skip Redis for a few seconds (never block a request)


def redis_client() -> redis.Redis:
    url = settings.REDIS_URL
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
        return client


def _write(fn, what: str) -> None:
    """Run a Redis write; metrics must never fail or stall what they count."""
    global _down_until
    if time.monotonic() < _down_until:
        return
    try:
        fn(redis_client())
    except redis.RedisError as exc:
        _down_until = time.monotonic() + 10
        log.warning("metrics: could not record %s (%s); skipping Redis writes for 10 s", what, exc)


# --- placement decisions (called where planning and serving decide placements) ----------------

def count_placement(source: str, result: Any = None, *, conflict: bool = False) -> None:
    """Count one placement decision (``source``: "deployment" or "plan"): ``placed`` when
    every replica fitted, ``unplaced`` otherwise (each unplaced replica also counts under its
    reason class), ``conflict`` when a partition was taken concurrently.

    ``result`` is a ``placement.Placement`` or ``planner.PlanResult`` (both have ``unplaced``).
    The write happens when the surrounding transaction commits (immediately outside one), so
    the placement lock is never held for it; a conflict is counted at once."""
    fields: dict[str, int] = {}
    if conflict:
        fields[f"d{SEP}{source}{SEP}conflict"] = 1
        fields[f"f{SEP}{source}{SEP}concurrent"] = 1
    else:
        unplaced = tuple(getattr(result, "unplaced", ()) or ())
        fields[f"d{SEP}{source}{SEP}{'unplaced' if unplaced else 'placed'}"] = 1
        for u in unplaced:
            key = f"f{SEP}{source}{SEP}{classify_reason(u.code)}"
            fields[key] = fields.get(key, 0) + 1

    def write(client: redis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for name, amount in fields.items():
            pipe.hincrby(placement_key(), name, amount)
        pipe.execute()

    if conflict:
        _write(write, "a placement conflict")
    else:
        transaction.on_commit(lambda: _write(write, "a placement decision"), robust=True)


# --- model requests -----------------------------------------------------------------------------

def _bucket_index(seconds: float) -> int:
    for i, upper in enumerate(REQUEST_BUCKETS):
        if seconds <= upper:
            return i
    return len(REQUEST_BUCKETS)


def observe_requests(model: str, durations_s: Sequence[float], *, errors: Sequence[float] = (), tokens: int = 0,
                     emulated: bool = False, client: redis.Redis | None = None) -> None:
    """Record served requests of ``model`` (its catalog HF id): ``durations_s`` of successful
    requests and of failed ones (``errors``), seconds from arrival to the last byte, and the
    tokens generated. One pipelined round trip. This is the entry point for anything that
    serves traffic (the QoS gateway, a serving sidecar); the counters are cumulative and
    shared by every process through Redis."""
    model = model[:MAX_MODEL_LABEL]
    flag = "true" if emulated else "false"
    base = f"{model}{SEP}{flag}"
    counts: dict[str, int] = {}
    total = 0.0
    for d in (*durations_s, *errors):
        key = f"b{SEP}{base}{SEP}{_bucket_index(d)}"
        counts[key] = counts.get(key, 0) + 1
        total += d
    counts[f"n{SEP}{base}{SEP}ok"] = len(durations_s)
    counts[f"n{SEP}{base}{SEP}error"] = len(errors)
    counts[f"t{SEP}{base}"] = int(tokens)

    def write(c: redis.Redis) -> None:
        pipe = c.pipeline(transaction=False)
        for name, amount in counts.items():
            pipe.hincrby(requests_key(), name, amount)
        pipe.hincrbyfloat(requests_key(), f"s{SEP}{base}", total)
        pipe.execute()

    if client is not None:
        write(client)
    else:
        _write(write, f"requests of {model}")



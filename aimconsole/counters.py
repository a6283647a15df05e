"""Counters that every process adds to, kept in Redis hashes: placement decisions and served
requests. Writers call ``count_placement`` and ``observe_requests`` where things happen; the
``/metrics`` collector (observability/metrics.py) reads the hashes. Keeping them in Redis means
every process (web, agents, a gateway) adds to the same series and a console restart does not
reset them. Labels are bounded (see the tuples below).

A write never fails or stalls what it counts: after a Redis error, writers skip Redis for 10 s.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
# "cancelled": the client went away before the response ended (the gateway closed the
# upstream request). Only "ok" and "error" requests enter the duration histogram.
REQUEST_RESULTS = ("ok", "error", "cancelled")

# Seconds. 2.0 is the latency SLO threshold the alert rules use (le="2.0").
REQUEST_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
# Seconds: time to first token (arrival to the first streamed token) and the gap between tokens.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
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




# --- gateway request tallies (aggregated in memory by the inference gateway) -----------------

@dataclass
class RequestTally:
    """Requests of one (model, emulated) pair aggregated in memory between two flushes.

    Histograms are per-bucket counts (not cumulative), index ``len(BUCKETS)`` being +Inf; sums
    are seconds. ``durations``: arrival to last byte of ``ok`` and ``error`` requests
    (``cancelled`` ones are counted in ``results`` only: a client that went away says nothing
    about the latency SLO). ``ttft``/``itl``: streamed requests only. Tokens come from the
    upstream's ``usage`` (or a count of streamed chunks when it sent none)."""

    results: dict[str, int] = field(default_factory=dict)
    durations: list[int] = field(default_factory=lambda: [0] * (len(REQUEST_BUCKETS) + 1))
    duration_sum: float = 0.0
    ttft: list[int] = field(default_factory=lambda: [0] * (len(TTFT_BUCKETS) + 1))
    ttft_sum: float = 0.0
    itl: list[int] = field(default_factory=lambda: [0] * (len(ITL_BUCKETS) + 1))
    itl_sum: float = 0.0
    prompt_tokens: int = 0
    generated_tokens: int = 0

    def observe(self, result: str, duration_s: float, *, ttft_s: float | None = None, prompt_tokens: int = 0,
                generated_tokens: int = 0) -> None:
        """One finished request (``result`` one of REQUEST_RESULTS)."""
        result = result if result in REQUEST_RESULTS else "error"
        self.results[result] = self.results.get(result, 0) + 1
        if result != "cancelled":
            self.durations[bisect.bisect_left(REQUEST_BUCKETS, duration_s)] += 1
            self.duration_sum += duration_s
        if ttft_s is not None:
            self.ttft[bisect.bisect_left(TTFT_BUCKETS, ttft_s)] += 1
            self.ttft_sum += ttft_s
        self.prompt_tokens += max(0, int(prompt_tokens))
        self.generated_tokens += max(0, int(generated_tokens))

    def observe_gap(self, gap_s: float, times: int = 1) -> None:
        """``times`` inter-token gaps of ``gap_s`` seconds each."""
        self.itl[bisect.bisect_left(ITL_BUCKETS, gap_s)] += times
        self.itl_sum += gap_s * times

    def merge(self, other: RequestTally) -> None:
        """Add ``other`` into this one (a flush that failed goes back into the next)."""
        for k, v in other.results.items():
            self.results[k] = self.results.get(k, 0) + v
        for mine, theirs in ((self.durations, other.durations), (self.ttft, other.ttft), (self.itl, other.itl)):
            for i, v in enumerate(theirs):
                mine[i] += v
        self.duration_sum += other.duration_sum
        self.ttft_sum += other.ttft_sum
        self.itl_sum += other.itl_sum
        self.prompt_tokens += other.prompt_tokens
        self.generated_tokens += other.generated_tokens


def record_request_tallies(tallies: Mapping[tuple[str, bool], RequestTally], *, client: redis.Redis | None = None) -> bool:
    """Add the gateway's tallies, keyed by (model catalog id, emulated), to the requests hash
    in one MULTI/EXEC round trip (all or nothing, so the caller may keep a failed batch for
    the next flush). Fields, besides ``observe_requests``' (``n`` results, ``b`` duration
    buckets, ``s`` duration sum, ``t`` generated tokens): ``p`` prompt tokens, ``fb``/``fs``
    time-to-first-token buckets and sum, ``ib``/``is`` inter-token-latency buckets and sum.
    Returns False (and logs) when Redis did not take them; never raises for a Redis error."""
    ints: dict[str, int] = {}
    floats: dict[str, float] = {}
    for (model, emulated), t in tallies.items():
        base = f"{model[:MAX_MODEL_LABEL]}{SEP}{'true' if emulated else 'false'}"
        for result, n in t.results.items():
            ints[f"n{SEP}{base}{SEP}{result}"] = ints.get(f"n{SEP}{base}{SEP}{result}", 0) + n
        for kind, buckets in (("b", t.durations), ("fb", t.ttft), ("ib", t.itl)):
            for i, n in enumerate(buckets):
                if n:
                    ints[f"{kind}{SEP}{base}{SEP}{i}"] = ints.get(f"{kind}{SEP}{base}{SEP}{i}", 0) + n
        for kind, value in (("t", t.generated_tokens), ("p", t.prompt_tokens)):
            ints[f"{kind}{SEP}{base}"] = ints.get(f"{kind}{SEP}{base}", 0) + value
        for kind, total in (("s", t.duration_sum), ("fs", t.ttft_sum), ("is", t.itl_sum)):
            if total:
                floats[f"{kind}{SEP}{base}"] = floats.get(f"{kind}{SEP}{base}", 0.0) + total
    if not ints and not floats:
        return True
    try:
        pipe = (client or redis_client()).pipeline(transaction=True)
        for name, amount in ints.items():
            pipe.hincrby(requests_key(), name, amount)
        for name, total in floats.items():
            pipe.hincrbyfloat(requests_key(), name, total)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics: could not record gateway requests (%s); keeping them for the next flush", exc)
        return False
    return True

"""The fleet banner's Redis read at scale: each snapshot's head (where the agents put its
time), not every partition's sample of every node, on every page view."""

from __future__ import annotations

import json
import time

import pytest
import redis

from partitions.context_processors import SNAPSHOT_HEAD_BYTES, read_snapshot_times
from partitions.telemetry_store import snapshot_key

pytestmark = pytest.mark.redis


def big_snapshot(name: str, ts: object, *, ts_first: bool = True) -> str:
    """A CPX node's sample (8 GPUs x 8 partitions), ``ts`` where the agent puts it or last."""
    gpus = [{"index": g, "partitions": [{"index": p, "gfx_activity": 40.0, "vram_used_mb": 12288} for p in range(8)]}
            for g in range(8)]
    body = {"node": name, "ts": ts, "interval_s": 1.0, "emulated": True, "gpus": gpus} if ts_first \
        else {"node": name, "gpus": gpus, "ts": ts}
    return json.dumps(body)


def test_times_come_from_the_snapshots_heads_without_reading_them_whole(redis_url, monkeypatch):
    client = redis.Redis.from_url(redis_url)
    now = time.time()
    client.set(snapshot_key("n-a"), big_snapshot("n-a", now - 3), ex=30)
    client.set(snapshot_key("n-b" + "x" * 60), big_snapshot("n-b" + "x" * 60, now - 40), ex=30)  # a long name
    client.set(snapshot_key("n-c"), big_snapshot("n-c", "soon"), ex=30)  # no usable time
    whole_reads = []
    monkeypatch.setattr(redis.Redis, "mget", lambda self, keys, *a: whole_reads.append(keys) or [None] * len(keys))
    times = read_snapshot_times(["n-a", "n-b" + "x" * 60, "n-c", "n-missing"])
    assert times is not None
    assert times["n-a"] == pytest.approx(now - 3) and times["n-b" + "x" * 60] == pytest.approx(now - 40)
    assert times["n-missing"] is None and times["n-c"] is None
    assert len(big_snapshot("n-a", now)) > 20 * SNAPSHOT_HEAD_BYTES
    # Only the snapshot whose head holds no number for "ts" is read whole, to be sure.
    assert [[k.decode() if isinstance(k, bytes) else k for k in keys] for keys in whole_reads] == [[snapshot_key("n-c")]]


def test_a_snapshot_written_in_another_key_order_is_read_whole(redis_url):
    client = redis.Redis.from_url(redis_url)
    now = time.time()
    client.set(snapshot_key("n-late"), big_snapshot("n-late", now - 7, ts_first=False), ex=30)
    times = read_snapshot_times(["n-late"])
    assert times == {"n-late": pytest.approx(now - 7)}

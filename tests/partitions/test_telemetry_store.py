"""The telemetry store's Redis keys: under the console's key prefix, so consoles and tests
that share one Redis never read one another's snapshots."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from partitions.telemetry_store import key_prefix, read_snapshots_sync, snapshot_key
from tests.processes import REPO

pytestmark = pytest.mark.redis


def test_snapshots_under_another_prefix_are_not_read(redis_url, settings):
    client = redis.Redis.from_url(redis_url)
    other = "aim:another-console:"
    client.set(f"{other}telemetry:n1", json.dumps({"node": "n1", "ts": 1.0}), ex=30)
    client.set(snapshot_key("n2"), json.dumps({"node": "n2", "ts": 2.0}), ex=30)
    try:
        assert set(read_snapshots_sync(["n1", "n2"])) == {"n2"}
        settings.REDIS_KEY_PREFIX = other
        assert set(read_snapshots_sync(["n1", "n2"])) == {"n1"}
    finally:
        client.delete(f"{other}telemetry:n1")


def test_every_test_has_its_own_prefix_and_so_do_the_processes_it_starts(redis_key_prefix, process_env):
    assert key_prefix() == redis_key_prefix and redis_key_prefix != "aim:"
    code = "from partitions.telemetry_store import snapshot_key; print(snapshot_key('n1'))"
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], env=process_env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"{redis_key_prefix}telemetry:n1"


def test_sync_reads_reuse_one_pooled_connection(redis_url, monkeypatch):
    import redis.connection

    opened = []
    real_connect = redis.connection.AbstractConnection.connect

    def counting_connect(self):  # type: ignore[no-untyped-def]
        if self._sock is None:
            opened.append(self)
        real_connect(self)

    monkeypatch.setattr(redis.connection.AbstractConnection, "connect", counting_connect)
    redis.Redis.from_url(redis_url).set(snapshot_key("n1"), json.dumps({"node": "n1", "ts": 1.0}), ex=30)
    opened.clear()  # that one was the test's own
    for _ in range(5):
        assert set(read_snapshots_sync(["n1", "n2"])) == {"n1"}
    assert len(opened) <= 1  # 0 when an earlier test of this process opened the pool's connection

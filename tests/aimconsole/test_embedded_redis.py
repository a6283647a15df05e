"""The demo's embedded Redis (``python -m aimconsole.embedded redis``): its output carries no
"Memory overcommit must be enabled" warning (it runs without persistence or replicas, so it
never forks and the warning does not apply), every other line passes through, and a SIGTERM
stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from aimconsole.embedded import shown_line
from tests.processes import free_port

REPO = Path(__file__).resolve().parents[2]


def test_only_the_overcommit_warning_is_dropped():
    warning = (b"1:M 02 Dec 2026 13:25:55.957 # WARNING Memory overcommit must be enabled! Without it, a background "
               b"save or replication may fail under low memory condition.\n")
    assert not shown_line(warning)
    assert shown_line(b"1:M 02 Dec 2026 13:25:55.957 # Warning: Could not create server TCP listening socket\n")
    assert shown_line(b"1:M 02 Dec 2026 13:25:55.957 # WARNING: The TCP backlog setting of 511 cannot be enforced\n")


def test_the_embedded_redis_starts_quietly_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "AIM_EMBEDDED_REDIS_PORT": str(port), "AIM_VAR_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "aimconsole.embedded", "redis"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.1)
        assert client.ping()
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert b"overcommit" not in output.lower(), output

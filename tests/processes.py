"""Real processes: node agents (Celery workers) and web servers started as subprocesses,
sharing the test database and a real Redis with the test process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parents[1]

# Fast leases and sweeps so crash recovery converges in seconds, not minutes.
AGENT_ENV = {
    "AIM_RECONFIGURATION_LEASE_S": "3",
    "AIM_RECONFIGURATION_RESEND_AFTER_S": "2",
    "AIM_RECONFIGURATION_READ_RETRIES": "3",
    "AIM_RECONFIGURATION_RETRY_BACKOFF_S": "1",
    "AIM_AGENT_SWEEP_S": "1",
    "AIM_AGENT_HEARTBEAT_S": "1",
    "AIM_TELEMETRY_INTERVAL_S": "1",
    "AIM_AMD_SMI_TIMEOUT_S": "5",
    "AIM_AMD_SMI_RELOAD_TIMEOUT_S": "60",
}


def database_url() -> str:
    """URL of the database the tests run on (the test database, not the configured one)."""
    s = connection.settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Process:
    """A subprocess in its own process group (so SIGKILL takes its children too)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.handle = open(log, "ab")
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self.handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: the worker dies mid-task, as on a crash."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        self.handle.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@pytest.fixture
def process_env(redis_url: str, redis_key_prefix: str) -> dict[str, str]:
    env = {**os.environ, **AGENT_ENV}
    env["AIM_REDIS_KEY_PREFIX"] = redis_key_prefix  # the test's own Redis keys (tests/conftest.py)
    env["DJANGO_SETTINGS_MODULE"] = "aimconsole.settings.test"
    env["DATABASE_URL"] = database_url()
    env["REDIS_URL"] = redis_url
    env.pop("AIM_TEST_EMBEDDED_REDIS", None)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # only the browser tests' own process needs it
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def start_agent(process_env, tmp_path) -> Iterator[Callable[..., Process]]:
    """Start ``manage.py run_agent --node NAME``; waits for its first heartbeat."""
    started: list[Process] = []

    def start(node_name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> Process:
        from partitions.models import Node

        Node.objects.filter(name=node_name).update(agent_heartbeat_at=None)
        proc = Process([sys.executable, "manage.py", "run_agent", "--node", node_name, "--loglevel", "INFO"],
                       env or process_env, tmp_path / f"agent-{node_name}-{len(started)}.log")
        started.append(proc)
        if wait:
            def ready() -> bool:
                assert proc.alive(), f"agent exited:\n{proc.output()}"
                return "ready" in proc.output() and Node.objects.filter(name=node_name, agent_heartbeat_at__isnull=False).exists()
            wait_for(ready, 60, f"agent {node_name} to start")
        return proc

    yield start
    for proc in started:
        proc.stop()

"""``manage.py demo`` end to end: the whole embedded demo (Redis, daphne, two node agents under
honcho) survives one of its processes being killed; the killed agent comes back."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.processes import AGENT_ENV, Process, free_port, wait_for

pytestmark = pytest.mark.slow


def _processes_of(var_dir: Path, *words: str) -> list[int]:
    """Pids of this demo's processes (AIM_VAR_DIR in their environment) whose command line
    has all ``words`` as arguments (the supervisors that run them excepted)."""
    marker = f"AIM_VAR_DIR={var_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours
        supervisor = words and b"aimconsole.supervise" in argv
        if marker in environ and all(w.encode() in argv for w in words) and not supervisor:
            found.append(int(entry.name))
    # Only the supervised process itself: not what it forks (the agent's loops process, which
    # outlives a SIGKILLed agent for a moment as an orphan).
    return sorted(pid for pid in found if _supervised(pid))


def _supervised(pid: int) -> bool:
    try:
        return b"aimconsole.supervise" in Path(f"/proc/{_parent(pid)}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _heartbeat(database: Path, node: str) -> str | None:
    with sqlite3.connect(database, timeout=20) as db:
        row = db.execute("SELECT agent_heartbeat_at FROM partitions_node WHERE name = ?", (node,)).fetchone()
    return row[0] if row else None


def test_the_demo_keeps_running_when_an_agent_is_killed_and_the_agent_comes_back(tmp_path):
    var_dir = tmp_path / "var"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "AIM_TEST_EMBEDDED_REDIS",
                        "AIM_CHANNEL_LAYER", "DJANGO_ALLOW_ASYNC_UNSAFE") and not k.startswith("PYTEST_")}
    env |= {**AGENT_ENV, "AIM_VAR_DIR": str(var_dir), "AIM_EMBEDDED_REDIS_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1"}
    demo = Process([sys.executable, "manage.py", "demo", "--port", str(port)], env, tmp_path / "demo.log")
    try:
        def demo_alive() -> None:
            assert demo.alive(), f"the demo stopped:\n{demo.output()}"

        def healthy() -> bool:
            demo_alive()
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
            except OSError:
                return False

        def agent() -> list[int]:
            demo_alive()
            return _processes_of(var_dir, "run_agent", "emu-node-1")

        wait_for(healthy, 240, "the demo's web server")
        [first] = wait_for(agent, 120, "agent 1")
        database = var_dir / "aimconsole.sqlite3"
        wait_for(lambda: _heartbeat(database, "emu-node-1"), 120, "agent 1's first heartbeat")

        os.kill(first, signal.SIGKILL)
        [second] = wait_for(lambda: [pid for pid in agent() if pid != first], 120, "agent 1 to be restarted")
        assert re.search(r"agent1: killed by SIGKILL after [\d.]+ s; restart 1 in ", demo.output())
        # The new agent works: its heartbeat moves on; the rest of the demo never stopped.
        beat = _heartbeat(database, "emu-node-1")
        wait_for(lambda: _heartbeat(database, "emu-node-1") != beat, 120, "a heartbeat from the restarted agent")
        assert healthy() and _processes_of(var_dir, "run_agent", "emu-node-2")
    finally:
        demo.stop()  # SIGTERM: honcho stops every supervisor, each stops its process
        leftovers = _processes_of(var_dir)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"processes left running after the demo stopped: {leftovers}"

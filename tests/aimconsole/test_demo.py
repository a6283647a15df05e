"""``manage.py demo`` end to end: the whole embedded demo (Redis, daphne, the inference gateway,
two node agents and the traffic generator under honcho) serves a streaming chat completion
through the gateway from an engine-emulator replica, shows its latency on the deployment's
page, survives an agent being killed (the agent comes back and its replicas keep serving), and
leaves no process behind when it stops."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import sys
import urllib.request
from pathlib import Path

import httpx
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


def _engines(var_dir: Path) -> list[int]:
    """Running engine emulators of this demo's nodes (their amd-smi state file is under var_dir;
    they run in sessions of their own, with a clean environment, outside the supervisors)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"engine_emulator" in argv and str(var_dir).encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def _stream_chat(gateway: str, key: str) -> list[dict]:
    import json

    body = {"model": "demo-chat", "stream": True, "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}],
            "stream_options": {"include_usage": True}}
    chunks = []
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


def test_the_demo_keeps_running_when_an_agent_is_killed_and_the_agent_comes_back(tmp_path):
    var_dir = tmp_path / "var"
    port = free_port()
    gateway_port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "AIM_TEST_EMBEDDED_REDIS",
                        "AIM_CHANNEL_LAYER", "DJANGO_ALLOW_ASYNC_UNSAFE") and not k.startswith("PYTEST_")}
    env |= {**AGENT_ENV, "AIM_VAR_DIR": str(var_dir), "AIM_EMBEDDED_REDIS_PORT": str(free_port()),
            "AIM_GATEWAY_PORT": str(gateway_port), "PYTHONUNBUFFERED": "1"}
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
        gateway = f"http://127.0.0.1:{gateway_port}"
        key = (var_dir / "demo-inference-token").read_text().strip()

        def served() -> list[dict]:
            demo_alive()
            try:
                return _stream_chat(gateway, key)
            except (httpx.HTTPError, AssertionError):
                return []

        # A streaming chat completion through the gateway, answered by an engine-emulator replica.
        chunks = wait_for(served, 180, "a streamed chat completion through the demo's gateway", interval=1)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))
        assert text.startswith("[emulated]")
        assert chunks[-1]["usage"]["completion_tokens"] == 8
        # The deployment's page shows the latency the gateway measured (the demo's traffic and ours).
        password = re.search(r"login: admin / (\S+)", demo.log.read_text()).group(1)  # type: ignore[union-attr]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True, timeout=30) as console:
            console.get("/accounts/login/")
            console.post("/accounts/login/", data={"username": "admin", "password": password,
                                                   "csrfmiddlewaretoken": console.cookies["csrftoken"]})
            def both_ready() -> dict | None:
                (found,) = console.get("/api/v1/deployments/?name=demo-chat").json()["results"]
                states = [c["state"] for c in found["copies"]]
                return found if states == ["ready", "ready"] else None

            deployment = wait_for(both_ready, 60, "both demo replicas ready", interval=0.5)
            assert deployment["runtime"] == "process"

            def page_shows_latency() -> bool:
                page = console.get(f"/deployments/{deployment['id']}/").text
                return 'id="traffic"' in page and " ms" in page
            wait_for(page_shows_latency, 30, "the deployment page to show the gateway's latency", interval=1)
        engines = sorted(_engines(var_dir))
        assert len(engines) == 2

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
        # The replicas kept serving through the agent's death and were adopted, not restarted.
        assert sorted(_engines(var_dir)) == engines
        assert _stream_chat(gateway, key)
    finally:
        demo.stop()  # SIGTERM: honcho stops every supervisor, each stops its process
        leftovers = _processes_of(var_dir) + _engines(var_dir)
        described = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:300] for pid in leftovers
                     if Path(f"/proc/{pid}").exists()}
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"processes left running after the demo stopped: {described}\n{demo.output()[-3000:]}"
        assert not leftovers, f"processes left running after the demo stopped: {leftovers}"

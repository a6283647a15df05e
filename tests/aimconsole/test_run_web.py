"""``manage.py run_web`` as the Procfile runs it: two uvicorn workers on one port, sharing the
test database and the test Redis (the channels_redis layer) with this process. Real sockets:
a signed-in session, API reads, and live WebSockets on both workers that all hear one event
published from outside."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect

from tests.processes import Process, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def _workers(proc: Process, port: int) -> list[psutil.Process]:
    """The server's worker processes: its children that listen on the port (not
    multiprocessing's resource tracker)."""
    found = []
    for child in psutil.Process(proc.proc.pid).children(recursive=True):
        try:
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp")):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _established_per_worker(proc: Process, port: int) -> dict[int, int]:
    """Each worker's pid -> its established connections on the server's port."""
    return {w.pid: sum(1 for c in w.net_connections("tcp") if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)
            for w in _workers(proc, port)}


def test_run_web_serves_http_and_websockets_from_several_workers(viewer, process_env, tmp_path, settings):
    from partitions import events
    from partitions.models import Node

    Node.objects.create(name="n1", emulated=True)
    port = free_port()
    env = {**process_env, "AIM_CHANNEL_LAYER": "redis"}
    proc = Process([sys.executable, "manage.py", "run_web", "--port", str(port), "--workers", "2", "--log-level", "warning"],
                   env, tmp_path / "web.log")
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.alive(), proc.output()
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, 90, "run_web to answer")
        wait_for(lambda: len(_workers(proc, port)) == 2, 30, "two worker processes")

        with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as client:
            client.get("/accounts/login/")
            client.post("/accounts/login/", data={"username": "vera", "password": "pw-vera",
                                                  "csrfmiddlewaretoken": client.cookies["csrftoken"]})
            session = client.cookies["sessionid"]
            # New connections each: the kernel spreads them over both workers, which share the session.
            nodes = [httpx.get(f"{base}/api/v1/nodes/", cookies={"sessionid": session}, timeout=30) for _ in range(6)]
        assert [r.status_code for r in nodes] == [200] * 6
        assert {n["name"] for n in nodes[0].json()["results"]} == {"n1"}

        async def live() -> list[dict]:
            headers = {"Cookie": f"sessionid={session}", "Origin": base}
            sockets = []
            try:
                # Open sockets until both workers hold at least one (the kernel picks the worker).
                for _ in range(40):
                    sockets.append(await connect(f"ws://127.0.0.1:{port}/ws/fleet/", additional_headers=headers,
                                                 open_timeout=30))
                    if len(sockets) >= 2 and all(_established_per_worker(proc, port).values()):
                        break
                held = _established_per_worker(proc, port)
                assert len(held) == 2 and all(held.values()), f"the sockets did not reach both workers: {held}"
                await asyncio.sleep(0.5)  # every consumer has joined its group
                await asyncio.to_thread(events.publish_heartbeat, "n1", 1234.5)
                return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for ws in sockets]
            finally:
                for ws in sockets:
                    await ws.close()

        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "aimconsole.channel_layer.PubSubChannelLayer",
                                               "CONFIG": {"hosts": [process_env["REDIS_URL"]], "prefix": "aim"}}}
        received = asyncio.run(live())
        assert received and all(m == {"type": "fleet.update", "nodes": {}, "heartbeats": {"n1": 1234.5}} for m in received), received
    finally:
        proc.stop()
    assert proc.proc.returncode == 0, proc.output()  # SIGTERM stops the workers and the supervisor cleanly


def test_run_web_refuses_bad_arguments_before_serving(db):
    import socket

    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--workers must be at least 1"):
        call_command("run_web", workers=0, port=free_port())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{port}"):
            call_command("run_web", workers=2, port=port)

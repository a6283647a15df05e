"""``manage.py run_gateway`` as the process it is in production: two uvicorn workers sharing
the test database (a SQLite file) and the test Redis with this process."""

from __future__ import annotations

import sys

import httpx
import pytest

from tests.processes import Process, free_port, wait_for
from tests.serving.gateway.conftest import add_replica, chat, make_deployment

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_run_gateway_serves_with_several_workers(start_engine, gw_db, inference_key, process_env, tmp_path):
    engine = start_engine("m")
    add_replica(make_deployment("m"), engine.url)
    port = free_port()
    env = {**process_env, "AIM_GATEWAY_PORT": str(port)}
    proc = Process([sys.executable, "manage.py", "run_gateway", "--workers", "2", "--log-level", "warning"], env,
                   tmp_path / "gateway.log")
    try:
        def ready() -> bool:
            assert proc.alive(), proc.output()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(ready, 60, "run_gateway to be ready")
        headers = {"authorization": f"Bearer {inference_key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            # New connections each: the kernel spreads them over both workers.
            codes = [httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat("m", stream=i % 2 == 0),
                                headers=headers, timeout=30).status_code for i in range(6)]
            models = client.get("/v1/models").json()
            wait_for(lambda: client.get("/readyz").json()["peers"] == 1, 20, "the workers to see each other in Redis")
        assert codes == [200] * 6
        assert [m["id"] for m in models["data"]] == ["m"]
        assert engine.served() == 6
    finally:
        proc.stop()

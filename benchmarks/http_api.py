"""32 concurrent API clients against the console's web process, over loopback: one daphne
process (the web process before ``manage.py run_web``, and still what a single-process setup
runs) against ``run_web``'s uvicorn with 1, 2 and 4 workers, on the same fleet and database,
measured in the same run.

(Not ``benchmarks/http.py``: every script here runs with benchmarks/ first on ``sys.path``, so
a module named ``http`` would hide the standard library's ``http`` from all of them.)

Fleet: ``serving.simulation.simulate_fleet`` (the ``simulate_fleet`` command's function), 100
nodes x 8 MI300X in CPX (``--quick``: 25), a quarter of the partitions held by deployments, a
telemetry snapshot per node in a private Redis (the bundled redis-server); SQLite in a fresh
folder. Each client is a keep-alive connection with an API token (the ``api`` scope) that
requests, one after the other, a page of 50 nodes, GPUs, partitions, deployments and telemetry
(round robin, each client starting at its own list). Per server: start, wait for /healthz, a
warm-up of every list from every client, then ``--seconds`` of closed-loop load: completed
requests per second, latency p50/p99, errors. Servers run one at a time; the load generator is
this process (one core's share of it at most), the same for every server.

Bounded: the clients, the seconds and the servers are fixed; each request times out after 30 s.
Baseline: the single daphne, measured in the same run; every figure is also given as its ratio
to it. The machine's core count is printed with the figures (a worker per core is the point).
Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _django import free_port, start_redis  # noqa: E402

CLIENTS = 32
LISTS = ("/api/v1/nodes/?limit=50", "/api/v1/gpus/?limit=50", "/api/v1/partitions/?limit=50",
         "/api/v1/deployments/?limit=50", "/api/v1/telemetry/?limit=50")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="25 nodes, 8 s per server, daphne against 1 and 2 workers")
    parser.add_argument("--seconds", type=float, default=None, help="load per server (default 20, quick 8)")
    parser.add_argument("--nodes", type=int, default=None, help="fleet size (default 100, quick 25)")
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Server:
    """One web server process on a free port, stopped by SIGTERM to its process group."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        self.handle = open(log, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self.handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: " + log.read_text(errors="replace")[-2000:])
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer /healthz within 90 s")
            time.sleep(0.2)

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.handle.close()


def servers(quick: bool) -> list[tuple[str, Any]]:
    """(name, argv for a port) of every server measured; the first is the baseline."""
    def daphne(port: int) -> list[str]:
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aimconsole.asgi:application"]

    def run_web(workers: int) -> Any:
        return lambda port: [sys.executable, "manage.py", "run_web", "--port", str(port), "--workers", str(workers),
                             "--log-level", "warning"]

    chosen = [("daphne, 1 process", daphne), ("run_web, 1 worker", run_web(1)), ("run_web, 2 workers", run_web(2))]
    if not quick:
        chosen.append(("run_web, 4 workers", run_web(4)))
    return chosen


async def load(port: int, token: str, seconds: float) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def warm(i: int) -> None:
            for k in range(len(LISTS)):
                response = await client.get(LISTS[(i + k) % len(LISTS)])
                if response.status_code != 200:
                    raise RuntimeError(f"{LISTS[(i + k) % len(LISTS)]} answered {response.status_code}: {response.text[:300]}")

        await asyncio.gather(*(warm(i) for i in range(CLIENTS)))
        latencies: list[float] = []
        errors: dict[str, int] = {}
        deadline = time.perf_counter() + seconds

        async def run(i: int) -> None:
            k = i
            while time.perf_counter() < deadline:
                url = LISTS[k % len(LISTS)]
                k += 1
                started = time.perf_counter()
                try:
                    response = await client.get(url)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(run(i) for i in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "seconds": round(elapsed, 1), "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None, "errors": errors}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    nodes = args.nodes or (25 if args.quick else 100)
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    redis_proc, redis_url = start_redis()
    try:
        os.environ["REDIS_URL"] = redis_url
        import _django

        _django.setup()  # AIM_VAR_DIR, settings and REDIS_URL: the servers inherit this environment
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from aimconsole.models import TokenScope
        from aimconsole.services import create_token
        from models.services import load_catalog
        from serving.simulation import simulate_fleet

        load_catalog()
        fleet = simulate_fleet(nodes=nodes, occupancy=0.25)
        user = get_user_model().objects.create_user("bench-http", password="bench-http-pw")
        user.groups.add(Group.objects.get(name="viewer"))
        _, token = create_token(user=user, name="bench-http", scopes=[TokenScope.API])
        from django.db import connection

        connection.close()  # the servers have the SQLite file to themselves
        cores = os.cpu_count() or 1
        print(f"{nodes} nodes ({fleet.partitions} partitions), {CLIENTS} clients, {seconds:.0f} s per server, "
              f"{cores} cores on this machine", flush=True)
        results: list[dict[str, Any]] = []
        for name, command in servers(args.quick):
            port = free_port()
            server = Server(name, command(port), port, Path(os.environ["AIM_VAR_DIR"]) / f"server-{len(results)}.log")
            try:
                figures = asyncio.run(load(port, token, seconds))
            finally:
                server.stop()
            results.append({"server": name, **figures})
            print(f"{name:20s} {figures['requests_per_s']:7.1f} req/s  p50 {figures['p50_ms']} ms  p99 {figures['p99_ms']} ms"
                  f"  errors {figures['errors'] or 0}", flush=True)
        base = results[0]
        for row in results:
            row["vs_daphne"] = {
                "requests_per_s": round(row["requests_per_s"] / base["requests_per_s"], 2) if base["requests_per_s"] else None,
                "p50": round(row["p50_ms"] / base["p50_ms"], 2) if base["p50_ms"] and row["p50_ms"] else None,
                "p99": round(row["p99_ms"] / base["p99_ms"], 2) if base["p99_ms"] and row["p99_ms"] else None,
            }
        print(json.dumps({"benchmark": "http", "quick": args.quick, "cores": cores, "nodes": nodes, "clients": CLIENTS,
                          "seconds_per_server": seconds, "lists": list(LISTS),
                          "baseline": "one daphne process serving aimconsole.asgi:application, measured in the same run",
                          "servers": results}))
        return 0
    finally:
        redis_proc.terminate()  # type: ignore[attr-defined]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

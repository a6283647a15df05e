"""Inference gateway overhead: streamed chat completions at 1, 10 and 50 concurrent streams,
through the gateway (``manage.py run_gateway``) versus directly to the same engine-emulator
processes, with Debian's nginx as a peer proxy baseline, all in the same run.

Set-up: two engine emulators (``python -m engine_emulator``, time scale 1: an 8 B model on a
whole MI300X, ~21 ms to the first token and ~12 ms per token at batch 1), a throw-away SQLite
console database with one deployment whose two replicas point at them (the gateway rewrites
the model name to the replicas' served name, as in production), the bundled redis-server, and
an inference-scoped API token. Paths:

- ``direct``: the client spreads its streams over the two engines itself (round robin);
- ``gateway``: one ``run_gateway`` process (least outstanding requests, auth, SSE pass-through,
  usage accounting, metrics flushed to Redis);
- ``nginx``: ``least_conn`` over the two engines, HTTP/1.1 keep-alive upstream,
  ``proxy_buffering off`` (config written to a temp dir). Missing nginx is installed with apt
  when run as root; otherwise the script says how and skips that baseline.

Per path and concurrency: p50/p99 time to first token (first content chunk), p50/p99 end to end,
and tokens/s (all streamed tokens over the wall time of the level). Ratios are against ``direct``
in the same run; ``added_p99_*_ms`` is the p99 difference. Targets at 50 streams: added p99 ≤ 10 ms,
throughput ≥ 0.95x direct. The load generator (httpx, asyncio) runs in this process and shares
the machine with everything else: on a busy 2-core box all paths pay for it alike.

``--quick``: fewer requests per level (a few minutes on 2 cores). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _django import free_port, start_redis  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NGINX = os.environ.get("AIM_NGINX", "/usr/sbin/nginx")
SERVED = "bench-llama-served"
DEPLOYMENT = "bench-llama"
HF_ID = "meta-llama/Llama-3.1-8B-Instruct"
LEVELS = (1, 10, 50)
ROUNDS = 3



def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {url}")
        time.sleep(0.1)



def ensure_nginx() -> str | None:
    """The nginx binary, installing Debian's nginx-light when root; None (and how to get it) otherwise."""
    if os.access(NGINX, os.X_OK):
        return NGINX
    found = shutil.which("nginx")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("Installing Debian's nginx-light for the proxy baseline", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx-light"], env=env, check=False,
                       capture_output=True)
        if os.access(NGINX, os.X_OK):
            return NGINX
    print("nginx not found: `sudo apt-get install -y nginx-light` (or nginx) for the peer baseline; skipping it", flush=True)
    return None


def start_nginx(binary: str, engines: list[int], port: int) -> subprocess.Popen:
    root = Path(tempfile.mkdtemp(prefix="aim-bench-nginx-"))
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in engines)
    (root / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream engines {{
        least_conn;
{servers}
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://engines;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 120s;
        }}
    }}
}}
""")
    return subprocess.Popen([binary, "-c", str(root / "nginx.conf"), "-p", str(root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def setup_console(engine_ports: list[int]) -> str:
    """Rows for one deployment with two ready replicas; returns an inference-scoped key."""
    from django.contrib.auth.models import Group, User

    from aimconsole.models import ApiToken, hash_token
    from models.models import ModelProfile
    from models.services import load_catalog
    from partitions.models import Node
    from serving.models import Deployment, Replica

    load_catalog()
    node = Node.objects.create(name="bench-node", backend=Node.Backend.EMULATOR, emulated=True)
    profile = ModelProfile.objects.filter(model__hf_id=HF_ID).order_by("pk").first()
    assert profile is not None, f"{HF_ID} is not in the catalog"
    deployment = Deployment.objects.create(name=DEPLOYMENT, profile=profile, replicas=len(engine_ports), state="running")
    for i, port in enumerate(engine_ports):
        Replica.objects.create(deployment=deployment, replica=i, node=node, key=f"bench-{i}", runtime="process",
                               state="ready", endpoint=f"http://127.0.0.1:{port}", served_model=SERVED)
    user = User.objects.create_user("bench", password="unused-bench-password")
    user.groups.add(Group.objects.get(name="viewer"))
    key, prefix = ApiToken.new_key()
    ApiToken.objects.create(user=user, name="bench", prefix=prefix, key_hash=hash_token(key), scopes=["inference"])
    return key


# --- the load ---------------------------------------------------------------------------------------

async def one_stream(client: Any, url: str, model: str, max_tokens: int, headers: dict) -> tuple[float, float, int]:
    """(seconds to the first content chunk, seconds to the end, tokens streamed)."""
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me about MI300X partitions."}],
            "max_tokens": max_tokens, "stream": True}
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if '"content": ""' in line or '"error"' in line:  # the role chunk carries no token
                if '"error"' in line:
                    raise RuntimeError(line)
                continue
            tokens += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, end - start, tokens


async def run_level(urls: list[str], model: str, concurrency: int, requests: int, max_tokens: int,
                    headers: dict) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    results: list[tuple[float, float, int]] = []
    counter = iter(range(requests))
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as client:
        async def worker(w: int) -> None:
            for n in counter:
                results.append(await one_stream(client, urls[n % len(urls)], model, max_tokens, headers))  # round robin

        # Warm the connections up (not measured).
        await asyncio.gather(*(one_stream(client, urls[i % len(urls)], model, 4, headers) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - started
    return {"results": results, "wall": wall}


def merge(runs: list[dict]) -> dict:
    """Percentiles over every request of the rounds; tokens/s over their summed wall time."""
    results = [r for run in runs for r in run["results"]]
    ttft = sorted(r[0] for r in results)
    e2e = sorted(r[1] for r in results)
    tokens = sum(r[2] for r in results)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

    return {"requests": len(results), "ttft_p50_ms": pct(ttft, 0.5) * 1e3, "ttft_p99_ms": pct(ttft, 0.99) * 1e3,
            "e2e_p50_ms": pct(e2e, 0.5) * 1e3, "e2e_p99_ms": pct(e2e, 0.99) * 1e3,
            "tokens_per_s": tokens / sum(run["wall"] for run in runs), "mean_tokens": statistics.mean(r[2] for r in results)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    per_level = {1: 15, 10: 60, 50: 150} if args.quick else {1: 60, 10: 300, 50: 1050}
    max_tokens = 32 if args.quick else 64

    procs: list[subprocess.Popen] = []
    redis_proc, redis_url = start_redis()
    procs.append(redis_proc)
    os.environ["REDIS_URL"] = redis_url
    os.environ["AIM_REDIS_KEY_PREFIX"] = "aim:bench:"
    import _django

    _django.setup()
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    try:
        engine_ports = [free_port(), free_port()]
        for port in engine_ports:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "engine_emulator", HF_ID, "--port", str(port), "--served-model-name", SERVED,
                 "--time-scale", "1.0", "--max-num-seqs", "128"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port, proc in zip(engine_ports, procs[1:]):
            wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        key = setup_console(engine_ports)
        gw_port = free_port()
        env = {**os.environ, "AIM_GATEWAY_PORT": str(gw_port)}
        gateway = subprocess.Popen([sys.executable, "manage.py", "run_gateway", "--log-level", "error"], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gateway)
        wait_http(f"http://127.0.0.1:{gw_port}/readyz", proc=gateway)
        nginx_bin = ensure_nginx()
        nginx_port = free_port()
        if nginx_bin:
            procs.append(start_nginx(nginx_bin, engine_ports, nginx_port))
            wait_http(f"http://127.0.0.1:{nginx_port}/health", proc=procs[-1])

        paths = {
            "direct": ([f"http://127.0.0.1:{p}/v1/chat/completions" for p in engine_ports], SERVED, {}),
            "gateway": ([f"http://127.0.0.1:{gw_port}/v1/chat/completions"], DEPLOYMENT, {"authorization": f"Bearer {key}"}),
        }
        if nginx_bin:
            paths["nginx"] = ([f"http://127.0.0.1:{nginx_port}/v1/chat/completions"], SERVED, {})
        out: dict = {"benchmark": "gateway", "quick": args.quick, "max_tokens": max_tokens, "levels": {}}
        for level in LEVELS:
            # Three rounds, the paths' order rotating, so drift in the machine's load hits each alike.
            raw: dict[str, list[dict]] = {name: [] for name in paths}
            names = list(paths)
            for round_ in range(ROUNDS):
                for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                    urls, model, headers = paths[name]
                    raw[name].append(asyncio.run(run_level(urls, model, level, per_level[level] // ROUNDS, max_tokens, headers)))
            row: dict = {name: merge(runs) for name, runs in raw.items()}
            d = row["direct"]
            for name in paths:
                if name == "direct":
                    continue
                r = row[name]
                r["added_p99_ttft_ms"] = r["ttft_p99_ms"] - d["ttft_p99_ms"]
                r["added_p99_e2e_ms"] = r["e2e_p99_ms"] - d["e2e_p99_ms"]
                r["added_p50_ttft_ms"] = r["ttft_p50_ms"] - d["ttft_p50_ms"]
                r["throughput_ratio"] = r["tokens_per_s"] / d["tokens_per_s"]
            if "nginx" in row:
                g, n = row["gateway"], row["nginx"]
                g["vs_nginx"] = {"added_p99_ttft_ms": g["ttft_p99_ms"] - n["ttft_p99_ms"],
                                 "added_p99_e2e_ms": g["e2e_p99_ms"] - n["e2e_p99_ms"],
                                 "throughput_ratio": g["tokens_per_s"] / n["tokens_per_s"]}
            out["levels"][str(level)] = row
            print(f"-- {level} concurrent streams ({per_level[level]} requests, {max_tokens} tokens each)")
            for name, r in row.items():
                extra = "" if name == "direct" else (
                    f"  | +p99 ttft {r['added_p99_ttft_ms']:+.1f} ms, +p99 e2e {r['added_p99_e2e_ms']:+.1f} ms, "
                    f"throughput {r['throughput_ratio']:.3f}x direct")
                print(f"   {name:8s} ttft p50 {r['ttft_p50_ms']:7.1f} p99 {r['ttft_p99_ms']:7.1f} ms | e2e p50 {r['e2e_p50_ms']:7.1f} "
                      f"p99 {r['e2e_p99_ms']:7.1f} ms | {r['tokens_per_s']:7.0f} tok/s{extra}", flush=True)
        g50 = out["levels"]["50"]["gateway"]
        out["target_met_at_50"] = g50["added_p99_ttft_ms"] <= 10 and g50["added_p99_e2e_ms"] <= 10 and g50["throughput_ratio"] >= 0.95
        print(json.dumps(out))
        return 0
    finally:
        for proc in reversed(procs):  # Redis last: the gateway flushes its metrics on the way out
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``python manage.py demo_traffic`` — a gentle stream of chat requests through the gateway.

The demo runs it (Procfile ``traffic``) so the dashboards, the deployment's page and /metrics
show latency from real requests: about ``--rate`` streaming chat completions per second,
at most ``--concurrency`` at a time, each a short prompt with a random ``max_tokens``. The key
is the demo's inference token (``var/demo-inference-token``, written by ``manage.py demo``)
unless ``--token`` or ``AIM_INFERENCE_TOKEN`` gives one. ``AIM_DEMO_TRAFFIC=0`` (``make demo``
with ``--no-traffic``) makes it idle instead. A line every 30 s says what it sent and got.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

PROMPTS = (
    "Summarise what a GPU partition is in one sentence.",
    "Write a haiku about memory bandwidth.",
    "List three uses of a compute partition.",
    "Explain NPS4 to a new operator.",
    "What does time to first token measure?",
)


class Command(BaseCommand):
    help = "Send gentle streaming chat traffic through the inference gateway (for the demo)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--gateway", default=f"http://127.0.0.1:{settings.GATEWAY_PORT}")
        parser.add_argument("--model", default="demo-chat", help="deployment name or catalog model id")
        parser.add_argument("--rate", type=float, default=1.0, help="requests per second (0 < rate <= 50)")
        parser.add_argument("--concurrency", type=int, default=4, help="at most this many at a time (1..64)")
        parser.add_argument("--token", default=os.environ.get("AIM_INFERENCE_TOKEN", ""))
        parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until stopped)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["rate"] <= 50 or not 1 <= options["concurrency"] <= 64:
            raise CommandError("--rate must be in (0, 50] and --concurrency in 1..64")
        if os.environ.get("AIM_DEMO_TRAFFIC", "1").lower() in ("0", "false", "no", "off"):
            self.stdout.write("demo traffic is off (AIM_DEMO_TRAFFIC=0); idling")
            self.stdout.flush()
            while True:
                time.sleep(3600)
        key = options["token"] or self._demo_key()
        stats: Counter[str] = Counter()
        slots = threading.BoundedSemaphore(options["concurrency"])
        client = httpx.Client(base_url=options["gateway"], headers={"Authorization": f"Bearer {key}"},
                              timeout=httpx.Timeout(60.0, connect=2.0))
        started = last = time.monotonic()
        rng = random.Random()
        while not options["duration"] or time.monotonic() - started < options["duration"]:
            time.sleep(rng.expovariate(options["rate"]))
            if not slots.acquire(blocking=False):
                stats["skipped (busy)"] += 1
                continue
            threading.Thread(target=self._one, args=(client, options["model"], rng.choice(PROMPTS), rng.randint(16, 96), stats, slots),
                             daemon=True).start()
            if time.monotonic() - last >= 30:
                last = time.monotonic()
                self.stdout.write("demo traffic: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
                self.stdout.flush()

    def _demo_key(self) -> str:
        path = Path(settings.VAR_DIR) / "demo-inference-token"
        try:
            return path.read_text().strip()
        except OSError:
            raise CommandError(f"no inference token: run `manage.py demo` (it writes {path}) or pass --token") from None

    def _one(self, client: httpx.Client, model: str, prompt: str, max_tokens: int, stats: Counter[str],
             slots: threading.BoundedSemaphore) -> None:
        body = {"model": model, "stream": True, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]}
        try:
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    stats[f"HTTP {response.status_code}"] += 1
                    return
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]" and "error" in json.loads(line[6:]):
                        stats["stream error"] += 1
                        return
                stats["ok"] += 1
        except httpx.HTTPError as exc:
            stats[type(exc).__name__] += 1
        finally:
            slots.release()

"""The fleet page's live telemetry in a real browser (the console under daphne with the Redis
channel layer, tests/browser/conftest.py ``console``): the page subscribes to the node
sections on screen (``/ws/telemetry/?subscribe``, then a subscribe message) and colours their
partitions from the node view's messages. This process plays the agent's sampler."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from tests.browser.conftest import sign_in
from tests.emulated_nodes import make_emulated_node
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]

NODE = "emu-tele"


class Sampler(threading.Thread):
    """Publishes the node's sample every 0.3 s, as the agent does (own thread, own loop)."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.snapshot = snapshot
        self.stopped = threading.Event()

    def run(self) -> None:
        import asyncio

        from partitions import events

        loop = asyncio.new_event_loop()
        try:
            while not self.stopped.is_set():
                events.publish_telemetry(NODE, {**self.snapshot, "ts": time.time()}, loop=loop)
                self.stopped.wait(0.3)
        finally:
            loop.close()
            connection.close()


def test_the_fleet_page_colours_the_partitions_on_screen_from_the_node_view(
        browser, console, redis_layer, operator, tmp_path):
    from django.utils import timezone

    from partitions.models import Node, Partition

    emulated = make_emulated_node(tmp_path, NODE, gpus=2)
    Node.objects.filter(pk=emulated.node.pk).update(agent_heartbeat_at=timezone.now())
    parts = list(Partition.objects.filter(gpu__node=emulated.node).values_list("gpu__index", "index", "logical_index"))
    snapshot = {"node": NODE, "interval_s": 1.0, "emulated": True, "gpus": [
        {"index": g, "power_w": 500.0, "temperature_c": 60.0, "gfx_activity": None, "ecc_uncorrectable": 0,
         "partitions": [{"index": p, "logical_index": logical, "gfx_activity": 91.0 if g == 1 else 12.0,
                         "derived": False, "vram_used_mb": 1000, "vram_total_mb": 196592}
                        for gg, p, logical in parts if gg == g]}
        for g in sorted({g for g, _, _ in parts})]}
    busy = next(logical for g, _, logical in parts if g == 1)

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page = context.new_page()
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sampler = Sampler(snapshot)
    try:
        sign_in(page, console, "otto", "pw-otto")
        sampler.start()
        box = f"section.node[data-node='{NODE}'] .part[data-logical='{busy}']"
        wait_for(lambda: page.evaluate(f"(document.querySelector(\"{box}\") || {{className: ''}}).className.includes('util-90')"),
                 20, "the busy partition coloured from live telemetry")
        assert page.evaluate(f"document.querySelector(\"{box} .util\").textContent") == "91%"
    finally:
        sampler.stopped.set()
        sampler.join(10)
        context.close()
    assert not errors, errors

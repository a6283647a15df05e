"""The node agent's background loops: heartbeat, telemetry sampler, operation sweeper.

``manage.py run_agent --node NAME`` starts these threads, then a Celery worker consuming
``node.<NAME>`` (reconfigurations, inventory sync) in the foreground.

The sweeper also reconciles workloads (``partitions.workloads``; model deployments plug in
there): the node runs exactly what the database says.

Telemetry: every TELEMETRY_INTERVAL_S (1 s) the sampler reads metrics through the node's
backend, stores the latest snapshot in Redis (``aim:telemetry:<node>``, expires after 30 s, so
a dead agent's data disappears rather than looking live) and publishes it on the channel layer
(``telemetry.node.<node>`` and ``telemetry.fleet``): one message per node per interval.
Consumers coalesce further per view (at most 2 messages per second each).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Callable

import redis
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from partitions import events, telemetry, workloads
from partitions.models import Node, Partition
from partitions.telemetry import PartitionRef
from partitions.telemetry_store import SNAPSHOT_TTL_S, snapshot_key

log = logging.getLogger(__name__)

def build_snapshot(node: Node, metrics: tuple, now: float) -> dict[str, Any]:
    """JSON-safe snapshot of one sample, per GPU and partition (partitions/telemetry.py);
    values are None where the tool reported N/A."""
    layout = [
        PartitionRef(gpu_index=g, partition_index=p, logical_index=logical)
        for g, p, logical in Partition.objects.filter(gpu__node=node).values_list("gpu__index", "index", "logical_index")
    ]
    return telemetry.shape(node.name, now, metrics, layout, emulated=node.emulated, interval_s=settings.TELEMETRY_INTERVAL_S)


class Loop(threading.Thread):
    """A daemon thread calling ``body`` every ``interval`` seconds until stopped; errors are
    logged and the loop goes on (the agent must outlive a Redis or database outage)."""

    def __init__(self, name: str, interval: float, body: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.body = body
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                close_old_connections()
                self.body()
            except Exception:
                log.exception("%s failed; continuing", self.name)
                connection.close()
            self.stopped.wait(max(0.0, self.interval - (time.monotonic() - started)))
        connection.close()

    def stop(self) -> None:
        self.stopped.set()


class Agent:
    """Heartbeat, sampler and sweeper for one node."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.redis = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
        self._backend: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.loops = [
            Loop(f"heartbeat-{node_name}", settings.AGENT_HEARTBEAT_S, self.heartbeat),
            Loop(f"telemetry-{node_name}", settings.TELEMETRY_INTERVAL_S, self.sample),
            Loop(f"sweeper-{node_name}", settings.AGENT_SWEEP_S, self.sweep),
        ]

    def node(self) -> Node:
        return Node.objects.get(name=self.node_name)

    def heartbeat(self) -> None:
        Node.objects.filter(name=self.node_name).update(agent_heartbeat_at=timezone.now())

    def sample(self) -> None:
        from partitions.services import backend_for

        node = self.node()
        if self._backend is None:
            self._backend = backend_for(node)
        now = time.time()
        try:
            metrics = self._backend.metrics()
        except Exception as exc:  # driver reloading, tool busy: the snapshot goes stale, visibly
            log.info("telemetry read failed on %s: %s", node.name, exc)
            return
        snapshot = build_snapshot(node, metrics, now)
        self.redis.set(snapshot_key(node.name), json.dumps(snapshot), ex=SNAPSHOT_TTL_S)
        if self._loop is None:
            self._loop = asyncio.new_event_loop()  # this thread's: the layer keeps its connections
        events.publish_telemetry(node.name, snapshot, loop=self._loop)
        workloads.after_sample(node=node, interval_s=settings.TELEMETRY_INTERVAL_S)

    def sweep(self) -> None:
        """Re-send lost operation messages, then make the node's workloads match the database."""
        from partitions.services.reconfiguration import sweep_reconfigurations

        node = self.node()
        sent = sweep_reconfigurations(node=node)
        if sent:
            log.info("re-sent reconfigurations %s", sent)
        workloads.reconcile(node=node)

    def start(self) -> None:
        for loop in self.loops:
            loop.start()

    def stop(self) -> None:
        for loop in self.loops:
            loop.stop()

    def close(self) -> None:
        """Release the event loop the sampler publishes on (after ``stop``)."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

"""The node agent's background loops: heartbeat, telemetry sampler, operation sweeper,
reconciliation sync.

``manage.py run_agent --node NAME`` takes the node's lease (one agent per node,
partitions/services/agent_lease.py), starts these threads, then a Celery worker consuming
``node.<NAME>`` (reconfigurations, inventory sync) in the foreground. The heartbeat renews the
lease; if it finds the lease taken over, the agent stops (``on_lease_lost``).

Every AGENT_RECONCILE_S (60 s) the reconciliation loop queues a sync of the node's inventory
from the hardware on the node's own queue (partitions/services/reconciliation.py), so a
database that fell behind the hardware is corrected and the correction recorded.

The serving loop (every SERVING_SUPERVISE_S, 1 s) supervises the node's serving processes
(``partitions.workloads.supervise``): this process is the only one that starts them, so an
agent restart adopts them and never starts duplicates.

The sweeper also reconciles workloads (``partitions.workloads``; model deployments plug in
there): the node runs exactly what the database says.

Telemetry: every TELEMETRY_INTERVAL_S (1 s) the sampler reads metrics through the node's
backend, stores the latest snapshot in Redis (``aim:telemetry:<node>``, expires after 30 s, so
a dead agent's data disappears rather than looking live) with its summary next to it
(``aim:telemetry-summary:<node>``, partitions/aggregate.py ``node_summary``: the dashboard's
and the overview's fleet-wide reads) and publishes it on the channel layer
(``telemetry.node.<node>``: the sample, encoded once here; ``telemetry.fleet``: the node's
summary for the fleet view, computed here so the web processes never walk every partition of
the fleet): one message each per node per interval. The web processes fan them out per view
(partitions/telemetry_hub.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from partitions import dispatch, events, telemetry, workloads
from partitions.aggregate import node_summary
from partitions.models import Node, Partition
from partitions.services.agent_lease import NodeLease, renew_node_lease
from partitions.services.reconciliation import reconcile_interval_s
from partitions.telemetry import PartitionRef
from partitions.telemetry_store import SNAPSHOT_TTL_S, snapshot_key, summary_key

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

    def __init__(self, name: str, interval: float, body: Callable[[], None], *, first_after: float = 0.0) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.body = body
        self.first_after = first_after
        self.stopped = threading.Event()

    def run(self) -> None:
        self.stopped.wait(self.first_after)
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
    """Heartbeat, sampler, sweeper and reconciliation for one node.

    ``lease``: the node lease ``run_agent`` took; the heartbeat renews it and calls
    ``on_lease_lost`` (once) when another agent took the node over."""

    def __init__(self, node_name: str, *, lease: NodeLease | None = None,
                 on_lease_lost: Callable[[], None] | None = None) -> None:
        self.node_name = node_name
        self.lease = lease
        self.lease_lost = False
        self.on_lease_lost = on_lease_lost
        self.redis = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
        self._backend: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat_loop: asyncio.AbstractEventLoop | None = None
        self.loops = [
            Loop(f"heartbeat-{node_name}", settings.AGENT_HEARTBEAT_S, self.heartbeat),
            Loop(f"telemetry-{node_name}", settings.TELEMETRY_INTERVAL_S, self.sample),
            Loop(f"sweeper-{node_name}", settings.AGENT_SWEEP_S, self.sweep),
            Loop(f"serving-{node_name}", settings.SERVING_SUPERVISE_S, self.supervise),
            # The agent syncs once at start: the first reconciliation is due one interval later.
            Loop(f"reconcile-{node_name}", reconcile_interval_s(), self.reconcile, first_after=reconcile_interval_s()),
        ]

    def node(self) -> Node:
        return Node.objects.get(name=self.node_name)

    def heartbeat(self) -> None:
        """Record that the agent is alive; with a lease, renew it (fenced: a lease another
        agent took over is never renewed, and this agent stops)."""
        if self.lease is None:
            Node.objects.filter(name=self.node_name).update(agent_heartbeat_at=timezone.now())
            self._publish_heartbeat()
            return
        if self.lease_lost:
            return
        if renew_node_lease(self.lease, heartbeat=True):
            self._publish_heartbeat()
            return
        self.lease_lost = True
        log.critical("agent %s lost node %s's lease (token %s) to another agent; stopping",
                     self.lease.holder, self.node_name, self.lease.token)
        if self.on_lease_lost is not None:
            self.on_lease_lost()

    def _publish_heartbeat(self) -> None:
        """Tell the fleet pages (they show the agent down when the next one is late), on the
        heartbeat thread's own event loop (the layer keeps its connections)."""
        if self._beat_loop is None:
            self._beat_loop = asyncio.new_event_loop()
        events.publish_heartbeat(self.node_name, time.time(), loop=self._beat_loop)

    def reconcile(self) -> None:
        """Queue the reconciliation sync behind the node's operations."""
        dispatch.send_reconcile(self.node_name)

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
        text = events.encode(snapshot)  # once: the stored snapshot and the published message share it
        # What the fleet-wide pages read instead of every partition's sample (a superset of the
        # live fleet view's summary, which publish_telemetry computes from the same snapshot).
        summary = node_summary(snapshot)
        pipe = self.redis.pipeline(transaction=False)  # one round trip; both expire together
        pipe.set(snapshot_key(node.name), text, ex=SNAPSHOT_TTL_S)
        pipe.set(summary_key(node.name), events.encode(summary), ex=SNAPSHOT_TTL_S)
        pipe.execute()
        if self._loop is None:
            self._loop = asyncio.new_event_loop()  # this thread's: the layer keeps its connections
        events.publish_telemetry(node.name, snapshot, snapshot_text=text, loop=self._loop)
        workloads.after_sample(node=node, interval_s=settings.TELEMETRY_INTERVAL_S)

    def sweep(self) -> None:
        """Re-send lost operation and health-check messages, then make the node's workloads
        match the database."""
        from partitions.services.health import resend_health_checks
        from partitions.services.reconfiguration import sweep_reconfigurations

        node = self.node()
        sent = sweep_reconfigurations(node=node)
        if sent:
            log.info("re-sent reconfigurations %s", sent)
        resend_health_checks(node=node, older_than_s=max(settings.RECONFIGURATION_RESEND_AFTER_S, 60.0))
        workloads.reconcile(node=node)

    def supervise(self) -> None:
        """Supervise the node's workloads (the serving runtime's processes) and record them."""
        workloads.supervise(node=self.node())

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
        if self._beat_loop is not None:
            self._beat_loop.close()
            self._beat_loop = None

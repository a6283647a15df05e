"""Live telemetry fan-out inside one web process (``/ws/telemetry/``'s engine).

One ``TelemetryHub`` per process (per event loop) holds ONE channel-layer channel and joins
only the groups its clients need: ``telemetry.fleet`` while someone watches the fleet view,
``telemetry.node.<name>`` while someone watches that node, one of its GPUs, or a deployment
on it. So each message crosses Redis once per process and is decoded once per process,
however many clients watch it; the layer's own per-channel queues (unbounded, one decode per
channel) are bypassed.

Encoded once: a node sample arrives as the node view's text, encoded by the agent
(partitions/events.py), and goes to every node-view client as is; a GPU or deployment slice
is encoded once per sample and target, the fleet view once per tick (at most every
``FLEET_INTERVAL_S``), whatever the number of clients.

Where the fleet view is aggregated: each agent summarizes its own sample (per node, per GPU,
its top partitions: ``telemetry_views.summarize_node``) and this hub merges the latest
summaries (``telemetry_views.fleet_view``). The per-partition work runs once per sample on
the node that took it, in parallel across the fleet; each web process only merges a few
hundred bytes per node, and needs no extra process, leader or lock (a single fleet
aggregator would be one more thing to run and to fail over).

Each client has a bounded, coalescing outbox (``CoalescingQueue``): at most one pending
message per key (fleet; a node; a GPU; a deployment's node), the newest; the hub never
awaits a client, so a slow one delays nobody. A client that keeps falling behind (its
outbox dropped ``MAX_DROPPED`` messages of one key in a row) is told (``on_stalled``) and
the consumer closes it (partitions/consumers.py, ``CLOSE_TOO_SLOW``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from partitions import events
from partitions.telemetry_store import SNAPSHOT_TTL_S, read_snapshot_texts
from partitions.telemetry_views import FLEET, FLEET_INTERVAL_S, Target, deployment_view, fleet_view, gpu_view, summarize_node

log = logging.getLogger(__name__)

QUEUE_KEYS = 256  # pending messages per client, at most one per key
MAX_DROPPED = 10  # messages of one key dropped in a row (never taken): the client is stalled
FLEET_RECHECK_S = 5.0  # with no new sample, the fleet view is still recomputed this often (staleness)
HOLDINGS_REFRESH_S = 10.0  # how often a watched deployment's partitions are re-read
FORGET_AFTER_S = 300.0  # a node silent this long is dropped from the fleet view

Holdings = dict[str, dict[str, frozenset[tuple[int, int]]]]  # deployment -> node -> (gpu, partition)


class CoalescingQueue:
    """A client's outbox: at most one pending message per key (a newer message replaces the
    pending one, which is dropped) and at most ``capacity`` keys (a new key beyond that
    evicts the oldest pending message). ``put`` never blocks and ignores a message older
    (``ts``) than the newest one of its key already queued or taken. ``stalled`` turns true
    when one key dropped ``max_dropped`` messages in a row, or ``capacity`` were evicted,
    without the client taking any: it is not keeping up."""

    def __init__(self, *, capacity: int = QUEUE_KEYS, max_dropped: int = MAX_DROPPED) -> None:
        self.capacity = capacity
        self.max_dropped = max_dropped
        self.dropped = 0  # in all, for reports and tests
        self.stalled = False
        self._pending: OrderedDict[str, str] = OrderedDict()
        self._newest: dict[str, float] = {}
        self._dropped_in_a_row: dict[str, int] = {}
        self._evicted = 0
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, key: str, text: str, ts: float | None = None) -> bool:
        """Queue ``text`` under ``key``; False when ignored (older than what it has)."""
        if ts is not None:
            newest = self._newest.get(key)
            if newest is not None and ts < newest:
                return False
            self._newest[key] = ts
        if key in self._pending:
            self._pending[key] = text
            self.dropped += 1
            self._dropped_in_a_row[key] = in_a_row = self._dropped_in_a_row.get(key, 0) + 1
            self.stalled = self.stalled or in_a_row >= self.max_dropped
        else:
            if len(self._pending) >= self.capacity:
                self._pending.popitem(last=False)
                self.dropped += 1
                self._evicted += 1
                self.stalled = self.stalled or self._evicted >= self.capacity
            self._pending[key] = text
        self._ready.set()
        return True

    def get_nowait(self) -> tuple[str, str] | None:
        """The oldest pending (key, text), or None."""
        if not self._pending:
            return None
        key, text = self._pending.popitem(last=False)
        self._dropped_in_a_row.pop(key, None)
        self._evicted = 0
        return key, text

    async def get(self) -> tuple[str, str]:
        """Wait for, then take, the oldest pending (key, text)."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            self._ready.clear()
            await self._ready.wait()


class Client:
    """One connection's subscription and outbox. ``on_stalled`` is called once, when the
    outbox stalls; nothing more is queued for it afterwards."""

    def __init__(self, on_stalled: Callable[[], None], *, queue: CoalescingQueue | None = None) -> None:
        self.queue = queue if queue is not None else CoalescingQueue()
        self.targets: tuple[Target, ...] = ()
        self.on_stalled = on_stalled
        self.stalled = False

    def offer(self, key: str, text: str, ts: float | None) -> None:
        if self.stalled:
            return
        self.queue.put(key, text, ts)
        if self.queue.stalled:
            self.stalled = True
            self.on_stalled()


def load_holdings(names: Iterable[str]) -> Holdings:
    """The partitions each of these deployments occupies, from the workloads port (one read
    of the held partitions, not of the whole fleet's). A name that holds none is absent."""
    from partitions import workloads
    from partitions.models import Partition

    wanted = set(names)
    rows = list(Partition.objects.filter(workloads.held_filter()).values_list("pk", "gpu__node__name", "gpu__index", "index"))
    held = workloads.occupants(partition_ids=[pk for pk, *_ in rows])
    out: dict[str, dict[str, set[tuple[int, int]]]] = {}
    for pk, node, gpu, index in rows:
        occupant = held.get(pk)
        if occupant is not None and occupant.name in wanted:
            out.setdefault(occupant.name, {}).setdefault(node, set()).add((gpu, index))
    return {name: {node: frozenset(parts) for node, parts in nodes.items()} for name, nodes in out.items()}


def _sample_ts(snapshot_text: str) -> tuple[dict[str, Any], float | None]:
    snapshot = json.loads(snapshot_text)
    ts = snapshot.get("ts") if isinstance(snapshot, dict) else None
    return snapshot, float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None


class TelemetryHub:
    """See the module docstring. ``current()``: this event loop's hub."""

    _hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TelemetryHub] = weakref.WeakKeyDictionary()
    fleet_interval_s = FLEET_INTERVAL_S

    @classmethod
    def current(cls) -> TelemetryHub:
        loop = asyncio.get_running_loop()
        hub = cls._hubs.get(loop)
        if hub is None:
            hub = cls._hubs[loop] = cls()
        return hub

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.clients: set[Client] = set()
        self.channel: str | None = None
        self.joined: set[str] = set()
        self.reader: asyncio.Task[None] | None = None
        self.ticker: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.by_node: dict[str, list[tuple[Client, Target]]] = {}
        self.fleet_clients: list[Client] = []
        self.summaries: dict[str, dict[str, Any]] = {}
        self.seeded = False
        self.dirty = False
        self.fleet_text: str | None = None
        self.fleet_at = 0.0
        self.holdings: Holdings = {}
        self.holdings_at = 0.0

    # --- subscriptions -------------------------------------------------------------------

    async def known_deployments(self, names: Iterable[str]) -> set[str]:
        """Which of these deployments occupy partitions now (and so can be watched)."""
        wanted = set(names)
        found = await database_sync_to_async(load_holdings)(wanted)
        self.holdings.update(found)
        return set(found)

    async def subscribe(self, client: Client, targets: Iterable[Target]) -> None:
        """Make ``client`` watch exactly ``targets`` (replacing what it watched), then queue
        the current state of each target it did not watch yet. Targets are known to exist
        (the consumer checked)."""
        targets = tuple(dict.fromkeys(targets))
        added = [t for t in targets if t not in client.targets]
        async with self.lock:
            client.targets = targets
            self.clients.add(client)
            missing = {t.deployment for t in targets if t.kind == "deployment" and t.deployment not in self.holdings}
            if missing:
                self.holdings.update(await database_sync_to_async(load_holdings)(missing))
            # Join before reading the current state, so no sample falls between the two (the
            # outbox keeps the newer of the two when both come).
            await self._rejoin()
            if FLEET in added and not self.seeded:
                await self._seed_fleet()
        await self._queue_current(client, added)

    async def unsubscribe(self, client: Client) -> None:
        async with self.lock:
            self.clients.discard(client)
            await self._rejoin()

    def _needed_groups(self) -> set[str]:
        groups: set[str] = set()
        for client in self.clients:
            for target in client.targets:
                if target.kind == "fleet":
                    groups.add(events.FLEET_TELEMETRY_GROUP)
                elif target.kind == "deployment":
                    groups.update(events.node_telemetry_group(n) for n in self.holdings.get(target.deployment or "", {}))
                elif target.node is not None:
                    groups.add(events.node_telemetry_group(target.node))
        return groups

    def _index(self) -> None:
        by_node: dict[str, list[tuple[Client, Target]]] = {}
        fleet: list[Client] = []
        for client in self.clients:
            for target in client.targets:
                if target.kind == "fleet":
                    fleet.append(client)
                elif target.kind == "deployment":
                    for node in self.holdings.get(target.deployment or "", {}):
                        by_node.setdefault(node, []).append((client, target))
                elif target.node is not None:
                    by_node.setdefault(target.node, []).append((client, target))
        self.by_node, self.fleet_clients = by_node, fleet

    async def _rejoin(self) -> None:
        """Join the groups the clients need, leave the others; start or stop the reader."""
        self._index()
        needed = self._needed_groups()
        if needed and self.channel is None:
            self.channel = await self.layer.new_channel()
            self.reader = asyncio.ensure_future(self._read(self.channel))
        for group in sorted(needed - self.joined):
            await self.layer.group_add(group, self.channel)
            self.joined.add(group)
        for group in sorted(self.joined - needed):
            await self.layer.group_discard(group, self.channel)
            self.joined.discard(group)
        if events.FLEET_TELEMETRY_GROUP not in self.joined:
            self.summaries, self.seeded, self.fleet_text = {}, False, None  # they would go stale unseen
        wants_ticker = bool(self.fleet_clients) or any(t.kind == "deployment" for c in self.clients for t in c.targets)
        if wants_ticker and self.ticker is None:
            self.ticker = asyncio.ensure_future(self._tick_forever())
        elif not wants_ticker and self.ticker is not None:
            self.ticker.cancel()
            self.ticker = None
        if not needed and self.reader is not None:
            reader, channel = self.reader, self.channel
            self.reader, self.channel = None, None
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            clean = getattr(self.layer, "clean_channel", None)  # aimconsole/channel_layer.py
            if clean is not None and channel is not None:
                await clean(channel)

    # --- the current state, for a new target ---------------------------------------------

    async def _seed_fleet(self) -> None:
        """The fleet view's starting point: every node's stored snapshot, summarized (once
        per process; afterwards the agents' summaries keep it current)."""
        from partitions.models import Node

        names = await database_sync_to_async(lambda: list(Node.objects.values_list("name", flat=True)))()
        texts = await read_snapshot_texts(names)

        def summarize() -> dict[str, dict[str, Any]]:
            return {name: summarize_node(json.loads(text)) for name, text in texts.items()}

        for name, summary in (await asyncio.to_thread(summarize)).items():
            self.summaries.setdefault(name, summary)  # a live summary that came meanwhile is newer
        self.seeded = True
        self.dirty = True

    async def _queue_current(self, client: Client, targets: list[Target]) -> None:
        if FLEET in targets:
            if self.fleet_text is None:  # none this tick yet: for this client only (the others keep their pace)
                now = time.time()
                client.offer(FLEET.key(), events.encode(fleet_view(self.summaries, now=now, max_age_s=SNAPSHOT_TTL_S)), now)
            else:
                client.offer(FLEET.key(), self.fleet_text, self.fleet_at)
        nodes: set[str] = set()
        for target in targets:
            if target.kind == "deployment":
                nodes.update(self.holdings.get(target.deployment or "", {}))
            elif target.node is not None:
                nodes.add(target.node)
        texts = await read_snapshot_texts(sorted(nodes))
        for node, snapshot_text in texts.items():
            snapshot, ts = _sample_ts(snapshot_text)
            for target in targets:
                if target.kind == "node" and target.node == node:
                    client.offer(target.key(), events.node_message_text(node, snapshot_text), ts)
                elif (target.kind == "gpu" and target.node == node) or target.kind == "deployment":
                    text = self._slice(target, node, snapshot)
                    if text is not None:
                        client.offer(self._key(target, node), text, ts)

    # --- live samples --------------------------------------------------------------------

    async def _read(self, channel: str) -> None:
        while True:
            event = await self.layer.receive(channel)
            try:
                self.dispatch(event)
            except Exception:  # one malformed event must not stop the process's live views
                log.exception("could not fan out %s", event.get("type"))

    def dispatch(self, event: dict[str, Any]) -> None:
        """Hand one layer event to the clients that watch it (never awaits a client)."""
        kind, node = event.get("type"), str(event.get("node", ""))
        if kind == "telemetry.summary":
            self.summaries[node] = event["summary"]
            self.dirty = True
        elif kind == "telemetry.sample":
            watchers = self.by_node.get(node)
            if not watchers:
                return
            text, ts = str(event["text"]), event.get("ts")
            snapshot: dict[str, Any] | None = None
            encoded: dict[str, str | None] = {}  # one encode per target and sample, whoever watches
            for client, target in watchers:
                key = self._key(target, node)
                if target.kind == "node":
                    client.offer(key, text, ts)
                    continue
                if key not in encoded:
                    if snapshot is None:
                        snapshot = json.loads(text)["snapshot"]
                    encoded[key] = self._slice(target, node, snapshot)
                sliced = encoded[key]
                if sliced is not None:
                    client.offer(key, sliced, ts)

    @staticmethod
    def _key(target: Target, node: str) -> str:
        return target.key() + node if target.kind == "deployment" else target.key()

    def _slice(self, target: Target, node: str, snapshot: dict[str, Any]) -> str | None:
        if target.kind == "gpu" and target.gpu is not None:
            view = gpu_view(snapshot, target.gpu)
        elif target.kind == "deployment" and target.deployment is not None:
            held = self.holdings.get(target.deployment, {}).get(node)
            view = deployment_view(snapshot, target.deployment, held) if held else None
        else:
            view = None
        return None if view is None else events.encode(view)

    # --- the fleet view ------------------------------------------------------------------

    def publish_fleet(self) -> None:
        """Compute and encode the fleet view once, and queue it for every fleet client. A node
        silent for ``FORGET_AFTER_S`` (removed, or its agent long gone) leaves the view's
        ``stale`` list and this process's memory."""
        now = time.time()
        for name in [n for n, s in self.summaries.items() if now - float(s.get("ts") or 0.0) > FORGET_AFTER_S]:
            del self.summaries[name]
        self.fleet_text = events.encode(fleet_view(self.summaries, now=now, max_age_s=SNAPSHOT_TTL_S))
        self.fleet_at, self.dirty = now, False
        for client in self.fleet_clients:
            client.offer(FLEET.key(), self.fleet_text, now)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.fleet_interval_s)
            try:
                await self.tick()
            except Exception:
                log.exception("telemetry tick failed; continuing")

    async def tick(self) -> None:
        """One tick: the fleet view when something changed (or staleness may have), and the
        watched deployments' partitions every ``HOLDINGS_REFRESH_S``."""
        if self.fleet_clients and (self.dirty or time.time() - self.fleet_at >= FLEET_RECHECK_S):
            self.publish_fleet()
        watched = {t.deployment for c in self.clients for t in c.targets if t.kind == "deployment" and t.deployment}
        if watched and time.monotonic() - self.holdings_at >= HOLDINGS_REFRESH_S:
            fresh = await database_sync_to_async(load_holdings)(watched)
            async with self.lock:
                self.holdings = {name: fresh.get(name, {}) for name in watched}
                self.holdings_at = time.monotonic()
                await self._rejoin()

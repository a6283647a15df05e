"""The dashboard's WebSocket (``/ws/dashboard/``): one bounded frame per second.

Scope from the query string: the fleet (none), ``?node=NAME``, ``?node=NAME&gpu=N`` or
``?deployment=NAME``. Every ``TICK_S`` the consumer sends the scope's current frame
(partitions/aggregate.py: aggregates, top-N, heatmap column), whose size does not grow with
the fleet; a large fleet's from the nodes' summaries (``fleet_frame``), not every
partition's sample. A frame is computed once per tick and scope in this process and shared by every
connection that asks for it (``_FRAMES``: only the current tick's frames, at most
``FRAMES_MAX`` views); the partition -> deployment mapping (the workloads port, a database
read) is refreshed at most every ``OWNERS_TTL_S``. A ``?deployment=`` that occupies no
partition is refused like an unknown node (4404), so made-up names cost nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.urls import Resolver404, resolve, reverse

from partitions import workloads
from partitions.aggregate import (
    MAX_ROWS,
    MAX_SERIES,
    PartitionKey,
    Scope,
    build_fleet_view,
    build_view,
    node_summary,
    summary_partitions,
    top_nodes,
)
from partitions.consumers import CLOSE_NOT_FOUND, RefusingConsumer
from partitions.models import Node, Partition

TICK_S = 1.0
OWNERS_TTL_S = 5.0

FRAMES_MAX = 128  # views with a frame at once in this process (each view a real node, GPU or deployment)

# scope key -> (tick, the task computing that tick's frame), least recently asked first
_FRAMES: dict[str, tuple[int, asyncio.Future[dict[str, Any]]]] = {}
_OWNERS: dict[str, Any] = {"at": -1e9, "value": ({}, {})}


def parse_scope(query_string: bytes) -> Scope | None:
    """The scope a query string asks for (None: malformed, e.g. a non-integer GPU)."""
    query = parse_qs(query_string.decode(errors="replace"))

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] or None if values else None

    gpu = one("gpu")
    if gpu is not None and not gpu.isdigit():
        return None
    node = one("node")
    if gpu is not None and node is None:
        return None
    return Scope(node=node, gpu=None if gpu is None else int(gpu), deployment=one("deployment"))


def _node_names(scope: Scope) -> list[str]:
    if scope.node is not None:
        return [scope.node]
    return list(Node.objects.order_by("name").values_list("name", flat=True))


def dashboard_href(occupant_url: str) -> str:
    """The per-deployment dashboard of the deployment whose detail page is ``occupant_url``
    (the workloads port's Occupant.url); "" when that URL names no deployment."""
    try:
        match = resolve(occupant_url)
    except Resolver404:
        return ""
    if match.view_name != "serving:deployment-detail":
        return ""
    return reverse("observability:deployment-dashboard", kwargs=match.kwargs)


class DashboardHrefs(Mapping[str, str]):
    """A deployment's name -> its dashboard's URL, resolved from its detail page's URL only
    when asked (a frame shows a dozen deployments; a large fleet runs thousands)."""

    def __init__(self, detail_urls: dict[str, str]) -> None:
        self.detail_urls = detail_urls
        self.resolved: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self.resolved:
            href = dashboard_href(self.detail_urls[name])
            if not href:
                raise KeyError(name)
            self.resolved[name] = href
        return self.resolved[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.detail_urls)

    def __len__(self) -> int:
        return len(self.detail_urls)


def partition_owners(nodes: list[str] | None = None) -> tuple[dict[PartitionKey, str], Mapping[str, str]]:
    """(node, gpu, partition) -> the name of what occupies it, from the workloads port, and
    each such name -> its dashboard's URL (where there is one). Reads only the held
    partitions (the port's subquery), not every partition of the fleet; ``nodes``: only
    those of these nodes."""
    held_rows = Partition.objects.filter(workloads.held_filter("pk"))
    if nodes is not None:
        held_rows = held_rows.filter(gpu__node__name__in=nodes)
    rows = list(held_rows.values_list("pk", "gpu__node__name", "gpu__index", "index"))
    held = workloads.occupants(partition_ids=[pk for pk, *_ in rows])
    owned = {(node, gpu, index): held[pk].name for pk, node, gpu, index in rows if pk in held}
    return owned, DashboardHrefs({o.name: o.url for o in held.values() if o.url})


async def owners() -> tuple[dict[PartitionKey, str], Mapping[str, str]]:
    now = time.monotonic()
    if now - _OWNERS["at"] > OWNERS_TTL_S:
        _OWNERS["value"] = await database_sync_to_async(partition_owners)()
        _OWNERS["at"] = now
    value: tuple[dict[PartitionKey, str], Mapping[str, str]] = _OWNERS["value"]
    return value


def fleet_frame(names: list[str], *, now: float) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The fleet's frame from the nodes' stored summaries (partitions/aggregate.py
    ``build_fleet_view``) and the summaries it read: one read of ``names``' summaries, then the samples of only the
    nodes the frame names partitions of (its top lists, the deployments it shows), and a
    grouped count of the deployments. A node without a summary (an agent of an older
    version) is summarized here from its sample. None for a fleet of at most ``MAX_ROWS``
    partitions: its frame shows every partition, so ``build_view`` over every sample makes it.
    Redis down: the frame of an empty fleet, as ``build_view`` of no samples."""
    import redis

    from partitions.telemetry_store import read_snapshots_sync, read_summaries_sync

    try:
        summaries = read_summaries_sync(names)
        missing = [n for n in names if n not in summaries]
        snapshots = read_snapshots_sync(missing) if missing else {}
    except redis.RedisError:
        summaries, snapshots = {}, {}
    summaries.update({n: node_summary(s) for n, s in snapshots.items() if isinstance(s, dict)})
    if summary_partitions(summaries) <= MAX_ROWS:
        return None
    try:
        total, holders = workloads.largest_holders(limit=MAX_SERIES)
    except Exception:  # a provider failing must not take the dashboard down
        total, holders = 0, []
    detail_names = top_nodes(summaries) | {node for h in holders for node, _, _ in h.partitions}
    unread = sorted(n for n in detail_names if n not in snapshots and n in summaries)
    try:
        snapshots.update(read_snapshots_sync(unread) if unread else {})
    except redis.RedisError:
        pass
    detail = {n: snapshots[n] for n in detail_names if isinstance(snapshots.get(n), dict)}
    try:
        owned, _ = partition_owners(sorted(detail))
    except Exception:
        owned = {}
    hrefs = {h.name: href for h in holders if (href := dashboard_href(h.url))}
    return summaries, build_fleet_view(summaries, detail=detail, deployments=owned, shown_deployments=[h.name for h in holders],
                            deployments_total=total, deployment_hrefs=hrefs, now=now, expected_nodes=len(names))


async def compute_frame(scope: Scope) -> dict[str, Any]:
    from partitions.telemetry_store import read_snapshots

    names = await database_sync_to_async(_node_names)(scope)
    if scope.level == "fleet":
        found = await database_sync_to_async(fleet_frame)(names, now=time.time())
        if found is not None:
            return {"type": "dashboard.frame", **found[1]}
    snapshots = await read_snapshots(names)
    owned, hrefs = await owners()
    return {"type": "dashboard.frame", **build_view(snapshots, scope=scope, deployments=owned, deployment_hrefs=hrefs,
                                                   now=time.time(), expected_nodes=len(names))}


async def shared_frame(scope: Scope) -> dict[str, Any]:
    """This tick's frame of ``scope``, computed once whoever asks."""
    tick = int(time.time() // TICK_S)
    cached = _FRAMES.pop(scope.key, None)  # re-inserted below: the dict stays in LRU order
    if cached is None or cached[0] != tick or (cached[1].done() and cached[1].exception() is not None):
        _drop_stale_frames(tick)
        cached = (tick, asyncio.ensure_future(compute_frame(scope)))
    _FRAMES[scope.key] = cached
    return await asyncio.shield(cached[1])


def _drop_stale_frames(tick: int) -> None:
    """Make room for one more frame of ``tick``: past ticks' frames go (nobody reuses them),
    then the least recently asked views beyond ``FRAMES_MAX - 1``. A dropped frame still
    being computed finishes for whoever awaits it (``shared_frame`` shields it)."""
    for key in [k for k, (t, _) in _FRAMES.items() if t != tick]:
        del _FRAMES[key]
    while len(_FRAMES) >= FRAMES_MAX:
        del _FRAMES[next(iter(_FRAMES))]


async def deployment_known(name: str) -> bool:
    """Whether ``name`` occupies partitions now (what a deployment view shows)."""
    owned, _ = await owners()
    return name in set(owned.values())


class DashboardConsumer(RefusingConsumer):
    """Sends the scope's frame on connect, then once per tick (at most one message per
    ``TICK_S`` per connection, whatever the fleet size or the agents' rate)."""

    async def connect(self) -> None:
        if not await self.admitted("partitions.view_node"):
            return
        view = parse_scope(self.scope.get("query_string", b""))
        if view is None or (view.node is not None
                            and not await database_sync_to_async(Node.objects.filter(name=view.node).exists)()) or (
                view.deployment is not None and not await deployment_known(view.deployment)):
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.view = view
        await self.accept()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await self.send_json(await shared_frame(self.view))
            await asyncio.sleep(TICK_S - (time.time() % TICK_S) + 0.01)

    async def disconnect(self, code: int) -> None:
        task = getattr(self, "task", None)
        if task is not None:
            task.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass  # read-only stream

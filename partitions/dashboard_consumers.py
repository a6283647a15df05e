"""The dashboard's WebSocket (``/ws/dashboard/``): one bounded frame per second.

Scope from the query string: the fleet (none), ``?node=NAME``, ``?node=NAME&gpu=N`` or
``?deployment=NAME``. Every ``TICK_S`` the consumer sends the scope's current frame
(partitions/aggregate.py: aggregates, top-N, heatmap column), whose size does not grow with
the fleet. A frame is computed once per tick and scope in this process and shared by every
connection that asks for it (``_FRAMES``); the partition -> deployment mapping (the workloads
port, a database read) is refreshed at most every ``OWNERS_TTL_S``.
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
from partitions.aggregate import PartitionKey, Scope, build_view
from partitions.consumers import CLOSE_NOT_FOUND, RefusingConsumer
from partitions.models import Node, Partition

TICK_S = 1.0
OWNERS_TTL_S = 5.0

# scope key -> (tick, the task computing that tick's frame)
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


def partition_owners() -> tuple[dict[PartitionKey, str], Mapping[str, str]]:
    """(node, gpu, partition) -> the name of what occupies it, from the workloads port, and
    each such name -> its dashboard's URL (where there is one). Reads only the held
    partitions (the port's subquery), not every partition of the fleet."""
    rows = list(Partition.objects.filter(workloads.held_filter("pk")).values_list("pk", "gpu__node__name", "gpu__index", "index"))
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


async def compute_frame(scope: Scope) -> dict[str, Any]:
    from partitions.telemetry_store import read_snapshots

    names = await database_sync_to_async(_node_names)(scope)
    snapshots = await read_snapshots(names)
    owned, hrefs = await owners()
    return {"type": "dashboard.frame", **build_view(snapshots, scope=scope, deployments=owned, deployment_hrefs=hrefs,
                                                   now=time.time(), expected_nodes=len(names))}


async def shared_frame(scope: Scope) -> dict[str, Any]:
    """This tick's frame of ``scope``, computed once whoever asks."""
    tick = int(time.time() // TICK_S)
    cached = _FRAMES.get(scope.key)
    if cached is None or cached[0] != tick or (cached[1].done() and cached[1].exception() is not None):
        cached = (tick, asyncio.ensure_future(compute_frame(scope)))
        _FRAMES[scope.key] = cached
    return await asyncio.shield(cached[1])


class DashboardConsumer(RefusingConsumer):
    """Sends the scope's frame on connect, then once per tick (at most one message per
    ``TICK_S`` per connection, whatever the fleet size or the agents' rate)."""

    async def connect(self) -> None:
        if not await self.admitted("partitions.view_node"):
            return
        view = parse_scope(self.scope.get("query_string", b""))
        if view is None or (view.node is not None
                            and not await database_sync_to_async(Node.objects.filter(name=view.node).exists)()):
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

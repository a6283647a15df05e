"""The dashboard socket's frame cache (partitions/dashboard_consumers.py ``_FRAMES``) stays
bounded, and a ``?deployment=`` that occupies nothing is refused before it costs a frame."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from partitions import dashboard_consumers
from partitions.aggregate import Scope

pytestmark = pytest.mark.asyncio


@pytest.fixture
def counted(monkeypatch):  # type: ignore[no-untyped-def]
    """compute_frame replaced by one that records the scopes it computed."""
    computed: list[str] = []

    async def compute(scope: Scope) -> dict:
        computed.append(scope.key)
        return {"type": "dashboard.frame", "scope": scope.key}

    monkeypatch.setattr(dashboard_consumers, "compute_frame", compute)
    dashboard_consumers._FRAMES.clear()
    yield computed
    dashboard_consumers._FRAMES.clear()


def at(monkeypatch, seconds: float) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(dashboard_consumers.time, "time", lambda: seconds)


async def test_many_views_in_one_tick_keep_at_most_frames_max_entries(counted, monkeypatch):
    at(monkeypatch, 1000.2)
    for i in range(3 * dashboard_consumers.FRAMES_MAX):
        await dashboard_consumers.shared_frame(Scope(deployment=f"made-up-{i}"))
    assert len(dashboard_consumers._FRAMES) == dashboard_consumers.FRAMES_MAX
    assert len(counted) == 3 * dashboard_consumers.FRAMES_MAX


async def test_the_least_recently_asked_view_goes_first(counted, monkeypatch):
    at(monkeypatch, 1000.2)
    first = Scope(node="n-0")
    await dashboard_consumers.shared_frame(first)
    for i in range(1, dashboard_consumers.FRAMES_MAX):
        await dashboard_consumers.shared_frame(Scope(node=f"n-{i}"))
        await dashboard_consumers.shared_frame(first)  # asked again: kept
    await dashboard_consumers.shared_frame(Scope(node="one-more"))
    assert first.key in dashboard_consumers._FRAMES
    assert Scope(node="n-1").key not in dashboard_consumers._FRAMES
    assert counted.count(first.key) == 1  # the same tick's frame is shared, not recomputed


async def test_a_new_tick_drops_the_past_ticks_frames(counted, monkeypatch):
    at(monkeypatch, 1000.2)
    for i in range(20):
        await dashboard_consumers.shared_frame(Scope(node=f"n-{i}"))
    at(monkeypatch, 1001.2)
    await dashboard_consumers.shared_frame(Scope())
    assert list(dashboard_consumers._FRAMES) == [Scope().key]


@pytest.mark.django_db(transaction=True)
async def test_an_unknown_deployment_is_refused_and_a_known_one_accepted(counted, viewer, monkeypatch):
    from aimconsole.asgi import application
    from tests.wsutil import outcome

    monkeypatch.setattr(dashboard_consumers, "partition_owners", lambda: ({("n1", 0, 0): "chat"}, {}))
    monkeypatch.setitem(dashboard_consumers._OWNERS, "at", -1e9)

    def communicator(path: str) -> WebsocketCommunicator:
        c = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
        c.scope["user"] = viewer
        return c

    assert await outcome(communicator("/ws/dashboard/?deployment=made-up")) == 4404
    assert counted == []  # refused before any frame was computed or cached
    assert await outcome(communicator("/ws/dashboard/?deployment=chat")) == "accept"
    assert Scope(deployment="chat").key in dashboard_consumers._FRAMES

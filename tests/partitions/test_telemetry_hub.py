"""A client's outbox (partitions/telemetry_hub.py CoalescingQueue and Client): bounded,
newest per key, never blocking the producer, stalled when the client stops taking."""

from __future__ import annotations

import asyncio

import pytest

from partitions.telemetry_hub import Client, CoalescingQueue


def drain(queue: CoalescingQueue) -> list[tuple[str, str]]:
    out = []
    while (item := queue.get_nowait()) is not None:
        out.append(item)
    return out


def test_it_keeps_the_newest_message_of_each_key_in_first_come_order() -> None:
    queue = CoalescingQueue(capacity=8, max_dropped=100)
    for key, text in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3")]:
        queue.put(key, text)
    assert drain(queue) == [("a", "a3"), ("b", "b1")]
    assert queue.dropped == 2


def test_it_holds_at_most_capacity_keys_evicting_the_oldest() -> None:
    queue = CoalescingQueue(capacity=3, max_dropped=100)
    for i in range(5):
        queue.put(f"k{i}", str(i))
    assert len(queue) == 3 and [k for k, _ in drain(queue)] == ["k2", "k3", "k4"]


def test_an_older_sample_never_replaces_a_newer_one() -> None:
    queue = CoalescingQueue()
    assert queue.put("n1", "new", ts=10.0)
    assert not queue.put("n1", "old", ts=9.0)  # e.g. the stored snapshot read after a live one
    assert drain(queue) == [("n1", "new")]
    assert not queue.put("n1", "older still", ts=5.0)  # also after the newer one was sent


@pytest.mark.parametrize("max_dropped", [1, 3, 10])
def test_it_stalls_after_max_dropped_in_a_row_of_one_key(max_dropped: int) -> None:
    queue = CoalescingQueue(max_dropped=max_dropped)
    queue.put("n1", "0")
    for i in range(max_dropped - 1):
        queue.put("n1", str(i + 1))
        assert not queue.stalled
    queue.put("n1", "last")
    assert queue.stalled


def test_taking_a_message_resets_the_count_so_a_client_that_keeps_up_never_stalls() -> None:
    queue = CoalescingQueue(max_dropped=3)
    for i in range(100):
        queue.put("n1", f"{i}a")
        queue.put("n1", f"{i}b")  # one dropped per round: behind, but catching up
        assert queue.get_nowait() == ("n1", f"{i}b")
    assert not queue.stalled and queue.dropped == 100


def test_evicting_a_whole_capacity_without_a_take_stalls() -> None:
    queue = CoalescingQueue(capacity=4, max_dropped=100)
    for i in range(7):
        queue.put(f"k{i}", "x")
    assert not queue.stalled
    queue.put("k7", "x")
    assert queue.stalled


def test_a_client_reports_its_stall_once_and_takes_nothing_more() -> None:
    calls = []
    client = Client(lambda: calls.append(1), queue=CoalescingQueue(max_dropped=2))
    for i in range(10):
        client.offer("n1", str(i), None)
    assert calls == [1] and client.stalled
    assert drain(client.queue) == [("n1", "2")]  # nothing queued after the stall


@pytest.mark.asyncio
async def test_get_waits_for_a_message() -> None:
    queue = CoalescingQueue()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put("fleet", "view")
    assert await asyncio.wait_for(waiting, 5) == ("fleet", "view")


def test_the_fleet_view_names_quiet_nodes_stale_and_forgets_long_silent_ones() -> None:
    import json
    import time

    from partitions.telemetry_hub import FORGET_AFTER_S, TelemetryHub
    from partitions.telemetry_views import summarize_node

    now = time.time()
    hub = TelemetryHub()
    hub.summaries = {name: summarize_node({"node": name, "ts": ts, "gpus": []})
                     for name, ts in (("gone", now - FORGET_AFTER_S - 1), ("quiet", now - 60), ("live", now))}
    client = Client(lambda: None)
    hub.fleet_clients = [client]
    hub.publish_fleet()
    item = client.queue.get_nowait()
    assert item is not None
    view = json.loads(item[1])
    assert set(view["nodes"]) == {"live"} and view["stale"] == ["quiet"]
    assert set(hub.summaries) == {"live", "quiet"}

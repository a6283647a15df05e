"""Node agent loops: heartbeat, telemetry sampler (Redis snapshot + channel layer), sweeper."""

from __future__ import annotations

import json

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from partitions import events
from partitions.agent import Agent
from partitions.models import Node, Reconfiguration
from partitions.services.reconfiguration import request_reconfiguration, sweep_reconfigurations
from partitions.telemetry_store import read_snapshot, snapshot_key

pytestmark = pytest.mark.django_db


@pytest.mark.redis
def test_sampler_stores_a_snapshot_in_redis_and_publishes_it(emulated, redis_url):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.node_telemetry_group("emu-a"), channel)
    fleet_channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.FLEET_TELEMETRY_GROUP, fleet_channel)
    emulated.state.set_load(1, 0, 0.9, vram_used_mb=150_000)
    agent = Agent("emu-a")
    agent.sample()
    snapshot = read_snapshot(redis.Redis.from_url(redis_url), "emu-a")
    assert snapshot["node"] == "emu-a" and snapshot["emulated"] is True
    gpus = {g["index"]: g for g in snapshot["gpus"]}
    assert set(gpus) == {0, 1}
    busy, idle = gpus[1]["partitions"][0], gpus[0]["partitions"][0]
    assert busy["vram_used_mb"] > idle["vram_used_mb"]
    assert busy["gfx_activity"] > 50 and busy["derived"] is False  # SPX: the device's own figure
    assert gpus[1]["power_w"] > gpus[0]["power_w"]
    event = async_to_sync(layer.receive)(channel)
    assert event["type"] == "telemetry.sample" and event["ts"] == snapshot["ts"]
    # the node view's message, encoded once by the agent around the very text it stored
    stored = redis.Redis.from_url(redis_url).get(snapshot_key("emu-a")).decode()
    assert event["text"] == events.node_message_text("emu-a", stored)
    assert json.loads(event["text"])["snapshot"] == snapshot
    summary = async_to_sync(layer.receive)(fleet_channel)  # the fleet group: the node's summary only
    assert summary["type"] == "telemetry.summary" and summary["summary"]["partitions"] == 2
    assert "snapshot" not in summary and summary["summary"]["activity_max"] == busy["gfx_activity"]


@pytest.mark.redis
def test_per_partition_activity_is_derived_from_per_xcp_busy_on_a_cpx_gpu(emulated, redis_url):
    from partitions.services import sync_node

    emulated.state.set_modes(compute="CPX")
    sync_node(node=emulated.node)
    emulated.state.set_load(0, 3, 1.0, vram_used_mb=20_000)
    Agent("emu-a").sample()
    snapshot = read_snapshot(redis.Redis.from_url(redis_url), "emu-a")
    parts = snapshot["gpus"][0]["partitions"]
    assert [p["index"] for p in parts] == list(range(8))
    assert all(p["derived"] for p in parts)
    assert parts[3]["gfx_activity"] > 80 and parts[2]["gfx_activity"] < 20
    assert parts[5]["vram_used_mb"] is not None  # secondaries still report their VRAM


def test_heartbeat_marks_the_agent_alive(emulated):
    assert not Node.objects.get(pk=emulated.node.pk).agent_alive
    Agent("emu-a").heartbeat()
    assert Node.objects.get(pk=emulated.node.pk).agent_alive


def test_sweeper_resends_lost_intents_and_expired_leases_only(emulated, monkeypatch, settings):
    sent: list[int] = []
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: sent.append(pk) or True)
    from partitions.models import GPU

    never_sent = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=0), compute_mode="CPX")
    running = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=1), compute_mode="CPX")
    long_ago = timezone.now() - timezone.timedelta(minutes=5)
    Reconfiguration.objects.filter(pk=running.pk).update(
        state="applying", enqueued_at=long_ago, lease_expires_at=timezone.now() + timezone.timedelta(minutes=1)
    )
    assert sweep_reconfigurations(node=emulated.node) == [never_sent.pk]
    Reconfiguration.objects.filter(pk=running.pk).update(lease_expires_at=long_ago)  # its worker died
    assert set(sweep_reconfigurations(node=emulated.node)) == {never_sent.pk, running.pk}
    assert sent.count(never_sent.pk) == 2


def test_the_sweeper_waits_resend_after_s_before_sending_a_message_again(emulated, monkeypatch, settings):
    sent: list[int] = []
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: sent.append(pk) or True)
    from partitions.models import GPU

    settings.RECONFIGURATION_RESEND_AFTER_S = 60
    pending = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=0), compute_mode="CPX")
    started = request_reconfiguration(gpu=GPU.objects.get(node=emulated.node, index=1), compute_mode="CPX")
    now = timezone.now()
    Reconfiguration.objects.filter(pk=pending.pk).update(enqueued_at=now - timezone.timedelta(seconds=30))
    Reconfiguration.objects.filter(pk=started.pk).update(  # its worker died, but the message went out 30 s ago
        state="applying", enqueued_at=now - timezone.timedelta(seconds=30), lease_expires_at=now - timezone.timedelta(seconds=5))
    assert sweep_reconfigurations(node=emulated.node) == []  # both sent 30 s ago: resend only after 60 s
    settings.RECONFIGURATION_RESEND_AFTER_S = 20
    assert set(sweep_reconfigurations(node=emulated.node)) == {pending.pk, started.pk}
    assert sorted(sent) == sorted([pending.pk, started.pk])


@pytest.mark.redis
def test_sampler_stores_the_nodes_summary_next_to_its_snapshot_with_the_same_lifetime(emulated, redis_url):
    from partitions.aggregate import node_summary
    from partitions.telemetry_store import SNAPSHOT_TTL_S, read_summaries_sync, summary_key

    emulated.state.set_load(1, 0, 0.9, vram_used_mb=150_000)
    Agent("emu-a").sample()
    client = redis.Redis.from_url(redis_url)
    snapshot = read_snapshot(client, "emu-a")
    summary = read_summaries_sync(["emu-a"])["emu-a"]
    assert summary == node_summary(snapshot)  # of the very sample stored
    assert summary["measured"] == 2 and summary["busiest"][:2] == [1, 0]
    assert 0 < client.ttl(summary_key("emu-a")) <= SNAPSHOT_TTL_S
    assert 0 < client.ttl(snapshot_key("emu-a")) <= SNAPSHOT_TTL_S

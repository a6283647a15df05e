"""The per-deployment dashboard (observability/deployment_dashboard.py): its replicas'
partitions, live over /ws/dashboard/?deployment=NAME, and its model's request metrics."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis

from models.models import ModelProfile
from planning.services import DemandSpec
from serving.services import create_deployment

pytestmark = [pytest.mark.redis, pytest.mark.django_db]


def json_script(html: str, element_id: str):  # type: ignore[no-untyped-def]
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, element_id
    return json.loads(match.group(1))


def test_deployment_dashboard_shows_its_partitions_and_requests(emulated, catalog, client, viewer, redis_url, settings):
    from django.urls import reverse

    from partitions.agent import build_snapshot
    from partitions.models import Node
    from partitions.telemetry_store import snapshot_key

    settings.REDIS_URL = redis_url
    profile = ModelProfile.objects.filter(model__hf_id="Qwen/Qwen2.5-0.5B-Instruct", gpu_model="MI300X").first()
    deployment = create_deployment(spec=DemandSpec(name="chat", profile=profile, replicas=1))
    slot = deployment.slots.select_related("partition__gpu__node").get()
    node = Node.objects.get(pk=slot.partition.gpu.node.pk)
    from partitions.services.inventory import backend_for

    emulated.state.set_load(slot.partition.gpu.index, slot.partition.index, 0.8, vram_used_mb=9_000)
    snap = build_snapshot(node, backend_for(node).metrics(), time.time())  # what the node's agent stores
    redis.Redis.from_url(redis_url).set(snapshot_key(node.name), json.dumps(snap), ex=30)

    url = reverse("observability:deployment-dashboard", args=[deployment.pk])
    assert url == f"/deployments/{deployment.pk}/dashboard/"
    client.force_login(viewer)
    html = client.get(url).content.decode()
    live = json_script(html, "dashboard-live")
    assert live["ws_path"] == "/ws/dashboard/?deployment=chat" and live["scope"]["level"] == "deployment"
    frame = json_script(html, "dashboard-frame")
    assert frame["counts"]["partitions"] == 1 and frame["series"]["level"] == "partition"
    (series,) = frame["series"]["items"]
    assert series["key"] == f"{node.name}|{slot.partition.gpu.index}|{slot.partition.index}"
    assert series["activity_mean"] > 50 and series["vram_used_gib"] > 8
    assert f"{node.name} gpu{slot.partition.gpu.index}/p{slot.partition.index}" in html  # partitions held, linked
    assert "No request for Qwen/Qwen2.5-0.5B-Instruct has gone through the gateway yet" in html
    assert "data is emulated, not real hardware" in html
    nav = html.split('<nav class="mainnav"', 1)[1].split("</nav>", 1)[0]
    assert re.findall(r'<a [^>]*aria-current="page"[^>]*>([^<]*)</a>', nav) == ["Deployments"]
    assert client.get("/deployments/999999/dashboard/").status_code == 404


def test_the_fleet_dashboard_links_each_deployment_to_its_dashboard(emulated, catalog, client, viewer, redis_url, settings):
    from django.urls import reverse

    from partitions.agent import build_snapshot
    from partitions.models import Node
    from partitions.services.inventory import backend_for
    from partitions.telemetry_store import snapshot_key

    settings.REDIS_URL = redis_url
    profile = ModelProfile.objects.filter(model__hf_id="Qwen/Qwen2.5-0.5B-Instruct", gpu_model="MI300X").first()
    deployment = create_deployment(spec=DemandSpec(name="chat", profile=profile, replicas=1))
    node = Node.objects.get(pk=deployment.slots.select_related("partition__gpu__node").get().partition.gpu.node.pk)
    snap = build_snapshot(node, backend_for(node).metrics(), time.time())
    redis.Redis.from_url(redis_url).set(snapshot_key(node.name), json.dumps(snap), ex=30)

    client.force_login(viewer)
    html = client.get(reverse("dashboard:dashboard")).content.decode()
    href = reverse("observability:deployment-dashboard", args=[deployment.pk])
    (row,) = json_script(html, "dashboard-frame")["deployments"]["items"]
    assert row["full"] == "chat" and row["href"] == href  # the live frames carry it too (dashboard.js links it)
    assert f'<a href="{href}"' in html
    assert client.get(href).status_code == 200

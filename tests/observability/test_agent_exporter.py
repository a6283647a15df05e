"""A node agent's own ``/metrics`` (partitions/exporter.py): the node's per-GPU and
per-partition series, served over HTTP, advertised for discovery (``/metrics/agents``,
``manage.py metrics_targets``), and its cost per scrape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client import generate_latest

from partitions import exporter
from partitions.models import Node
from tests.observability.conftest import build_sim_fleet, run_promtool
from tests.observability.test_metrics_endpoint import _no_hardware, _populate, samples

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def agent_scrape(node_name: str, client) -> str:  # type: ignore[no-untyped-def]
    return generate_latest(exporter.node_registry(node_name, client)).decode()


@pytest.fixture
def fleet(clean_metrics):  # type: ignore[no-untyped-def]
    return build_sim_fleet(2, 2, client=clean_metrics)


def test_the_agent_exports_its_nodes_inventory_and_telemetry_only(fleet, clean_metrics):
    node, other = fleet[0].name, fleet[1].name
    text = agent_scrape(node, clean_metrics)
    assert samples(text, "aim_node_agent_up") == {f'{{emulated="true",node="{node}"}}': 1.0}
    assert samples(text, "aim_node_telemetry_available") == {f'{{emulated="true",node="{node}"}}': 1.0}
    assert 0 <= samples(text, "aim_node_telemetry_snapshot_age_seconds")[f'{{emulated="true",node="{node}"}}'] < 30
    info = samples(text, "aim_node_info")
    assert len(info) == 1 and f'backend="simulated",emulated="true",node="{node}"' in next(iter(info))
    # CPX: 8 partitions per GPU, 24 GiB each, activity derived from per-XCP counters.
    totals = samples(text, "aim_partition_memory_total_bytes")
    assert len(totals) == 2 * 8 and set(totals.values()) == {24 * 2**30}
    activity = samples(text, "aim_partition_gfx_activity_ratio")
    assert len(activity) == 16 and all('derived="true"' in k for k in activity)
    assert all(0 <= v <= 1 for v in activity.values())
    modes = samples(text, "aim_gpu_compute_mode")
    assert modes[f'{{emulated="true",gpu="0",mode="CPX",node="{node}"}}'] == 1.0
    assert modes[f'{{emulated="true",gpu="0",mode="SPX",node="{node}"}}'] == 0.0
    assert samples(text, "aim_gpu_power_watts") and samples(text, "aim_gpu_memory_used_bytes")
    assert samples(text, "aim_agent_metrics_redis_up") == {"": 1.0}
    # Only this node; simulated hardware says so on every node-scoped series.
    assert f'node="{other}"' not in text
    node_lines = [line for line in text.splitlines() if 'node="' in line and not line.startswith("#")]
    assert node_lines and all('emulated="true"' in line for line in node_lines)
    assert 'emulated="false"' not in text


def test_a_real_nodes_series_say_emulated_false(clean_metrics):
    node = build_sim_fleet(1, 1, compute="SPX", client=clean_metrics)[0]
    Node.objects.filter(pk=node.pk).update(emulated=False)
    text = agent_scrape(node.name, clean_metrics)
    series = [line for line in text.splitlines() if 'node="' in line and not line.startswith("#")]
    assert samples(text, "aim_gpu_info") and series and all('emulated="false"' in line for line in series)


def test_the_agent_scrape_passes_promtool_check_metrics(fleet, clean_metrics, promtool):
    result = run_promtool(promtool, "check", "metrics", stdin=agent_scrape(fleet[0].name, clean_metrics).encode())
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result.stdout + result.stderr


def test_a_node_without_heartbeat_or_snapshot_reports_both(fleet, clean_metrics):
    from partitions.telemetry_store import snapshot_key

    name = fleet[1].name
    Node.objects.filter(pk=fleet[1].pk).update(agent_heartbeat_at=None)
    clean_metrics.delete(snapshot_key(name))
    text = agent_scrape(name, clean_metrics)
    label = f'{{emulated="true",node="{name}"}}'
    assert samples(text, "aim_node_agent_up") == {label: 0.0}
    assert samples(text, "aim_node_telemetry_available") == {label: 0.0}
    assert not samples(text, "aim_node_telemetry_snapshot_age_seconds") and not samples(text, "aim_node_agent_heartbeat_age_seconds")
    assert not samples(text, "aim_partition_memory_used_bytes")
    assert len(samples(text, "aim_partition_info")) == 16  # the inventory is still there


def test_without_redis_the_agent_serves_the_inventory(fleet):
    import redis

    broken = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    text = agent_scrape(fleet[0].name, broken)
    assert samples(text, "aim_agent_metrics_redis_up") == {"": 0.0}
    assert len(samples(text, "aim_partition_info")) == 16 and not samples(text, "aim_gpu_power_watts")


def test_partitions_holding_a_replica_report_its_memory_by_model(fleet, clean_metrics, catalog):
    from models.models import ModelProfile

    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    _populate(fleet, profile)
    reserved = samples(agent_scrape(fleet[0].name, clean_metrics), "aim_partition_memory_reserved_bytes")
    assert len(reserved) == 2 and all('model="meta-llama/Llama-3.1-8B-Instruct"' in k for k in reserved)
    assert all(v > 0 for v in reserved.values())


def test_an_agent_scrape_makes_no_hardware_call_and_a_constant_number_of_queries(clean_metrics, catalog, monkeypatch):
    from models.models import ModelProfile

    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    small = build_sim_fleet(1, 1, compute="DPX", prefix="small-", client=clean_metrics)
    big = build_sim_fleet(1, 8, compute="CPX", prefix="big-", client=clean_metrics)
    _populate(small + big, profile)
    calls = _no_hardware(monkeypatch)
    counts = []
    for node in (small[0], big[0]):
        with CaptureQueriesContext(connection) as ctx:
            text = agent_scrape(node.name, clean_metrics)
        counts.append(len(ctx.captured_queries))
    assert calls == []
    assert counts == [4, 4]  # node, GPUs, partitions, their occupants
    assert len(samples(text, "aim_partition_info")) == 64


def test_unknown_nodes_export_only_the_exporters_own_series(clean_metrics):
    text = agent_scrape("no-such-node", clean_metrics)
    assert "aim_agent_metrics_collect_duration_seconds" in text and 'node="' not in text


# --- serving and discovery ----------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_exporter_serves_http_and_is_listed_for_discovery(clean_metrics, settings, client):
    node = build_sim_fleet(1, 2, client=clean_metrics)[0]
    build_sim_fleet(1, 1, prefix="quiet-")  # a node whose agent runs no exporter
    settings.AGENT_METRICS_ADVERTISE = "127.0.0.1"
    running = exporter.start_exporter(node.name, port=0, addr="127.0.0.1")
    try:
        assert running.port > 0 and running.address == f"127.0.0.1:{running.port}"
        with urllib.request.urlopen(f"http://{running.address}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert len(samples(text, "aim_partition_info")) == 16 and f'node="{node.name}"' in text
        assert exporter_targets_view(client) == []  # not advertised yet
        running.register()
        expected = [{"targets": [running.address], "labels": {"node": node.name, "emulated": "true"}}]
        assert exporter_targets_view(client) == expected
        assert exporter.exporter_targets(clean_metrics) == expected
    finally:
        running.stop()
    assert exporter.exporter_targets(clean_metrics) == []  # a stopped exporter withdraws its entry


def exporter_targets_view(client) -> list:  # type: ignore[no-untyped-def]
    response = client.get("/metrics/agents")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    return response.json()


def test_the_discovery_endpoint_has_the_metrics_access_rule(client, clean_metrics):
    assert client.get("/metrics/agents").status_code == 200  # loopback
    assert client.get("/metrics/agents", REMOTE_ADDR="10.1.2.3").status_code == 401


def test_the_discovery_endpoint_says_when_redis_is_down(client, monkeypatch):
    import redis

    from observability import metrics

    build_sim_fleet(1, 1)
    monkeypatch.setattr(metrics, "redis_client", lambda: redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    response = client.get("/metrics/agents")
    assert response.status_code == 503 and "Redis" in response.json()["error"]


def _advertise(client, node: str, address: str, emulated: bool = True) -> None:  # type: ignore[no-untyped-def]
    client.set(exporter.exporter_key(node), json.dumps({"address": address, "node": node, "emulated": emulated}), ex=60)


def test_metrics_targets_writes_a_file_sd_file(clean_metrics, tmp_path):
    nodes = build_sim_fleet(2, 1)
    _advertise(clean_metrics, nodes[1].name, "gpu-b.example:9470", emulated=False)
    _advertise(clean_metrics, "gone", "gone.example:9470")  # an agent of a node the console no longer has
    target = tmp_path / "aim-agents.json"
    call_command("metrics_targets", output=target)
    assert json.loads(target.read_text()) == [
        {"targets": ["gpu-b.example:9470"], "labels": {"node": nodes[1].name, "emulated": "false"}}]
    assert [p.name for p in tmp_path.iterdir()] == ["aim-agents.json"]  # no temporary file left behind


def test_metrics_targets_refuses_a_missing_directory_and_changes_nothing(clean_metrics, tmp_path):
    with pytest.raises(CommandError, match="no directory"):
        call_command("metrics_targets", output=tmp_path / "missing" / "aim-agents.json")
    assert not (tmp_path / "missing").exists()


def test_run_agent_refuses_a_bad_metrics_port_before_taking_the_lease(clean_metrics):
    node = build_sim_fleet(1, 1)[0]
    with pytest.raises(CommandError, match="--metrics-port"):
        call_command("run_agent", node=node.name, metrics_port=70000)
    node.refresh_from_db()
    assert node.agent_lease_holder == "" and node.agent_lease_token == 0


def test_a_bad_agent_metrics_port_stops_the_process_at_start():
    env = {**os.environ, "AIM_AGENT_METRICS_PORT": "nine", "DJANGO_SETTINGS_MODULE": "aimconsole.settings.test"}
    proc = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "AIM_AGENT_METRICS_PORT" in proc.stderr


@pytest.mark.parametrize(("addr", "advertise", "expected"), [
    ("10.0.0.5", "", "10.0.0.5:9470"),
    ("0.0.0.0", "gpu-a.example", "gpu-a.example:9470"),
    ("::", "fd00::5", "[fd00::5]:9470"),
])
def test_the_advertised_address(settings, addr, advertise, expected):
    settings.AGENT_METRICS_ADVERTISE = advertise
    assert exporter.advertised_address(addr, 9470) == expected


def test_bound_to_every_address_it_advertises_the_hosts_name(settings, monkeypatch):
    settings.AGENT_METRICS_ADVERTISE = ""
    monkeypatch.setattr(exporter.socket, "getfqdn", lambda: "gpu-c.example")
    assert exporter.advertised_address("0.0.0.0", 9470) == "gpu-c.example:9470"

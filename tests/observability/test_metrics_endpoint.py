"""``/metrics``: access, format (promtool check metrics), what it reports, and the scrape
path's cost: zero hardware calls and a constant number of database queries."""

from __future__ import annotations

import re
import subprocess

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from aimconsole import counters
from observability import metrics
from partitions.models import GPU, Node, Reconfiguration
from serving.models import Deployment
from serving.runtime import emulated as emulated_runtime
from tests.observability.conftest import build_sim_fleet, run_promtool

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def scrape(client, **extra) -> str:  # type: ignore[no-untyped-def]
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.content.decode()


def samples(text: str, name: str) -> dict[str, float]:
    """{label string: value} of one series name."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


# --- access ----------------------------------------------------------------------------------

def test_loopback_scrapers_need_no_login(client, clean_metrics):
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_other_addresses_need_a_metrics_token_or_a_session(client, clean_metrics, settings, viewer, norole):
    from aimconsole.services import create_token

    _, metrics_key = create_token(user=viewer, name="prometheus", scopes=["metrics"])
    _, api_key = create_token(user=viewer, name="automation")
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    response = client.get("/metrics", **remote)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **remote).status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {api_key}", **remote).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_key}", **remote).status_code == 200
    settings.METRICS_ALLOWED_CIDRS = ["10.1.0.0/16"]
    assert client.get("/metrics", **remote).status_code == 200
    settings.METRICS_ALLOWED_CIDRS = []
    assert client.get("/metrics", **remote).status_code == 401
    client.force_login(norole)
    assert client.get("/metrics", **remote).status_code == 403
    client.force_login(viewer)
    assert client.get("/metrics", **remote).status_code == 200


def test_a_spoofed_forwarded_for_is_not_loopback(client, clean_metrics, settings):
    """Behind a proxy only the configured proxies' X-Forwarded-For is believed."""
    settings.TRUSTED_PROXIES = []
    spoofed = {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}
    assert client.get("/metrics", **spoofed).status_code == 401


def test_a_bad_allow_list_stops_the_process_at_start():
    env = {"AIM_METRICS_ALLOWED_CIDRS": "10.0.0.0/8,not-a-network", "DJANGO_SETTINGS_MODULE": "aimconsole.settings.test",
           "PATH": "/usr/bin:/bin"}
    import os
    import sys

    proc = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "AIM_METRICS_ALLOWED_CIDRS" in proc.stderr


# --- content -----------------------------------------------------------------------------------

@pytest.fixture
def fleet(clean_metrics):  # type: ignore[no-untyped-def]
    return build_sim_fleet(2, 2, client=clean_metrics)


def test_the_scrape_passes_promtool_check_metrics(client, fleet, promtool):
    counters.observe_requests("meta-llama/Llama-3.1-8B-Instruct", [0.2, 0.4, 2.5], errors=[1.0], tokens=300, emulated=True)
    text = scrape(client)
    result = run_promtool(promtool, "check", "metrics", stdin=text.encode())
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert not result.stdout.strip() and not result.stderr.strip(), "promtool lint findings: " + result.stdout.decode() + result.stderr.decode()


def test_the_console_exports_fleet_aggregates_and_no_per_node_series(client, fleet):
    text = scrape(client)
    nodes = '{backend="simulated",emulated="true",memory_mode="NPS1"}'
    assert samples(text, "aim_fleet_nodes") == {nodes: 2.0}
    assert samples(text, "aim_fleet_nodes_agent_up") == {nodes: 2.0}
    assert samples(text, "aim_fleet_nodes_schedulable") == {nodes: 2.0}
    gpus = samples(text, "aim_fleet_gpus")
    assert sum(gpus.values()) == 4.0 and all('compute_mode="CPX"' in k and 'gpu_model="MI300X"' in k for k in gpus), gpus
    assert samples(text, "aim_fleet_gpu_memory_total_bytes") == {'{emulated="true",gpu_model="MI300X"}': 4 * 196592 * 2**20}
    # CPX: 8 partitions per GPU, 24 GiB each.
    parts = '{compute_mode="CPX",emulated="true",gpu_model="MI300X"}'
    assert samples(text, "aim_fleet_partitions") == {parts: 32.0}
    assert samples(text, "aim_fleet_partitions_held") == {parts: 0.0}
    assert samples(text, "aim_fleet_partition_memory_total_bytes") == {parts: 32 * 24 * 2**30}
    assert samples(text, "aim_metrics_redis_up") == {"": 1.0}
    assert samples(text, "aim_fleet_aggregates_age_seconds") == {"": 0.0}
    # Per-node, per-GPU and per-partition series are the agents' (partitions/exporter.py).
    assert not re.search(r'\b(node|gpu|partition)="', text)
    assert not samples(text, "aim_partition_gfx_activity_ratio") and not samples(text, "aim_node_agent_up")
    # Simulated hardware is marked on every series counting it; no request ids or user names.
    assert 'emulated="false"' not in text
    assert not re.search(r'(user|request_id|username)="', text)


def test_a_node_whose_agent_died_counts_as_down(client, fleet):
    Node.objects.filter(pk=fleet[1].pk).update(agent_heartbeat_at=None)
    text = scrape(client)
    nodes = '{backend="simulated",emulated="true",memory_mode="NPS1"}'
    assert samples(text, "aim_fleet_nodes")[nodes] == 2.0
    assert samples(text, "aim_fleet_nodes_agent_up")[nodes] == 1.0


def test_operations_counts_durations_and_queue_depth(client, fleet):
    from datetime import timedelta

    from django.utils import timezone

    node = fleet[0]
    gpus = list(GPU.objects.filter(node=node).order_by("index"))
    now = timezone.now()
    Reconfiguration.objects.create(kind="compute", node=node, gpu=gpus[0], gpu_index=0, target_compute_mode="SPX",
                                   state="succeeded", started_at=now - timedelta(seconds=12), finished_at=now)
    Reconfiguration.objects.create(kind="memory", node=fleet[1], target_memory_mode="NPS4", state="rolled_back",
                                   started_at=now - timedelta(seconds=400), finished_at=now)
    old = Reconfiguration.objects.create(kind="compute", node=node, gpu=gpus[1], gpu_index=1, target_compute_mode="DPX")
    Reconfiguration.objects.filter(pk=old.pk).update(created_at=now - timedelta(seconds=100))
    text = scrape(client)
    assert samples(text, "aim_operations_requested_total") == {'{kind="compute"}': 2.0, '{kind="memory"}': 1.0}
    assert samples(text, "aim_operations_started_total") == {'{kind="compute"}': 1.0, '{kind="memory"}': 1.0}
    finished = samples(text, "aim_operations_finished_total")
    assert finished['{kind="compute",result="succeeded"}'] == 1.0
    assert finished['{kind="memory",result="rolled_back"}'] == 1.0 and finished['{kind="memory",result="failed"}'] == 0.0
    assert samples(text, "aim_operations_pending")['{kind="compute"}'] == 1.0
    assert 99 <= samples(text, "aim_operations_oldest_active_age_seconds")['{kind="compute"}'] < 200
    buckets = samples(text, "aim_operation_duration_seconds_bucket")
    assert buckets['{kind="compute",le="10.0",result="succeeded"}'] == 0.0
    assert buckets['{kind="compute",le="15.0",result="succeeded"}'] == 1.0
    assert buckets['{kind="memory",le="300.0",result="rolled_back"}'] == 0.0
    assert buckets['{kind="memory",le="600.0",result="rolled_back"}'] == 1.0
    assert buckets['{kind="memory",le="+Inf",result="rolled_back"}'] == 1.0
    assert samples(text, "aim_operation_duration_seconds_sum")['{kind="compute",result="succeeded"}'] == pytest.approx(12.0)
    assert samples(text, "aim_operation_duration_seconds_sum")['{kind="memory",result="rolled_back"}'] == pytest.approx(400.0)


def test_request_metrics_are_cumulative_histograms(client, clean_metrics):
    model = "meta-llama/Llama-3.1-8B-Instruct"
    counters.observe_requests(model, [0.03, 0.2, 0.2, 1.9, 30.0], errors=[0.6], tokens=1000)
    counters.observe_requests(model, [0.01], tokens=10)
    text = scrape(client)
    lbl = f'model="{model}"'
    reqs = samples(text, "aim_model_requests_total")
    assert reqs[f'{{emulated="false",{lbl},result="ok"}}'] == 6.0
    assert reqs[f'{{emulated="false",{lbl},result="error"}}'] == 1.0
    buckets = samples(text, "aim_model_request_duration_seconds_bucket")
    assert buckets[f'{{emulated="false",le="0.025",{lbl}}}'] == 1.0
    assert buckets[f'{{emulated="false",le="0.25",{lbl}}}'] == 4.0
    assert buckets[f'{{emulated="false",le="2.0",{lbl}}}'] == 6.0
    assert buckets[f'{{emulated="false",le="20.0",{lbl}}}'] == 6.0
    assert buckets[f'{{emulated="false",le="+Inf",{lbl}}}'] == 7.0
    assert samples(text, "aim_model_request_duration_seconds_count")[f'{{emulated="false",{lbl}}}'] == 7.0
    assert samples(text, "aim_model_request_duration_seconds_sum")[f'{{emulated="false",{lbl}}}'] == pytest.approx(32.94)
    assert samples(text, "aim_model_generated_tokens_total")[f'{{emulated="false",{lbl}}}'] == 1010.0


def test_gateway_tallies_feed_the_request_families_and_their_own(client, clean_metrics):
    model = "meta-llama/Llama-3.1-8B-Instruct"
    tally = counters.RequestTally()
    tally.observe("ok", 0.2, ttft_s=0.04, prompt_tokens=30, generated_tokens=12)
    tally.observe("ok", 3.5, ttft_s=1.5, prompt_tokens=10, generated_tokens=100)
    tally.observe("cancelled", 8.0, ttft_s=0.3, generated_tokens=4)
    tally.observe_gap(0.02, 110)
    assert counters.record_request_tallies({(model, True): tally})
    assert counters.record_request_tallies({(model, True): tally})  # cumulative
    text = scrape(client)
    lbl = f'emulated="true",model="{model}"'
    reqs = samples(text, "aim_model_requests_total")
    assert reqs[f'{{{lbl},result="ok"}}'] == 4.0 and reqs[f'{{{lbl},result="cancelled"}}'] == 2.0
    assert reqs[f'{{{lbl},result="error"}}'] == 0.0
    assert samples(text, "aim_model_generated_tokens_total")[f"{{{lbl}}}"] == 232.0
    assert samples(text, "aim_model_prompt_tokens_total")[f"{{{lbl}}}"] == 80.0
    # Cancelled requests are counted, not timed.
    assert samples(text, "aim_model_request_duration_seconds_count")[f"{{{lbl}}}"] == 4.0
    ttft = samples(text, "aim_model_time_to_first_token_seconds_bucket")
    assert ttft[f'{{emulated="true",le="0.05",model="{model}"}}'] == 2.0
    assert ttft[f'{{emulated="true",le="+Inf",model="{model}"}}'] == 6.0
    assert samples(text, "aim_model_inter_token_latency_seconds_count")[f"{{{lbl}}}"] == 220.0
    assert samples(text, "aim_model_inter_token_latency_seconds_sum")[f"{{{lbl}}}"] == pytest.approx(4.4)


def test_a_tally_flush_without_redis_says_so_and_raises_nothing(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    tally = counters.RequestTally()
    tally.observe("ok", 0.1)
    broken = __import__("redis").Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    assert counters.record_request_tallies({("m", False): tally}, client=broken) is False


def test_without_redis_the_database_metrics_are_still_served(client, fleet, monkeypatch):
    import redis

    broken = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(metrics, "redis_client", lambda: broken)
    text = scrape(client)
    assert samples(text, "aim_metrics_redis_up") == {"": 0.0}
    assert samples(text, "aim_fleet_partitions") == {'{compute_mode="CPX",emulated="true",gpu_model="MI300X"}': 32.0}
    assert set(samples(text, "aim_placement_decisions_total").values()) == {0.0}  # the counters live in Redis


# --- placement decisions ---------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_placement_decisions_and_failures_are_counted_where_they_happen(clean_metrics, catalog):
    from models.models import ModelProfile
    from planning.services import DemandSpec
    from serving.services import PlacementConflict, create_deployment

    build_sim_fleet(1, 2, compute="SPX")
    small = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                     gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    huge = ModelProfile.objects.get(model__hf_id="deepseek-ai/DeepSeek-V3", precision__code="fp16",
                                    gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    create_deployment(spec=DemandSpec(name="small", profile=small, replicas=1))
    with pytest.raises(PlacementConflict):
        create_deployment(spec=DemandSpec(name="more", profile=small, replicas=3))
    with pytest.raises(PlacementConflict):
        create_deployment(spec=DemandSpec(name="huge", profile=huge, replicas=1))
    data = metrics.gather()
    assert data.placement["d\tdeployment\tplaced"] == "1"
    assert data.placement["d\tdeployment\tunplaced"] == "2"
    failures = {k.split("\t")[2]: int(v) for k, v in data.placement.items() if k.startswith("f\tdeployment\t")}
    assert sum(failures.values()) == 3 and "other" not in failures, failures
    assert failures.get("no_free_partition") == 2
    # 409s come with a suggested plan: those what-if decisions count under source="plan".
    assert int(data.placement.get("d\tplan\tplaced", 0)) + int(data.placement.get("d\tplan\tunplaced", 0)) == 2


def _reason_cases() -> dict[str, tuple]:
    """One placement input per reason code, each leaving exactly one replica unplaced for it."""
    from planning import placement as pl

    def node(name: str, mode: str = "SPX", n: int = 1, nps: str = "NPS1", model: str = "MI300X",
             schedulable: bool = True) -> pl.NodeState:
        return pl.NodeState(name, nps, tuple(pl.GpuState(name, i, model, mode) for i in range(n)), schedulable)

    one = pl.Fleet((node("a"),))
    return {
        "no_gpu_model": (one, [pl.Demand("x", 20.0, 1, gpu_models=("MI355X",))]),
        "not_allowed_model": (pl.Fleet((node("a"), node("b", model="MI325X"))),
                              [pl.Demand("x", 20.0, 1, gpu_models=("MI325X",), pin_node="a", pin_gpu=0)]),
        "unschedulable": (pl.Fleet((node("a", schedulable=False),)), [pl.Demand("x", 20.0, 1)]),
        "exceeds_gpu": (one, [pl.Demand("x", 300.0, 1)]),
        "tensor_parallel": (pl.Fleet((node("a", n=2),)), [pl.Demand("x", 150.0, 1, tensor_parallel=4)]),
        "memory_mode": (pl.Fleet((node("a", "QPX", nps="NPS4"),)), [pl.Demand("x", 60.0, 1)]),
        "no_free_partition": (one, [pl.Demand("x", 150.0, 2)]),
    }


def test_reason_classes_are_the_codes_real_placements_return(clean_metrics, django_capture_on_commit_callbacks):
    from planning import placement as pl

    assert set(counters.PLACEMENT_REASONS) == {*pl.REASON_CODES, "concurrent", "other"}
    cases = _reason_cases()
    assert set(cases) == set(pl.REASON_CODES)
    for code, (fleet, demands) in cases.items():
        result = pl.place(fleet, demands)
        assert [u.code for u in result.unplaced] == [code], (code, result.unplaced)
        with django_capture_on_commit_callbacks(execute=True):
            counters.count_placement("plan", result)
    data = metrics.gather()
    failures = {k.split("\t")[2]: int(v) for k, v in data.placement.items() if k.startswith("f\tplan\t")}
    assert failures == {code: 1 for code in pl.REASON_CODES}
    assert set(failures) <= set(metrics.PLACEMENT_REASONS)
    assert counters.classify_reason("not-a-code") == "other"


# --- the emulated serving feed ---------------------------------------------------------------------

def test_emulated_replicas_feed_synthetic_request_metrics(clean_metrics, catalog, tmp_path, monkeypatch):
    import random

    from models.models import ModelProfile
    from planning.services import DemandSpec
    from serving.services import create_deployment, reconcile_node
    from tests.emulated_nodes import make_emulated_node

    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)
    emulated = make_emulated_node(tmp_path, "emu-m", gpus=2)
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    node = Node.objects.get(pk=emulated.node.pk)
    assert emulated_runtime.feed_emulated_serving(node, clean_metrics) == 0  # nothing running yet
    create_deployment(spec=DemandSpec(name="llama8", profile=profile, replicas=2))
    reconcile_node(node=node)
    assert Deployment.objects.get(name="llama8").state == "running"
    total = sum(emulated_runtime.feed_emulated_serving(node, clean_metrics, 1.0, random.Random(i)) for i in range(20))
    assert 100 < total < 220  # 2 replicas x 4 req/s x 20 s
    data = metrics.gather(clean_metrics)
    count = sum(int(v) for k, v in data.requests.items() if k.startswith("n\tmeta-llama/Llama-3.1-8B-Instruct\ttrue\t"))
    assert count == total
    # Real (non-emulated) nodes get no synthetic traffic.
    node.emulated = False
    assert emulated_runtime.feed_emulated_serving(node, clean_metrics) == 0


# --- cost of a scrape ---------------------------------------------------------------------------------

def _no_hardware(monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """Make every way to reach hardware fail loudly (and record the attempt)."""
    calls: list[str] = []

    def forbid(what: str):  # type: ignore[no-untyped-def]
        def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(what)
            raise AssertionError(f"the scrape path called {what}")
        return fail

    from partitions.backends import amdsmi, simulated

    monkeypatch.setattr("partitions.services.inventory.backend_for", forbid("backend_for"))
    monkeypatch.setattr("partitions.services.backend_for", forbid("backend_for"))
    monkeypatch.setattr("partitions.backends.get_backend", forbid("get_backend"))
    monkeypatch.setattr(amdsmi.AmdSmiBackend, "__init__", forbid("AmdSmiBackend()"))
    monkeypatch.setattr(simulated.SimulatedBackend, "__init__", forbid("SimulatedBackend()"))
    monkeypatch.setattr(subprocess, "Popen", forbid("subprocess.Popen"))
    monkeypatch.setattr(subprocess, "run", forbid("subprocess.run"))
    return calls


def _populate(nodes: list[Node], catalog_profile) -> None:  # type: ignore[no-untyped-def]
    """A deployment on each node's first partitions and some operations, so every query has rows."""
    from datetime import timedelta

    from django.utils import timezone

    from partitions.models import Partition
    from serving.models import DeploymentSlot

    now = timezone.now()
    for node in nodes:
        deployment = Deployment.objects.create(name=f"{node.name}-d", profile=catalog_profile, replicas=2, state="running")
        for replica, part in enumerate(Partition.objects.filter(gpu__node=node).order_by("gpu__index", "index")[:2]):
            DeploymentSlot.objects.create(deployment=deployment, replica=replica, partition=part, started_at=now)
        gpu = GPU.objects.filter(node=node).first()
        Reconfiguration.objects.create(kind="compute", node=node, gpu=gpu, gpu_index=gpu.index, target_compute_mode="CPX",
                                       state="succeeded", started_at=now - timedelta(seconds=5), finished_at=now)


def test_a_scrape_makes_no_hardware_call_and_a_constant_number_of_queries(client, clean_metrics, catalog, monkeypatch,
                                                                         django_assert_num_queries):
    from models.models import ModelProfile

    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    small = build_sim_fleet(1, 1, compute="DPX", prefix="small-", client=clean_metrics)
    _populate(small, profile)
    calls = _no_hardware(monkeypatch)

    def count_queries() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as ctx:
            text = scrape(client)
        return len(ctx.captured_queries), text

    small_queries, small_text = count_queries()
    monkeypatch.undo()
    big = build_sim_fleet(4, 8, compute="CPX", prefix="big-", client=clean_metrics)
    _populate(big, profile)
    calls = _no_hardware(monkeypatch)
    big_queries, big_text = count_queries()
    assert calls == []
    assert small_queries == big_queries, (small_queries, big_queries)
    # the collector's own reads: 7 aggregate queries (the rest is the request: session/auth)
    with django_assert_num_queries(7):
        list(metrics.ConsoleCollector().collect())
    held = samples(big_text, "aim_deployment_partitions_bound")
    assert held == {'{model="meta-llama/Llama-3.1-8B-Instruct"}': 2.0 * 5}


def _series(text: str) -> list[str]:
    """The series of a scrape: name and labels, without values."""
    return sorted(line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#"))


def test_the_console_series_count_does_not_grow_with_the_number_of_nodes(client, clean_metrics, catalog):
    """10 and 100 nodes (8 CPX GPUs each: 640 and 6,400 partitions), each with a deployment:
    the same series, only the values differ."""
    from models.models import ModelProfile
    from tests.observability.conftest import bulk_fleet

    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    _populate(bulk_fleet(10, prefix="ten-"), profile)
    ten = scrape(client)
    _populate(bulk_fleet(90, prefix="more-"), profile)
    hundred = scrape(client)
    assert _series(ten) == _series(hundred)
    assert 100 < len(_series(hundred)) < 400
    assert len(hundred.encode()) < 1.05 * len(ten.encode())
    parts = '{compute_mode="CPX",emulated="true",gpu_model="MI300X"}'
    assert samples(ten, "aim_fleet_partitions") == {parts: 640.0}
    assert samples(hundred, "aim_fleet_partitions") == {parts: 6400.0}
    assert samples(hundred, "aim_fleet_partitions_held") == {parts: 200.0}
    assert samples(hundred, "aim_operations_requested_total")['{kind="compute"}'] == 100.0


# --- the cached fleet aggregates ----------------------------------------------------------------------

@pytest.fixture
def cached(settings, monkeypatch):  # type: ignore[no-untyped-def]
    """The aggregates cached as in production (refreshed after 10 s); background refreshes are
    recorded, and run on the calling thread (the test's database connection)."""
    settings.METRICS_FLEET_REFRESH_S = 10.0
    refreshes: list[object] = []

    def refresh_now(client) -> None:  # type: ignore[no-untyped-def]
        refreshes.append(client)
        metrics.refresh_fleet_rows(client)

    monkeypatch.setattr(metrics, "_refresh_in_background", refresh_now)
    return refreshes


def test_cached_aggregates_are_served_without_queries_and_refreshed_when_old(client, fleet, cached, clean_metrics,
                                                                               django_assert_num_queries):
    import json

    nodes = '{backend="simulated",emulated="true",memory_mode="NPS1"}'
    with django_assert_num_queries(7):  # nothing cached yet: this scrape computes and caches them
        list(metrics.ConsoleCollector().collect())
    with django_assert_num_queries(0):
        families = {m.name: m for m in metrics.ConsoleCollector().collect()}
    assert families["aim_fleet_nodes"].samples[0].value == 2.0 and cached == []

    build_sim_fleet(1, 1, prefix="late-")
    assert samples(scrape(client), "aim_fleet_nodes")[nodes] == 2.0  # still the cached copy, younger than 10 s
    entry = json.loads(clean_metrics.get(metrics.fleet_key()))
    entry["ts"] -= 11
    clean_metrics.set(metrics.fleet_key(), json.dumps(entry))
    stale = scrape(client)
    assert samples(stale, "aim_fleet_nodes")[nodes] == 2.0  # served as it was, and refreshed behind it
    assert 11 <= samples(stale, "aim_fleet_aggregates_age_seconds")[""] < 60
    assert len(cached) == 1
    fresh = scrape(client)
    assert samples(fresh, "aim_fleet_nodes")[nodes] == 3.0
    assert samples(fresh, "aim_fleet_aggregates_age_seconds")[""] < 10
    assert len(cached) == 1


def test_a_cached_copy_too_old_to_trust_is_recomputed_by_the_scrape(client, fleet, cached, clean_metrics):
    import json

    scrape(client)
    entry = json.loads(clean_metrics.get(metrics.fleet_key()))
    entry["ts"] -= metrics.FLEET_MAX_AGE_S + 1
    clean_metrics.set(metrics.fleet_key(), json.dumps(entry))
    build_sim_fleet(1, 1, prefix="late-")
    text = scrape(client)
    assert samples(text, "aim_fleet_nodes")['{backend="simulated",emulated="true",memory_mode="NPS1"}'] == 3.0
    assert samples(text, "aim_fleet_aggregates_age_seconds") == {"": 0.0} and cached == []


def test_one_background_refresh_at_a_time(clean_metrics, monkeypatch):
    started: list[str] = []

    class FakeThread:
        def __init__(self, target, name, daemon):  # type: ignore[no-untyped-def]
            self.name = name

        def start(self) -> None:
            started.append(self.name)

    monkeypatch.setattr(metrics.threading, "Thread", FakeThread)
    metrics._refresh_in_background(clean_metrics)
    metrics._refresh_in_background(clean_metrics)  # another scrape (or console replica) meanwhile
    assert started == ["metrics-fleet-refresh"]
    clean_metrics.delete(metrics.fleet_key() + ":refreshing")  # the refresh finished
    metrics._refresh_in_background(clean_metrics)
    assert len(started) == 2

"""A real Prometheus (Debian's binary) scrapes a real console (daphne) and, discovered through
the console's ``/metrics/agents`` (HTTP service discovery), the real node agent's own exporter,
while that agent runs an emulated node with a running deployment; then every PromQL expression
of every dashboard and rule file is run through Prometheus's HTTP API: each must be valid, and
each dashboard expression must return data."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.browser.conftest import console  # noqa: F401  (the daphne fixture)
from tests.emulated_nodes import make_emulated_node
from tests.observability.conftest import DASHBOARDS, RULE_FILES, run_promtool
from tests.observability.promql import dashboard_expressions, metric_names, rule_expressions
from tests.processes import Process, free_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> dict:
        """The API's answer to an instant query (HTTP 400/422 answers are returned too)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            return json.load(exc)

    def vector(self, expr: str) -> list[dict]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]


def start_prometheus(binary: str, tmp_path: Path, target: str) -> tuple[Process, Prometheus]:
    """Prometheus scraping the console at ``target`` and the agents it lists, as
    deploy/prometheus/prometheus.yml does (jobs aim-console and aim-agents)."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [
            {"job_name": "aim-console", "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]},
            {"job_name": "aim-agents", "metrics_path": "/metrics", "honor_labels": True,
             "http_sd_configs": [{"url": f"http://{target}/metrics/agents", "refresh_interval": "1s"}]},
        ],
    }))
    proc = Process([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                   {"PATH": "/usr/bin:/bin"}, tmp_path / "prometheus.log")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.alive(), proc.output()
        try:
            return urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    wait_for(ready, 60, "prometheus to be ready")
    return proc, Prometheus(url)


def test_every_dashboard_and_rule_expression_runs_against_a_real_prometheus(
        console, start_agent, prometheus_bin, promtool, catalog, clean_metrics, tmp_path):  # noqa: F811
    from models.models import ModelProfile
    from partitions.models import GPU, Reconfiguration
    from partitions.services.reconfiguration import request_reconfiguration
    from planning.services import DemandSpec
    from serving.models import Deployment
    from serving.services import create_deployment

    emulated = make_emulated_node(tmp_path, "emu-obs", gpus=2)
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    deployment = create_deployment(spec=DemandSpec(name="llama8", profile=profile, replicas=1))
    busy = deployment.slots.get().partition.gpu.index
    start_agent("emu-obs", env={**console.env, "AIM_AGENT_METRICS_PORT": "0", "AIM_AGENT_METRICS_ADDR": "127.0.0.1"})
    free_gpu = GPU.objects.get(node=emulated.node, index=1 - busy)
    op = request_reconfiguration(gpu=free_gpu, compute_mode="CPX", reason="observability e2e")
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).state == "running", 60, "the deployment to run")
    wait_for(lambda: Reconfiguration.objects.get(pk=op.pk).is_terminal, 90, "the reconfiguration to finish")
    assert Reconfiguration.objects.get(pk=op.pk).state == "succeeded"

    def scrape() -> str:
        return urllib.request.urlopen(f"{console.url}/metrics", timeout=5).read().decode()

    wait_for(lambda: 'aim_model_requests_total{emulated="true"' in scrape(), 30, "emulated request metrics")
    text = scrape()
    lint = run_promtool(promtool, "check", "metrics", stdin=text.encode())
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout.decode() + lint.stderr.decode()
    assert 'node="' not in text  # the console's scrape holds fleet aggregates only

    def advertised() -> list[dict]:
        return json.load(urllib.request.urlopen(f"{console.url}/metrics/agents", timeout=5))

    (group,) = wait_for(advertised, 30, "the agent's exporter to be advertised")
    assert group["labels"] == {"node": "emu-obs", "emulated": "true"}
    (address,) = group["targets"]
    agent_text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    lint = run_promtool(promtool, "check", "metrics", stdin=agent_text.encode())
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout.decode() + lint.stderr.decode()
    assert 'aim_partition_info{' in agent_text and 'node="emu-obs"' in agent_text

    proc, prom = start_prometheus(prometheus_bin, tmp_path, console.url.removeprefix("http://"))
    try:
        def scraped_enough() -> bool:
            for job in ("aim-console", "aim-agents"):
                up = prom.vector(f'up{{job="{job}"}}')
                assert not up or up[0]["value"][1] == "1", f"scrape of {job} failed: {up}\n{proc.output()}"
            seen = [prom.vector(f"count_over_time({name}[5m])") for name in ("aim_metrics_redis_up", "aim_agent_metrics_redis_up")]
            return all(s and float(s[0]["value"][1]) >= 3 for s in seen)
        wait_for(scraped_enough, 60, "three scrapes", interval=0.5)

        expressions = [e for path in DASHBOARDS for e in dashboard_expressions(path)]
        expressions += [e for path in RULE_FILES for e in rule_expressions(path)]
        assert len(DASHBOARDS) >= 4 and RULE_FILES and len(expressions) > 60
        invalid, empty = [], []
        for e in expressions:
            answer = prom.query(e.expr)
            if answer.get("status") != "success":
                invalid.append(f"{e.source}: {answer.get('error')}\n    {e.expr}")
            elif e.must_return_data and not answer["data"]["result"]:
                empty.append(f"{e.source}\n    {e.expr}")
        assert not invalid, "invalid PromQL:\n" + "\n".join(invalid)
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        # Not only present: the demo's traffic and telemetry move the numbers.
        assert float(prom.vector('sum(rate(aim_model_requests_total{emulated="true"}[1m]))')[0]["value"][1]) > 0
        p95 = prom.vector('histogram_quantile(0.95, sum by (le, model) (rate(aim_model_request_duration_seconds_bucket[1m])))')
        assert p95 and 0 < float(p95[0]["value"][1]) < 20 and p95[0]["metric"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
        busy_activity = prom.vector(f'aim_partition_gfx_activity_ratio{{node="emu-obs",gpu="{busy}"}}')
        assert busy_activity and float(busy_activity[0]["value"][1]) > 0.3
        assert prom.vector('aim_partition_gfx_activity_ratio{node="emu-obs",derived="true"}'), "CPX GPU: derived activity"
        assert float(prom.vector('sum(aim_operations_finished_total{kind="compute",result="succeeded"})')[0]["value"][1]) >= 1
        assert float(prom.vector('sum(aim_placement_decisions_total{source="deployment",result="placed"})')[0]["value"][1]) >= 1

        # The agent's target: discovered with its node's labels (AimAgentDown reads `up` by node).
        (up,) = prom.vector('up{job="aim-agents"}')
        assert up["metric"]["node"] == "emu-obs" and up["metric"]["emulated"] == "true" and up["value"][1] == "1"
        from partitions.models import Partition

        partitions = Partition.objects.filter(gpu__node=emulated.node).count()
        assert float(prom.vector('sum(aim_fleet_partitions{emulated="true"})')[0]["value"][1]) == partitions
        assert len(prom.vector('aim_partition_info{job="aim-agents",node="emu-obs"}')) == partitions

        # Every aim_* series a dashboard or rule reads is one the console or the agent exports.
        exported = {line.split(" ")[2] for line in (text + agent_text).splitlines() if line.startswith("# TYPE ")}
        read = set().union(*(metric_names(e.expr) for e in expressions))
        unknown = read - exported
        assert not unknown, f"dashboards/rules read series /metrics never exports: {sorted(unknown)}"
    finally:
        proc.stop()

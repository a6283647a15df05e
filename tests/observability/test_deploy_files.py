"""The deploy/ artefacts: rule files pass ``promtool check rules`` and their alerts fire as
intended (``promtool test rules``), the example config passes ``promtool check config``, the
dashboards are importable (current schema, a datasource variable) and up to date with their
generator, and deploy/README.md documents every metric and alert."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.observability.conftest import DASHBOARDS, DEPLOY, RULE_FILES, run_promtool
from tests.observability.promql import dashboard_expressions

HERE = Path(__file__).resolve().parent


def test_there_are_rule_files_and_dashboards():
    assert [p.name for p in RULE_FILES] == ["aim-rules.yml"]
    assert {p.name for p in DASHBOARDS} == {"aim-partition-utilization.json", "aim-model-performance.json",
                                           "aim-scheduler-operations.json", "aim-node-health.json"}


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool, path):
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_promtool_check_config_on_the_example(promtool, tmp_path):
    result = run_promtool(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def _jobs(config: dict) -> dict[str, dict]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_the_examples_scrape_the_console_and_the_agents_under_the_jobs_the_rules_read():
    rules = (DEPLOY / "prometheus" / "aim-rules.yml").read_text()
    assert 'up{job="aim-agents"}' in yaml.safe_load(rules)["groups"][2]["rules"][0]["expr"]  # AimAgentDown
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        jobs = _jobs(yaml.safe_load((DEPLOY / "prometheus" / name).read_text()))
        assert set(jobs) == {"aim-console", "aim-agents"}, name
        assert jobs["aim-agents"]["honor_labels"] is True and jobs["aim-agents"]["metrics_path"] == "/metrics"
    sd = _jobs(yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text()))["aim-agents"]["http_sd_configs"]
    assert [c["url"] for c in sd] == ["http://127.0.0.1:8000/metrics/agents"]


def test_promtool_check_config_on_the_kubernetes_example(promtool, tmp_path):
    """Debian's Prometheus is built without Kubernetes discovery, so promtool checks the rest of
    the file (jobs, relabelling, authorization) with each kubernetes_sd_configs block replaced
    by an empty static one."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-kubernetes.yml").read_text())
    for job in config["scrape_configs"]:
        roles = [sd["role"] for sd in job.pop("kubernetes_sd_configs")]
        assert roles in (["pod"], ["endpoints"]), job["job_name"]
        job["static_configs"] = [{"targets": []}]
    config["rule_files"] = [str(DEPLOY / "prometheus" / "aim-rules.yml")]
    (tmp_path / "aim-metrics-token").write_text("x")
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(tmp_path / "aim-metrics-token")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run_promtool(promtool, "check", "config", str(path))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_the_operator_bundle_scrapes_agents_and_console_as_the_rules_expect():
    bundle = DEPLOY / "kubernetes" / "monitoring"
    kustomization = yaml.safe_load((bundle / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        doc = yaml.safe_load((bundle / resource).read_text())
        assert doc["apiVersion"] == "monitoring.coreos.com/v1", resource
        objects[doc["kind"]] = doc
    assert set(objects) == {"PodMonitor", "ServiceMonitor"}
    agents = objects["PodMonitor"]["spec"]
    assert agents["selector"]["matchLabels"]["app.kubernetes.io/component"] == "node-agent"
    (endpoint,) = agents["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == "aim-agents"
    assert relabel["node"]["sourceLabels"] == ["__meta_kubernetes_pod_node_name"]
    console = objects["ServiceMonitor"]["spec"]
    (endpoint,) = console["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["authorization"]["type"] == "Bearer"
    assert {r["targetLabel"]: r["replacement"] for r in endpoint["relabelings"]} == {"job": "aim-console"}


def test_alerts_fire_as_intended(promtool):
    result = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=HERE, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_every_alert_has_a_severity_summary_and_runbook():
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
                assert rule["annotations"].get("summary") and rule["annotations"].get("runbook"), rule["alert"]


def test_dashboards_are_current_importable_json():
    result = subprocess.run([sys.executable, str(DEPLOY / "grafana" / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["schemaVersion"] >= 39 and board["id"] is None and board["uid"] not in uids
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids = []

        def walk(panels, ids=ids):  # type: ignore[no-untyped-def]
            for panel in panels:
                ids.append(panel["id"])
                assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
                for target in panel.get("targets", []):
                    assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
                walk(panel.get("panels", []), ids)

        walk(board["panels"])
        assert len(ids) == len(set(ids)), path.name
    # Partition utilization: fleet and per node, with template variables.
    partition = json.loads((DEPLOY / "grafana" / "aim-partition-utilization.json").read_text())
    assert {"node", "gpu"} <= {v["name"] for v in partition["templating"]["list"]}


def test_latency_percentiles_use_rate_of_buckets_summed_by_le():
    exprs = [e.expr for e in dashboard_expressions(DEPLOY / "grafana" / "aim-model-performance.json")]
    quantiles = [e for e in exprs if "histogram_quantile" in e]
    assert {q.split("(")[1].split(",")[0] for q in quantiles} == {"0.5", "0.95", "0.99"}
    for q in quantiles:
        assert re.search(r"sum by \(le, model\) \(rate\(aim_model_request_duration_seconds_bucket\{[^}]*\}\[1m\]\)\)", q), q


def test_the_readme_documents_every_metric_and_alert():
    readme = (DEPLOY / "README.md").read_text()
    from observability import metrics
    from observability.metrics import Gathered, build
    from partitions.exporter import NodeRows, agent_families, node_families

    names = {m.name for m in build(Gathered(now=0.0))} | {"aim_metrics_collect_duration_seconds"}
    rows = NodeRows(name="n", emulated=True, backend="simulated", memory_mode="NPS1", rocm_version="", heartbeat_at=None,
                    layout_problem="", now=0.0)
    names |= {m.name for m in node_families(rows)} | {m.name for m in agent_families(rows, 0.0)}
    assert {"aim_partition_gfx_activity_ratio", "aim_fleet_partitions", "aim_agent_metrics_redis_up"} <= names
    assert metrics.REQUEST_BUCKETS
    missing = [n for n in sorted(names) if n not in readme]
    assert not missing, f"deploy/README.md does not document: {missing}"
    rules = [r for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    assert not [r["alert"] for r in rules if "alert" in r and f"`{r['alert']}`" not in readme]
    assert not [r["record"] for r in rules if "record" in r and r["record"].rsplit(":", 1)[0] not in readme]

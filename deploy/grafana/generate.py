"""Writes the Grafana dashboards of this folder (``python deploy/grafana/generate.py``).

The JSON files are committed; edit the panels here and regenerate (a test checks the files are
up to date). Every dashboard has a ``datasource`` variable (any Prometheus) and targets only
metrics ``/metrics`` exports (deploy/README.md); tests/observability runs every expression
against a real Prometheus scraping a console.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39


class Layout:
    """Places panels left to right, 24 columns wide."""

    def __init__(self) -> None:
        self.x = self.y = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict] = []

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x = self.row_h = 0

    def add(self, panel: dict, w: int, h: int) -> None:
        if self.x + w > 24:
            self.newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, table: bool = False) -> dict:
    t = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "range": not instant, "instant": instant}
    if table:
        t["format"] = "table"
    return t


def targets(*pairs: tuple[str, str]) -> list[dict]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def timeseries(title: str, tgts: list[dict], unit: str = "short", *, description: str = "", minmax: tuple | None = None,
               stack: bool = False) -> dict:
    defaults: dict = {"unit": unit, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                                               "spanNulls": False, "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
                      "color": {"mode": "palette-classic"}}
    for key, value in zip(("min", "max"), minmax or ()):
        if value is not None:
            defaults[key] = value
    return {"type": "timeseries", "title": title, "description": description, "datasource": DS, "targets": tgts,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, expr: str, unit: str = "short", *, description: str = "", thresholds: list | None = None) -> dict:
    steps = thresholds or [{"color": "green", "value": None}]
    return {"type": "stat", "title": title, "description": description, "datasource": DS,
            "targets": [target(expr, instant=False)],
            "fieldConfig": {"defaults": {"unit": unit, "color": {"mode": "thresholds"},
                                         "thresholds": {"mode": "absolute", "steps": steps}}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "justifyMode": "auto", "orientation": "auto",
                        "textMode": "auto", "wideLayout": True, "showPercentChange": False}}


def table(title: str, expr: str, *, description: str = "", hide: tuple[str, ...] = ("Time",)) -> dict:
    return {"type": "table", "title": title, "description": description, "datasource": DS,
            "targets": [target(expr, instant=True, table=True)],
            "fieldConfig": {"defaults": {"custom": {"align": "auto", "filterable": True}}, "overrides": []},
            "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
            "transformations": [{"id": "organize", "options": {"excludeByName": {name: True for name in hide}}}]}


def datasource_var() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": ""}


def query_var(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DS, "definition": query,
            "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "sort": 1, "hide": 0, "regex": "",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": []}


def dashboard(uid: str, title: str, description: str, variables: list[dict], layout: Layout) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["aim", "amd-instinct"],
        "editable": True, "graphTooltip": 1, "id": None, "timezone": "browser", "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION, "version": 1, "weekStart": "", "fiscalYearStartMonth": 0, "liveNow": False,
        "time": {"from": "now-1h", "to": "now"}, "timepicker": {},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                                  "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                                  "type": "dashboard"}]},
        "links": [{"title": "AIM dashboards", "type": "dashboards", "tags": ["aim"], "asDropdown": True,
                   "includeVars": True, "keepTime": True}],
        "templating": {"list": [datasource_var(), *variables]},
        "panels": layout.panels,
    }


RI = "$__rate_interval"


def partition_utilization() -> dict:
    n = 'node=~"$node"'
    ng = 'node=~"$node",gpu=~"$gpu"'
    lay = Layout()
    lay.row("Fleet")
    lay.add(stat("Mean partition GFX activity", f"avg(aim_partition_gfx_activity_ratio{{{n}}})", "percentunit",
                 description="Mean over the selected partitions. On partitioned GPUs per-partition activity is derived from per-XCP busy counters (derived=\"true\")."), 5, 4)
    lay.add(stat("Partition VRAM used", f"sum(aim_partition_memory_used_bytes{{{n}}}) / sum(aim_partition_memory_total_bytes{{{n}}})", "percentunit"), 5, 4)
    lay.add(stat("Partitions", f"count(aim_partition_info{{{n}}})"), 4, 4)
    lay.add(stat("Partitions holding a replica", f"count(aim_partition_memory_reserved_bytes{{{n}}} > 0) or vector(0)"), 5, 4)
    lay.add(stat("Derived activity series", f'count(aim_partition_gfx_activity_ratio{{{n},derived="true"}}) or vector(0)',
                 description="Partitions whose activity is derived from the primary partition's per-XCP counters."), 5, 4)
    lay.add(timeseries("GFX activity by node (mean of its partitions)",
                       [target(f"avg by (node) (aim_partition_gfx_activity_ratio{{{n}}})", "{{node}}")], "percentunit", minmax=(0, 1)), 12, 8)
    lay.add(timeseries("VRAM by node", targets(
        (f"sum by (node) (aim_partition_memory_used_bytes{{{n}}})", "{{node}} used"),
        (f"sum by (node) (aim_partition_memory_reserved_bytes{{{n}}})", "{{node}} reserved by replicas"),
        (f"sum by (node) (aim_partition_memory_total_bytes{{{n}}})", "{{node}} total"),
    ), "bytes"), 12, 8)
    lay.add(timeseries("Partitions by compute mode", [target(f"count by (compute_mode) (aim_partition_info{{{n}}})", "{{compute_mode}}")],
                       stack=True), 12, 7)
    lay.add(timeseries("Reserved memory by model", [target(f"sum by (model) (aim_partition_memory_reserved_bytes{{{n}}})", "{{model}}")],
                       "bytes", stack=True), 12, 7)
    lay.row("Per partition")
    lay.add(timeseries("Partition GFX activity", [target(f"aim_partition_gfx_activity_ratio{{{ng}}}",
                                                         "{{node}} gpu{{gpu}} p{{partition}} derived={{derived}}")],
                       "percentunit", minmax=(0, 1)), 12, 9)
    lay.add(timeseries("Partition VRAM used / partition memory",
                       [target(f"aim_partition_memory_used_bytes{{{ng}}} / aim_partition_memory_total_bytes{{{ng}}}",
                               "{{node}} gpu{{gpu}} p{{partition}}")], "percentunit", minmax=(0, 1)), 12, 9)
    lay.add(table("Replicas on partitions (reserved memory)", f"aim_partition_memory_reserved_bytes{{{ng}}}",
                  hide=("Time", "__name__")), 12, 8)
    lay.add(table("GPU compute modes", f"aim_gpu_compute_mode{{{ng}}} == 1", hide=("Time", "__name__", "Value")), 12, 8)
    return dashboard("aim-partition-utilization", "AIM · Partition utilization",
                     "GFX activity and VRAM per partition, fleet-wide and per node. Emulated nodes carry emulated=\"true\".",
                     [query_var("node", "Node", "label_values(aim_node_info, node)"),
                      query_var("gpu", "GPU", 'label_values(aim_gpu_info{node=~"$node"}, gpu)')], lay)


def model_performance() -> dict:
    m = 'model=~"$model"'
    lay = Layout()
    lay.row("Latency and traffic")
    lay.add(timeseries("Request latency p50 / p95 / p99", [
        target(f"histogram_quantile({q}, sum by (le, model) (rate(aim_model_request_duration_seconds_bucket{{{m}}}[{RI}])))",
               f"{{{{model}}}} p{int(q * 100)}", chr(ord("A") + i))
        for i, q in enumerate((0.5, 0.95, 0.99))
    ], "s", description="histogram_quantile over the rate of the bucket counters summed by le and model."), 24, 9)
    lay.add(timeseries("Request rate", [target(f"sum by (model) (rate(aim_model_requests_total{{{m}}}[{RI}]))", "{{model}}")], "reqps"), 8, 8)
    lay.add(timeseries("Error ratio", [target(
        f'sum by (model) (rate(aim_model_requests_total{{{m},result="error"}}[{RI}])) / sum by (model) (rate(aim_model_requests_total{{{m}}}[{RI}]))',
        "{{model}}")], "percentunit", minmax=(0, None)), 8, 8)
    lay.add(timeseries("Generated tokens per second", [target(f"sum by (model) (rate(aim_model_generated_tokens_total{{{m}}}[{RI}]))", "{{model}}")],
                       "short"), 8, 8)
    lay.add(timeseries("Share of requests within the 2 s SLO", [target(
        f'sum by (model) (rate(aim_model_request_duration_seconds_bucket{{{m},le="2.0"}}[{RI}])) / sum by (model) (rate(aim_model_request_duration_seconds_count{{{m}}}[{RI}]))',
        "{{model}}")], "percentunit", minmax=(0, 1)), 12, 8)
    lay.add(timeseries("Mean latency", [target(
        f"sum by (model) (rate(aim_model_request_duration_seconds_sum{{{m}}}[{RI}])) / sum by (model) (rate(aim_model_request_duration_seconds_count{{{m}}}[{RI}]))",
        "{{model}}")], "s"), 12, 8)
    lay.add(stat("Requests in range", f"sum(increase(aim_model_requests_total{{{m}}}[$__range]))"), 6, 4)
    lay.add(stat("Series from emulated replicas", f'count(aim_model_requests_total{{{m},emulated="true"}}) or vector(0)',
                 description="Non-zero: (some of) this traffic is synthetic, from emulated replicas."), 6, 4)
    lay.row("Deployments")
    lay.add(timeseries("Replicas by model and state", [target(
        f'sum by (model, state) (aim_deployment_replicas{{{m},state=~"pending|scheduled|running"}})', "{{model}} {{state}}")]), 12, 8)
    lay.add(timeseries("Memory reserved by model", [target(f"sum by (model) (aim_deployment_memory_reserved_bytes{{{m}}})", "{{model}}")],
                       "bytes", stack=True), 12, 8)
    return dashboard("aim-model-performance", "AIM · Model performance",
                     "Latency percentiles, request rate, error ratio and throughput per model. emulated=\"true\" series are synthetic traffic of emulated replicas.",
                     [query_var("model", "Model", "label_values(aim_model_requests_total, model)")], lay)


def scheduler_operations() -> dict:
    lay = Layout()
    lay.row("Reconfigurations")
    lay.add(stat("Pending (queue depth)", "sum(aim_operations_pending)"), 6, 4)
    lay.add(stat("In progress", "sum(aim_operations_in_progress)"), 6, 4)
    lay.add(stat("Oldest unfinished", "max(aim_operations_oldest_active_age_seconds)", "s",
                 thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 600}, {"color": "red", "value": 1800}]), 6, 4)
    lay.add(stat("Succeeded / finished (24 h)",
                 'sum(increase(aim_operations_finished_total{result="succeeded"}[24h])) / sum(increase(aim_operations_finished_total[24h]))',
                 "percentunit"), 6, 4)
    lay.add(timeseries("Operations started and finished per minute", targets(
        (f"sum by (kind) (rate(aim_operations_started_total[{RI}])) * 60", "started {{kind}}"),
        (f"sum by (kind, result) (rate(aim_operations_finished_total[{RI}])) * 60", "{{result}} {{kind}}"),
    ), "short"), 12, 8)
    lay.add(timeseries("Queue depth and running operations", targets(
        ("sum by (kind) (aim_operations_pending)", "pending {{kind}}"),
        ("sum by (kind, state) (aim_operations_in_progress)", "{{state}} {{kind}}"),
    )), 12, 8)
    lay.add(timeseries("Operation duration p50 / p95 (operations finished in the window)", targets(
        (f"histogram_quantile(0.5, sum by (le, kind) (rate(aim_operation_duration_seconds_bucket[{RI}])))", "p50 {{kind}}"),
        (f"histogram_quantile(0.95, sum by (le, kind) (rate(aim_operation_duration_seconds_bucket[{RI}])))", "p95 {{kind}}"),
    ), "s"), 12, 8)
    lay.add(timeseries("Operation duration p95 and mean (all operations)", targets(
        ("histogram_quantile(0.95, sum by (le, kind) (aim_operation_duration_seconds_bucket))", "p95 {{kind}}"),
        ("sum by (kind) (aim_operation_duration_seconds_sum) / sum by (kind) (aim_operation_duration_seconds_count)", "mean {{kind}}"),
    ), "s", description="The histogram comes from the operation rows, so it also answers for the whole history."), 12, 8)
    lay.add(timeseries("Failed and rolled-back operations (1 h)", [target(
        'sum by (kind, result) (increase(aim_operations_finished_total{result=~"failed|rolled_back"}[1h]))', "{{result}} {{kind}}")]), 12, 8)
    lay.add(timeseries("Oldest unfinished operation", [target("aim_operations_oldest_active_age_seconds", "{{kind}}")], "s"), 12, 8)
    lay.row("Placement")
    lay.add(timeseries("Placement decisions per minute", [target(
        f"sum by (source, result) (rate(aim_placement_decisions_total[{RI}])) * 60", "{{source}} {{result}}")]), 12, 8)
    lay.add(timeseries("Unplaced replicas by reason (in range)", [target(
        "sum by (reason) (increase(aim_placement_failures_total[$__range]))", "{{reason}}")], stack=True), 12, 8)
    lay.add(timeseries("Deployments by state", [target("sum by (state) (aim_deployments)", "{{state}}")], stack=True), 24, 7)
    return dashboard("aim-scheduler-operations", "AIM · Scheduler & operations",
                     "Reconfiguration rates, durations, failures and queue depth; placement decisions and failures by reason.", [], lay)


def node_health() -> dict:
    n = 'node=~"$node"'
    lay = Layout()
    red = [{"color": "green", "value": None}, {"color": "red", "value": 1}]
    # The console's fleet aggregates (a flat number of series whatever the fleet size) beside the
    # agents' own exporters (job aim-agents, one target per node).
    lay.row("Fleet (console aggregates)")
    lay.add(stat("Registered nodes", "sum(aim_fleet_nodes)"), 4, 4)
    lay.add(stat("Nodes without a live agent", "sum(aim_fleet_nodes) - sum(aim_fleet_nodes_agent_up)", thresholds=red,
                 description="Registered in the console, no heartbeat for 30 s (whether or not Prometheus scrapes their agent)."), 4, 4)
    lay.add(stat("Agent exporters down", 'count(up{job="aim-agents"} == 0) or vector(0)', thresholds=red,
                 description="Agent /metrics targets Prometheus cannot scrape (discovered from the console's /metrics/agents)."), 4, 4)
    lay.add(stat("Fleet numbers age", "max(aim_fleet_aggregates_age_seconds)", "s",
                 description="How old the console's cached fleet aggregates are (refreshed every AIM_METRICS_FLEET_REFRESH_S)."), 4, 4)
    lay.add(timeseries("GPUs by model and compute mode", [target("sum by (gpu_model, compute_mode) (aim_fleet_gpus)",
                                                                 "{{gpu_model}} {{compute_mode}}")], stack=True), 8, 4)
    lay.row("Agents and telemetry")
    lay.add(stat("Agents up", f"sum(aim_node_agent_up{{{n}}})"), 4, 4)
    lay.add(stat("Agents down", f"count(aim_node_agent_up{{{n}}} == 0) or vector(0)", thresholds=red), 4, 4)
    lay.add(stat("Nodes without fresh telemetry", f"count(aim_node_telemetry_available{{{n}}} == 0) or vector(0)", thresholds=red), 4, 4)
    lay.add(stat("Unhealthy GPUs", f'sum(aim_gpu_health{{{n},state="unhealthy"}})', thresholds=red), 4, 4)
    lay.add(stat("Unschedulable GPUs", f"count(aim_gpu_schedulable{{{n}}} == 0) or vector(0)",
                 thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]), 4, 4)
    lay.add(stat("Console read Redis", "min(aim_metrics_redis_up)",
                 thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]), 4, 4)
    lay.add(table("Nodes", f"aim_node_info{{{n}}}", hide=("Time", "__name__", "Value")), 12, 7)
    lay.add(table("Node memory mode", f"aim_node_memory_mode{{{n}}} == 1", hide=("Time", "__name__", "Value")), 12, 7)
    lay.add(timeseries("Telemetry snapshot age", [target(f"aim_node_telemetry_snapshot_age_seconds{{{n}}}", "{{node}}")], "s"), 12, 7)
    lay.add(timeseries("Agent heartbeat age", [target(f"aim_node_agent_heartbeat_age_seconds{{{n}}}", "{{node}}")], "s"), 12, 7)
    lay.row("GPUs")
    lay.add(timeseries("Power", [target(f"aim_gpu_power_watts{{{n}}}", "{{node}} gpu{{gpu}}")], "watt"), 12, 8)
    lay.add(timeseries("Temperature", targets(
        (f'aim_gpu_temperature_celsius{{{n},sensor="hotspot"}}', "{{node}} gpu{{gpu}} hotspot"),
        (f'aim_gpu_temperature_celsius{{{n},sensor="memory"}}', "{{node}} gpu{{gpu}} memory"),
    ), "celsius"), 12, 8)
    lay.add(timeseries("GPU VRAM used", [target(f"aim_gpu_memory_used_bytes{{{n}}} / aim_gpu_memory_total_bytes{{{n}}}",
                                                "{{node}} gpu{{gpu}}")], "percentunit", minmax=(0, 1)), 12, 8)
    lay.add(timeseries("GPU GFX activity", [target(f"aim_gpu_gfx_activity_ratio{{{n}}}", "{{node}} gpu{{gpu}}")], "percentunit",
                       minmax=(0, 1)), 12, 8)
    lay.add(timeseries("New uncorrectable ECC errors (1 h)", [target(
        f"increase(aim_gpu_ecc_uncorrectable_errors_total{{{n}}}[1h])", "{{node}} gpu{{gpu}}")]), 12, 8)
    lay.add(table("GPU health", f"aim_gpu_health{{{n}}} == 1", hide=("Time", "__name__", "Value")), 12, 8)
    return dashboard("aim-node-health", "AIM · Node health",
                     "Agents, telemetry freshness, GPU health, power, temperature, VRAM and ECC. Emulated nodes carry emulated=\"true\".",
                     [query_var("node", "Node", "label_values(aim_node_info, node)")], lay)


DASHBOARDS = {
    "aim-partition-utilization.json": partition_utilization,
    "aim-model-performance.json": model_performance,
    "aim-scheduler-operations.json": scheduler_operations,
    "aim-node-health.json": node_health,
}


def render(build) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python deploy/grafana/generate.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The dashboard's longer time ranges (15 min to 24 h), from Prometheus.

Prometheus scrapes this console's ``/metrics`` (observability/metrics.py: per-partition
``aim_partition_gfx_activity_ratio`` and ``aim_partition_memory_{used,total}_bytes``, per-GPU
``aim_gpu_power_watts`` and ``aim_gpu_temperature_celsius``). Each chart is one
``query_range``, aggregated in PromQL like the live frames (partitions/aggregate.py): by node
for the fleet, by GPU for a node, by partition for one GPU, and limited to the
``MAX_SERIES`` busiest with ``topk``; at most ``MAX_POINTS`` steps per range. So the answer's
size is bounded whatever the fleet size. Pure apart from one HTTP GET per chart.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from partitions.aggregate import MAX_SERIES, Scope, short_names

RANGES: dict[str, int] = {"15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600}
MAX_POINTS = 240
TIMEOUT_S = 10.0

Fetch = Callable[[str], dict[str, Any]]


class HistoryError(Exception):
    """Prometheus could not answer (unreachable, or it refused the query)."""


def _selector(scope: Scope) -> str:
    labels = []
    if scope.node is not None:
        labels.append(f'node="{_escape(scope.node)}"')
    if scope.gpu is not None:
        labels.append(f'gpu="{scope.gpu}"')
    return "{" + ",".join(labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "")


def group_labels(scope: Scope) -> list[str]:
    if scope.level == "gpu":
        return ["node", "gpu", "partition"]
    if scope.level == "node":
        return ["node", "gpu"]
    return ["node"]


def queries(scope: Scope, limit: int = MAX_SERIES) -> dict[str, str]:
    """PromQL per chart: activity (%), VRAM (% of total, GiB for single partitions), power (W),
    hotspot temperature (°C); ``topk`` keeps at most ``limit`` series per step."""
    by = ", ".join(group_labels(scope))
    sel = _selector(scope)
    hot = sel[:-1] + ("," if sel != "{}" else "") + 'sensor="hotspot"}'
    if scope.level == "gpu":
        vram = f"sum by ({by}) (aim_partition_memory_used_bytes{sel}) / 2^30"
        power = f"sum by (node, gpu) (aim_gpu_power_watts{sel})"
        temperature = f"max by (node, gpu) (aim_gpu_temperature_celsius{hot})"
    else:
        vram = (f"100 * sum by ({by}) (aim_partition_memory_used_bytes{sel})"
                f" / sum by ({by}) (aim_partition_memory_total_bytes{sel})")
        power = f"sum by ({by}) (aim_gpu_power_watts{sel})"
        temperature = f"max by ({by}) (aim_gpu_temperature_celsius{hot})"
    return {
        "activity": f"topk({limit}, 100 * avg by ({by}) (aim_partition_gfx_activity_ratio{sel}))",
        "vram": f"topk({limit}, {vram})",
        "power": f"topk({limit}, {power})",
        "temperature": f"topk({limit}, {temperature})",
    }


def step_for(range_s: int) -> int:
    return max(1, math.ceil(range_s / MAX_POINTS))


def http_fetch(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            answer = json.load(exc)
        except ValueError:
            raise HistoryError(f"Prometheus answered HTTP {exc.code}") from exc
    except (OSError, ValueError) as exc:
        raise HistoryError(f"Prometheus unreachable: {exc}") from exc
    if answer.get("status") != "success":
        raise HistoryError(f"Prometheus refused the query: {answer.get('error', 'unknown error')}")
    return answer


def _label(metric: dict[str, str], short: dict[str, str]) -> tuple[str, str, str]:
    node = metric.get("node", "")
    key = "|".join(metric[k] for k in ("node", "gpu", "partition") if k in metric)
    label, full = short.get(node, node), node
    if "gpu" in metric:
        label, full = f"{label} g{metric['gpu']}", f"{full} gpu{metric['gpu']}"
    if "partition" in metric:
        label, full = f"{label}/p{metric['partition']}", f"{full}/p{metric['partition']}"
    return key, label, full


def shape(result: list[dict[str, Any]], limit: int = MAX_SERIES) -> list[dict[str, Any]]:
    """Prometheus matrix -> ``[{key, label, full, x: [epoch s], y: [value]}]``, the ``limit``
    series with the highest mean (topk per step may yield more series over a range)."""
    short = short_names(r.get("metric", {}).get("node", "") for r in result)
    series: list[tuple[float, str, dict[str, Any]]] = []
    for r in result:
        points = [(float(t), float(v)) for t, v in r.get("values", []) if v not in ("NaN", "+Inf", "-Inf")]
        key, label, full = _label(r.get("metric", {}), short)
        mean = sum(v for _, v in points) / len(points) if points else -1.0
        series.append((mean, key, {"key": key, "label": label, "full": full,
                                   "x": [t for t, _ in points], "y": [round(v, 2) for _, v in points]}))
    series.sort(key=lambda item: (-item[0], item[1]))
    kept = [s for _, _, s in series[:limit]]
    kept.sort(key=lambda s: str(s["key"]))
    return kept


def history(base_url: str, scope: Scope, range_name: str, *, now: float, fetch: Fetch = http_fetch) -> dict[str, Any]:
    """The charts' series over ``range_name`` (a key of RANGES) ending at ``now``."""
    range_s = RANGES[range_name]
    step = step_for(range_s)
    charts = {}
    for chart, expr in queries(scope).items():
        query = urllib.parse.urlencode({"query": expr, "start": f"{now - range_s:.3f}", "end": f"{now:.3f}", "step": step})
        answer = fetch(f"{base_url}/api/v1/query_range?{query}")
        charts[chart] = shape(answer.get("data", {}).get("result", []))
    return {"range": range_name, "start": now - range_s, "end": now, "step_s": step,
            "level": {"gpu": "partition", "node": "gpu"}.get(scope.level, "node"), "charts": charts}

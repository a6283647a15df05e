"""The dashboard's bounded view of the fleet: aggregates of the latest telemetry snapshots whose
size does not grow with the fleet. Pure Python (no Django).

``build_view`` turns the latest snapshot of every node in view (partitions/telemetry.py's
shape) into one *frame*, sent every tick by partitions/dashboard_consumers.py and accumulated
by the page into its time window:

- ``series``: at most ``max_series`` lines per chart. The fleet view draws one line per node,
  a node view one per GPU, a GPU view one per partition, a deployment view one per partition
  (per GPU, then per node, when it spans more). Beyond ``max_series`` groups the busiest are
  kept and the frame says how many there are (``series.total``). Each line carries mean and
  max GFX activity, VRAM used and total, power (sum over its GPUs) and hotspot temperature
  (max over its GPUs).
- ``deployments``: the same aggregates per deployment (from a partition -> deployment-name
  mapping the caller takes from the workloads port), the ``max_series`` busiest, each linking
  its per-deployment dashboard (``href``) when the caller knows it.
- ``top_busy`` / ``top_idle``: the ``top_n`` partitions with the highest / lowest activity.
- ``heatmap``: one row per partition grouped by node and GPU; with more than ``max_rows``
  partitions the rows become GPUs, then nodes, then consecutive groups of nodes, so a frame
  never holds more than ``max_rows`` rows. The page adds one column per frame.

Labels are short and unambiguous ("n1 g3/p5"): the node's name, shortened only when long and
only where the short form is unique; ``full`` always holds the whole name.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from partitions.telemetry_views import summarize_node

MIB_PER_GIB = 1024
TOP_N = 10
MAX_ROWS = 200
MAX_SERIES = 12
SHORT_NAME_MAX = 14  # node names longer than this are shortened in labels (full name in tables)
EMULATED_NAMES_SHOWN = 10

PartitionKey = tuple[str, int, int]  # (node, gpu index, partition index)


@dataclass(frozen=True)
class Scope:
    """What a view covers: the fleet, one node, one GPU of a node, or one deployment."""

    node: str | None = None
    gpu: int | None = None
    deployment: str | None = None

    @property
    def level(self) -> str:
        if self.deployment is not None:
            return "deployment"
        if self.node is None:
            return "fleet"
        return "node" if self.gpu is None else "gpu"

    @property
    def key(self) -> str:
        return f"{self.level}|{self.node or ''}|{'' if self.gpu is None else self.gpu}|{self.deployment or ''}"


@dataclass(slots=True)
class _Part:
    node: str
    gpu: int
    index: int
    activity: float | None
    derived: bool
    used_mb: float | None
    total_mb: float | None
    deployment: str | None


@dataclass(slots=True)
class _Gpu:
    node: str
    index: int
    power_w: float | None
    temperature_c: float | None
    parts: list[_Part] = field(default_factory=list)


def drill_href(node: str | None = None, gpu: int | None = None) -> str:
    """Query string of the dashboard's drill-down (``?node=…&gpu=…``; ``?`` for the fleet)."""
    query: dict[str, Any] = {}
    if node is not None:
        query["node"] = node
    if gpu is not None:
        query["gpu"] = gpu
    return "?" + urlencode(query)


def short_names(names: Iterable[str], max_len: int = SHORT_NAME_MAX) -> dict[str, str]:
    """Each node name, shortened to ``head…tail`` when longer than ``max_len``; a name whose
    short form another name shares keeps its full form (labels must stay unambiguous)."""
    names = sorted(set(names))
    keep = max(2, (max_len - 1) // 2)
    short = {n: (n if len(n) <= max_len else f"{n[:keep]}…{n[-keep:]}") for n in names}
    taken: dict[str, int] = {}
    for value in short.values():
        taken[value] = taken.get(value, 0) + 1
    full = set(names)
    return {n: (s if taken[s] == 1 and (s == n or s not in full) else n) for n, s in short.items()}


_INFINITIES = (math.inf, -math.inf)


def _num(value: Any) -> float | None:
    # Exact type checks (a bool is no number here), on every reading of the fleet: the hot path.
    kind = type(value)
    if kind is float:
        return None if value != value or value in _INFINITIES else value  # NaN != NaN
    if kind is int:
        return float(value)
    return None


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _gib(mb: float | None) -> float | None:
    return None if mb is None else round(mb / MIB_PER_GIB, 2)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _sum(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _is_mapping(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)  # decoded JSON: the fast exact check first


def flatten(snapshots: Mapping[str, Mapping[str, Any]], deployments: Mapping[PartitionKey, str]) -> list[_Gpu]:
    """The GPUs of these snapshots (nodes by name, then GPU index), each with its partitions."""
    out: list[_Gpu] = []
    owner = deployments.get
    for node in sorted(snapshots):
        snapshot = snapshots[node]
        if not _is_mapping(snapshot):
            continue
        for gpu in snapshot.get("gpus") or ():
            if not _is_mapping(gpu) or type(gpu.get("index")) is not int:
                continue
            index = gpu["index"]
            g = _Gpu(node=node, index=index, power_w=_num(gpu.get("power_w")), temperature_c=_num(gpu.get("temperature_c")))
            parts = g.parts
            for part in gpu.get("partitions") or ():
                if not _is_mapping(part) or type(part.get("index")) is not int:
                    continue
                parts.append(_Part(
                    node, index, part["index"], _num(part.get("gfx_activity")), bool(part.get("derived")),
                    _num(part.get("vram_used_mb")), _num(part.get("vram_total_mb")), owner((node, index, part["index"]))))
            out.append(g)
    return out


def _in_scope(gpus: list[_Gpu], scope: Scope) -> list[_Gpu]:
    if scope.deployment is not None:
        kept = []
        for g in gpus:
            parts = [p for p in g.parts if p.deployment == scope.deployment]
            if parts:
                kept.append(_Gpu(node=g.node, index=g.index, power_w=g.power_w, temperature_c=g.temperature_c, parts=parts))
        return kept
    if scope.node is not None:
        gpus = [g for g in gpus if g.node == scope.node]
    if scope.gpu is not None:
        gpus = [g for g in gpus if g.index == scope.gpu]
    return gpus


def _aggregate(key: str, label: str, full: str, gpus: list[_Gpu], parts: list[_Part], href: str) -> dict[str, Any]:
    used = _sum(p.used_mb for p in parts)
    total = _sum(p.total_mb for p in parts)
    return {
        "key": key, "label": label, "full": full, "href": href,
        "partitions": len(parts),
        "activity_mean": _r(_mean(p.activity for p in parts)),
        "activity_max": _r(_max(p.activity for p in parts)),
        "derived": any(p.derived for p in parts),
        "vram_used_gib": _gib(used),
        "vram_total_gib": _gib(total),
        "vram_pct": _r(100 * used / total) if used is not None and total else None,
        "power_w": _r(_sum(g.power_w for g in gpus)),
        "temperature_c": _r(_max(g.temperature_c for g in gpus)),
    }


def _groups(gpus: list[_Gpu], level: str, short: Mapping[str, str]) -> list[dict[str, Any]]:
    """One aggregate per node, GPU or partition of ``gpus``."""
    if level == "partition":
        return [_aggregate(f"{p.node}|{g.index}|{p.index}", f"{short[p.node]} g{g.index}/p{p.index}",
                           f"{p.node} gpu{g.index}/p{p.index}", [g], [p], drill_href(p.node, g.index))
                for g in gpus for p in g.parts]
    if level == "gpu":
        return [_aggregate(f"{g.node}|{g.index}", f"{short[g.node]} g{g.index}", f"{g.node} gpu{g.index}",
                           [g], g.parts, drill_href(g.node, g.index)) for g in gpus]
    by_node: dict[str, list[_Gpu]] = {}
    for g in gpus:
        by_node.setdefault(g.node, []).append(g)
    return [_aggregate(node, short[node], node, node_gpus, [p for g in node_gpus for p in g.parts], drill_href(node))
            for node, node_gpus in by_node.items()]


def _busiest(items: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The ``limit`` items with the highest mean activity, in their original order."""
    if len(items) <= limit:
        return items
    ranked = sorted(range(len(items)), key=lambda i: (items[i]["activity_mean"] is None, -(items[i]["activity_mean"] or 0.0), i))
    keep = set(ranked[:limit])
    return [item for i, item in enumerate(items) if i in keep]


def _series_level(scope: Scope, gpus: list[_Gpu], max_series: int) -> str:
    if scope.level == "gpu":
        return "partition"
    if scope.level == "node":
        return "gpu"
    if scope.level == "fleet":
        return "node"
    parts = sum(len(g.parts) for g in gpus)
    if parts <= max_series:
        return "partition"
    return "gpu" if len(gpus) <= max_series else "node"


def _heatmap(gpus: list[_Gpu], short: Mapping[str, str], max_rows: int) -> dict[str, Any]:
    parts = sum(len(g.parts) for g in gpus)
    nodes = sorted({g.node for g in gpus})
    if parts <= max_rows:
        level, rows = "partition", _groups(gpus, "partition", short)
    elif len(gpus) <= max_rows:
        level, rows = "gpu", _groups(gpus, "gpu", short)
    elif len(nodes) <= max_rows:
        level, rows = "node", _groups(gpus, "node", short)
    else:
        level, size = "nodes", math.ceil(len(nodes) / max_rows)
        by_node: dict[str, list[_Gpu]] = {}
        for g in gpus:
            by_node.setdefault(g.node, []).append(g)
        rows = []
        for start in range(0, len(nodes), size):
            chunk = nodes[start:start + size]
            chunk_gpus = [g for node in chunk for g in by_node[node]]
            first, last = nodes[start], nodes[min(start + size, len(nodes)) - 1]
            rows.append(_aggregate(f"{first}..{last}", f"{short[first]}…{short[last]}", f"{first} … {last} ({len(chunk)} nodes)",
                                   chunk_gpus, [p for g in chunk_gpus for p in g.parts], drill_href(first)))
    return {
        "level": level,
        "rows_are": {"partition": "partitions", "gpu": "GPUs (mean of their partitions)",
                     "node": "nodes (mean of their partitions)", "nodes": "groups of nodes (mean of their partitions)"}[level],
        "labels": [r["label"] for r in rows],
        "full": [r["full"] for r in rows],
        "hrefs": [r["href"] for r in rows],
        "values": [r["activity_mean"] for r in rows],
    }


def _top(parts: list[_Part], short: Mapping[str, str], n: int, *, busiest: bool) -> list[dict[str, Any]]:
    # The n first of the sorted order, without sorting every partition of the fleet.
    measured = (p for p in parts if p.activity is not None)
    key = (lambda p: (-p.activity, p.node, p.gpu, p.index)) if busiest else (lambda p: (p.activity, p.node, p.gpu, p.index))
    return [{
        "label": f"{short[p.node]} g{p.gpu}/p{p.index}", "full": f"{p.node} gpu{p.gpu}/p{p.index}",
        "node": p.node, "gpu": p.gpu, "partition": p.index, "activity": _r(p.activity), "derived": p.derived,
        "vram_used_gib": _gib(p.used_mb), "vram_total_gib": _gib(p.total_mb), "deployment": p.deployment,
        "href": drill_href(p.node, p.gpu),
    } for p in heapq.nsmallest(n, measured, key=key)]


def build_view(snapshots: Mapping[str, Mapping[str, Any]], *, scope: Scope = Scope(),
               deployments: Mapping[PartitionKey, str] | None = None, deployment_hrefs: Mapping[str, str] | None = None,
               now: float, expected_nodes: int | None = None,
               top_n: int = TOP_N, max_rows: int = MAX_ROWS, max_series: int = MAX_SERIES) -> dict[str, Any]:
    """One bounded frame of the dashboard (see the module docstring). ``snapshots``: the latest
    snapshot per node name; ``expected_nodes``: how many nodes are in view (some may not
    report); ``deployment_hrefs``: a deployment's name -> its dashboard's URL (looked up only
    for the deployments the frame shows, so it may compute them lazily)."""
    gpus = _in_scope(flatten(snapshots, deployments or {}), scope)
    parts = [p for g in gpus for p in g.parts]
    nodes = sorted({g.node for g in gpus})
    short = short_names(nodes)
    level = _series_level(scope, gpus, max_series)
    groups = _groups(gpus, level, short)
    by_deployment: dict[str, list[_Part]] = {}
    for p in parts:
        if p.deployment:
            by_deployment.setdefault(p.deployment, []).append(p)
    hrefs = deployment_hrefs or {}
    # Rank every deployment by its mean activity; aggregate in full only the ones shown.
    ranking = [{"key": name, "activity_mean": _mean(p.activity for p in dparts)} for name, dparts in sorted(by_deployment.items())]
    shown_deployments = [
        _aggregate(row["key"], row["key"], row["key"], [], by_deployment[row["key"]], hrefs.get(row["key"], ""))
        | {"nodes": len({p.node for p in by_deployment[row["key"]]})} for row in _busiest(ranking, max_series)]
    in_view = [snapshots[n] for n in nodes if isinstance(snapshots[n], Mapping)]
    emulated = sorted(n for n in nodes if snapshots[n].get("emulated"))
    timestamps = [t for t in (_num(s.get("ts")) for s in in_view) if t is not None]
    return {
        "ts": now,
        "sample_ts": max(timestamps) if timestamps else None,
        "oldest_sample_ts": min(timestamps) if timestamps else None,
        "scope": {"level": scope.level, "node": scope.node, "gpu": scope.gpu, "deployment": scope.deployment},
        "counts": {"nodes": len(nodes), "expected_nodes": expected_nodes if expected_nodes is not None else len(nodes),
                   "gpus": len(gpus), "partitions": len(parts)},
        "fleet": _aggregate("all", "all", "all in view", gpus, parts, ""),
        "series": {"level": level, "total": len(groups), "items": _busiest(groups, max_series)},
        "deployments": {"total": len(ranking), "items": shown_deployments, "ranked_by": "activity"},
        "top_busy": _top(parts, short, top_n, busiest=True),
        "top_idle": _top(parts, short, top_n, busiest=False),
        "heatmap": _heatmap(gpus, short, max_rows),
        "emulated": {"count": len(emulated), "names": emulated[:EMULATED_NAMES_SHOWN]},
    }


# --- the fleet view from the nodes' summaries ------------------------------------------------
# On a large fleet the fleet view never reads every partition's sample: each agent stores its
# node's summary next to its snapshot (``node_summary``), and the frame is built from those
# (per node and GPU) plus the samples of the few nodes whose partitions it names (the top-N,
# the deployments shown): ``build_fleet_view``. Same frame shape as ``build_view``.

def node_summary(snapshot: Mapping[str, Any], *, top_n: int = TOP_N) -> dict[str, Any]:
    """What an agent stores next to its snapshot for the fleet-wide pages: the node's and
    its GPUs' figures of the live fleet view (partitions/telemetry_views.py
    ``summarize_node``, without its ``top`` list), the exact activity sum and how many
    partitions report one (``activity_sum``, ``measured``: means over many nodes stay
    exact), and as flat ``[gpu, partition, activity, ...]`` triples: its ``top_n`` busiest
    (``busiest``) and idlest (``idlest``) partitions and every partition's GFX activity
    (``activity``, % or None; the overview's idle count). Flat lists of numbers: a fleet's
    summaries decode into a few objects per node, not one per partition."""
    summary = summarize_node(snapshot, top_n=0)
    del summary["top"]
    node = summary["node"]
    gpus = flatten({node: snapshot}, {}) if node else []
    every = [p for g in gpus for p in g.parts]
    measured = [p for p in every if p.activity is not None]

    def flat(parts: Iterable[_Part]) -> list[Any]:
        return [v for p in parts for v in (p.gpu, p.index, p.activity)]

    summary.update(
        activity_sum=sum(p.activity for p in measured if p.activity is not None) if measured else None,
        measured=len(measured),
        busiest=flat(heapq.nsmallest(top_n, measured, key=lambda p: (-(p.activity or 0.0), p.gpu, p.index))),
        idlest=flat(heapq.nsmallest(top_n, measured, key=lambda p: (p.activity or 0.0, p.gpu, p.index))),
        activity=flat(every),
    )
    return summary


def _plus(a: float | None, b: float | None) -> float | None:
    # None is "not reported": it adds nothing, and two of them stay None (as ``_sum``).
    return b if a is None else a if b is None else a + b


def _higher(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None or a >= b else b


@dataclass(slots=True)
class _Sum:
    """Additive aggregates of some partitions and their GPUs (merged over nodes)."""

    partitions: int = 0
    activity_sum: float = 0.0
    measured: int = 0
    activity_max: float | None = None
    derived: bool = False
    used_mb: float | None = None
    total_mb: float | None = None
    power_w: float | None = None
    temperature_c: float | None = None

    def add(self, other: _Sum) -> None:
        self.partitions += other.partitions
        self.activity_sum += other.activity_sum
        self.measured += other.measured
        self.activity_max = _higher(self.activity_max, other.activity_max)
        self.derived = self.derived or other.derived
        self.used_mb = _plus(self.used_mb, other.used_mb)
        self.total_mb = _plus(self.total_mb, other.total_mb)
        self.power_w = _plus(self.power_w, other.power_w)
        self.temperature_c = _higher(self.temperature_c, other.temperature_c)

    def row(self, key: str, label: str, full: str, href: str) -> dict[str, Any]:
        """The same row ``_aggregate`` makes from the partitions themselves."""
        used, total = self.used_mb, self.total_mb
        return {
            "key": key, "label": label, "full": full, "href": href, "partitions": self.partitions,
            "activity_mean": _r(self.activity_sum / self.measured) if self.measured else None,
            "activity_max": _r(self.activity_max), "derived": self.derived,
            "vram_used_gib": _gib(used), "vram_total_gib": _gib(total),
            "vram_pct": _r(100 * used / total) if used is not None and total else None,
            "power_w": _r(self.power_w), "temperature_c": _r(self.temperature_c),
        }


def _node_sum(summary: Mapping[str, Any]) -> _Sum:
    partitions = int(_num(summary.get("partitions")) or 0)
    mean, activity_sum, measured = _num(summary.get("activity_mean")), _num(summary.get("activity_sum")), summary.get("measured")
    if activity_sum is None or type(measured) is not int:  # a summary without them: its rounded mean
        activity_sum, measured = (mean * partitions, partitions) if mean is not None else (0.0, 0)
    return _Sum(partitions=partitions, activity_sum=activity_sum, measured=measured,
                activity_max=_num(summary.get("activity_max")), derived=bool(summary.get("derived")),
                used_mb=_num(summary.get("vram_used_mb")), total_mb=_num(summary.get("vram_total_mb")),
                power_w=_num(summary.get("power_w")), temperature_c=_num(summary.get("temperature_c")))


def summary_partitions(summaries: Mapping[str, Mapping[str, Any]]) -> int:
    """How many partitions these summaries cover."""
    return sum(int(_num(s.get("partitions")) or 0) for s in summaries.values() if _is_mapping(s))


def top_nodes(summaries: Mapping[str, Mapping[str, Any]], n: int = TOP_N) -> set[str]:
    """The nodes holding the fleet's ``n`` busiest and ``n`` idlest partitions (each node's
    summary names its own ``n`` of each, so the fleet's are among them; ties go to the
    first by name, as in ``build_view``): the only samples the fleet view's top lists need."""
    found: set[str] = set()
    for key, sign in (("busiest", -1.0), ("idlest", 1.0)):
        ranked: dict[str, list[tuple[float, str, int, int]]] = {}
        for name, s in summaries.items():
            if _is_mapping(s):
                rows = [(sign * a, name, gpu, part) for gpu, part, a in triples(s.get(key)) if a is not None]
                if rows:
                    ranked[name] = sorted(rows)
        # A node holding one of the fleet's n first has its own first among the fleet's n
        # first too, so only the nodes whose first ranks among the n best firsts can.
        contenders = heapq.nsmallest(n, (rows[0] for rows in ranked.values()))
        found |= {row[1] for row in heapq.nsmallest(n, (r for c in contenders for r in ranked[c[1]]))}
    return found


def triples(flat: Any) -> list[tuple[int, int, float | None]]:
    """``node_summary``'s flat ``[gpu, partition, activity, ...]`` as (gpu, partition, % or
    None) tuples; malformed entries are skipped (a non-list: none)."""
    if type(flat) is not list:
        return []
    out = []
    for i in range(0, len(flat) - 2, 3):
        gpu, part, a = flat[i], flat[i + 1], flat[i + 2]
        if type(gpu) is int and type(part) is int:
            out.append((gpu, part, _num(a)))
    return out


def build_fleet_view(summaries: Mapping[str, Mapping[str, Any]], *, detail: Mapping[str, Mapping[str, Any]],
                     deployments: Mapping[PartitionKey, str], shown_deployments: Iterable[str], deployments_total: int,
                     deployment_hrefs: Mapping[str, str] | None = None, now: float, expected_nodes: int | None = None,
                     top_n: int = TOP_N, max_rows: int = MAX_ROWS, max_series: int = MAX_SERIES) -> dict[str, Any]:
    """The fleet's frame (``build_view``'s shape, scope: the fleet) from every node's summary
    (``node_summary``) and the snapshots of a few nodes (``detail``: at least those of
    ``top_nodes`` and of the deployments shown), never every partition's sample.

    Counts, the fleet's figures, the per-node series and the heatmap (GPUs, nodes or groups
    of nodes; a fleet of at most ``max_rows`` partitions takes ``build_view``) come from the
    summaries; the top lists and the deployments from ``detail`` with ``deployments`` (the
    owners of its partitions). ``shown_deployments``: the ones to show (the caller picks the
    ``max_series`` holding the most partitions, of ``deployments_total``)."""
    valid = {n: s for n, s in summaries.items() if _is_mapping(s) and s.get("gpus")}
    nodes = sorted(valid)
    short = short_names(nodes)
    sums = {n: _node_sum(valid[n]) for n in nodes}
    fleet = _Sum()
    for s in sums.values():
        fleet.add(s)
    # Rank the nodes by their mean; make the rows of only those shown (drill_href is not free).
    means = {n: (sums[n].activity_sum / sums[n].measured if sums[n].measured else None) for n in nodes}
    ranked = sorted(range(len(nodes)), key=lambda i: (means[nodes[i]] is None, -(_r(means[nodes[i]]) or 0.0), i))
    series = [sums[n].row(n, short[n], n, drill_href(n)) for n in (nodes[i] for i in sorted(ranked[:max_series]))]
    gpu_rows = [(n, row) for n in nodes for row in valid[n]["gpus"] if isinstance(row, list) and len(row) >= 4]

    if len(gpu_rows) <= max_rows:
        level = "gpu"
        labels = [f"{short[n]} g{row[0]}" for n, row in gpu_rows]
        full = [f"{n} gpu{row[0]}" for n, row in gpu_rows]
        hrefs = [drill_href(n, row[0]) for n, row in gpu_rows]
        values = [_r(_num(row[2])) for _, row in gpu_rows]
    elif len(nodes) <= max_rows:
        level = "node"
        labels, full, hrefs = [short[n] for n in nodes], list(nodes), [drill_href(n) for n in nodes]
        values = [_r(means[n]) for n in nodes]
    else:
        level, size = "nodes", math.ceil(len(nodes) / max_rows)
        labels, full, hrefs, values = [], [], [], []
        for start in range(0, len(nodes), size):
            chunk = nodes[start:start + size]
            total = _Sum()
            for n in chunk:
                total.add(sums[n])
            first, last = chunk[0], chunk[-1]
            labels.append(f"{short[first]}…{short[last]}")
            full.append(f"{first} … {last} ({len(chunk)} nodes)")
            hrefs.append(drill_href(first))
            values.append(total.row("", "", "", "")["activity_mean"])

    detail_gpus = flatten({n: detail[n] for n in detail if n in valid}, deployments)
    parts = [p for g in detail_gpus for p in g.parts]
    detail_short = {**short_names(detail), **short}
    hrefs_of = deployment_hrefs or {}
    shown = []
    for name in sorted(set(shown_deployments)):
        dparts = [p for p in parts if p.deployment == name]
        shown.append(_aggregate(name, name, name, [], dparts, hrefs_of.get(name, "")) | {"nodes": len({p.node for p in dparts})})
    timestamps = [t for t in (_num(valid[n].get("ts")) for n in nodes) if t is not None]
    emulated = [n for n in nodes if valid[n].get("emulated")]
    return {
        "ts": now,
        "sample_ts": max(timestamps) if timestamps else None,
        "oldest_sample_ts": min(timestamps) if timestamps else None,
        "scope": {"level": "fleet", "node": None, "gpu": None, "deployment": None},
        "counts": {"nodes": len(nodes), "expected_nodes": expected_nodes if expected_nodes is not None else len(nodes),
                   "gpus": sum(len(valid[n]["gpus"]) for n in nodes), "partitions": fleet.partitions},
        "fleet": fleet.row("all", "all", "all in view", ""),
        "series": {"level": "node", "total": len(nodes), "items": series},
        "deployments": {"total": deployments_total, "items": shown, "ranked_by": "partitions"},
        "top_busy": _top(parts, detail_short, top_n, busiest=True),
        "top_idle": _top(parts, detail_short, top_n, busiest=False),
        "heatmap": {
            "level": level,
            "rows_are": {"gpu": "GPUs (mean of their partitions)", "node": "nodes (mean of their partitions)",
                         "nodes": "groups of nodes (mean of their partitions)"}[level],
            "labels": labels, "full": full, "hrefs": hrefs, "values": values,
        },
        "emulated": {"count": len(emulated), "names": emulated[:EMULATED_NAMES_SHOWN]},
    }

"""What each live telemetry view (``/ws/telemetry/``) shows, from node snapshots. Pure Python.

A client subscribes to *targets*, each one of the views below (``parse_target``):

- **fleet** (``{}``): server-side aggregates, never every partition. Each agent summarizes
  its own snapshot once per sample (``summarize_node``: per node and per GPU, plus the node's
  ``top_n`` busiest partitions) and publishes that summary; the web process merges the latest
  summary of every node into one view (``fleet_view``) at most ``FLEET_INTERVAL_S`` apart.
  The fleet's ``top_n`` busiest partitions are among the nodes' own ``top_n``, so merging the
  summaries gives the same top list as ranking every partition.
- **node** (``{"node": NAME}``): the node's whole snapshot (partitions/telemetry.py's shape).
- **gpu** (``{"node": NAME, "gpu": INDEX}``): one GPU of it (``gpu_view``).
- **deployment** (``{"deployment": NAME}``): the partitions a deployment occupies, per node
  (``deployment_view``).

Sizes: a fleet view grows with the number of nodes and GPUs only (one row per GPU), a node
view with its partitions; no view grows with the number of clients.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TOP_N = 10
FLEET_INTERVAL_S = 0.5  # the fleet view: at most 2 messages per second per client
# One row per GPU in the fleet view: these columns, in this order (the page reads them by name).
GPU_COLUMNS = ("index", "partitions", "activity_mean", "activity_max", "derived", "vram_used_mb", "vram_total_mb",
               "power_w", "temperature_c")
TARGET_KEYS = frozenset({"node", "gpu", "deployment"})


class InvalidTarget(ValueError):
    """A target no view answers to (malformed: wrong keys or types)."""


@dataclass(frozen=True)
class Target:
    """One view a client subscribed to: ``kind`` is "fleet", "node", "gpu" or "deployment"."""

    kind: str
    node: str | None = None
    gpu: int | None = None
    deployment: str | None = None

    def key(self) -> str:
        """The coalescing key of this target's messages (one pending message per key)."""
        return f"{self.kind}|{self.node or ''}|{'' if self.gpu is None else self.gpu}|{self.deployment or ''}"


FLEET = Target("fleet")


def parse_target(raw: Mapping[str, Any]) -> Target:
    """The target a query string (values are strings) or a subscribe message (a JSON object)
    names: none of ``node``/``gpu``/``deployment`` is the fleet; ``node`` a node; ``node`` and
    ``gpu`` one GPU; ``deployment`` a deployment. Raises InvalidTarget otherwise."""
    if not isinstance(raw, Mapping):
        raise InvalidTarget("a target is an object with node, gpu or deployment")
    unknown = set(raw) - TARGET_KEYS
    if unknown:
        raise InvalidTarget(f"unknown target keys: {', '.join(sorted(map(str, unknown)))}")
    node, gpu, deployment = raw.get("node"), raw.get("gpu"), raw.get("deployment")
    for name, value in (("node", node), ("deployment", deployment)):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 255):
            raise InvalidTarget(f"{name} must be a non-empty name")
    if deployment is not None:
        if node is not None or gpu is not None:
            raise InvalidTarget("a deployment target takes no node or gpu")
        return Target("deployment", deployment=deployment)
    if gpu is not None:
        if isinstance(gpu, str) and gpu.isdigit():
            gpu = int(gpu)
        if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
            raise InvalidTarget("gpu must be a GPU index (a non-negative integer)")
        if node is None:
            raise InvalidTarget("a gpu target needs its node")
        return Target("gpu", node=node, gpu=gpu)
    if node is not None:
        return Target("node", node=node)
    return FLEET


def parse_targets(raw: Any, *, max_targets: int) -> list[Target]:
    """The targets of a subscribe message's ``targets`` list (duplicates once, order kept;
    empty: watch nothing for now)."""
    if not isinstance(raw, list):
        raise InvalidTarget("targets must be a list")
    if len(raw) > max_targets:
        raise InvalidTarget(f"at most {max_targets} targets per connection")
    return list(dict.fromkeys(parse_target(item) for item in raw))


# --- numbers ---------------------------------------------------------------------------------

def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if value != value or value in (float("inf"), float("-inf")) else float(value)


def _present(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _mean(values: Iterable[float | None]) -> float | None:
    present = _present(values)
    return round(sum(present) / len(present), 1) if present else None


def _max(values: Iterable[float | None]) -> float | None:
    present = _present(values)
    return round(max(present), 1) if present else None


def _sum(values: Iterable[float | None]) -> float | None:
    present = _present(values)
    return round(sum(present), 1) if present else None


def _mib(values: Iterable[float | None]) -> int | None:
    present = _present(values)
    return round(sum(present)) if present else None


def _gpus(snapshot: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [g for g in snapshot.get("gpus") or () if isinstance(g, Mapping) and isinstance(g.get("index"), int)]


def _parts(gpu: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [p for p in gpu.get("partitions") or () if isinstance(p, Mapping) and isinstance(p.get("index"), int)]


def _ranked(samples: Iterable[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` busiest partition samples (highest activity first; ties by place)."""
    measured = [s for s in samples if s["activity"] is not None]
    measured.sort(key=lambda s: (-s["activity"], s["node"], s["gpu"], s["partition"]))
    return measured[:n]


# --- the fleet view --------------------------------------------------------------------------

def summarize_node(snapshot: Mapping[str, Any], *, top_n: int = TOP_N) -> dict[str, Any]:
    """One node's share of the fleet view, from its snapshot: mean and max GFX activity (%),
    VRAM used and total (MiB, sums), power (W, sum over GPUs) and hottest temperature (°C),
    for the node and per GPU (``gpus``: rows in ``GPU_COLUMNS`` order), and the node's
    ``top_n`` busiest partitions (``top``). ``derived``: some activity is derived from the
    primary partition's per-XCP busy (partitions/telemetry.py)."""
    node = str(snapshot.get("node") or "")
    rows: list[list[Any]] = []
    every: list[Mapping[str, Any]] = []
    samples: list[dict[str, Any]] = []
    powers: list[float | None] = []
    temperatures: list[float | None] = []
    for gpu in _gpus(snapshot):
        parts = _parts(gpu)
        every.extend(parts)
        power, temperature = _num(gpu.get("power_w")), _num(gpu.get("temperature_c"))
        powers.append(power)
        temperatures.append(temperature)
        activities = [_num(p.get("gfx_activity")) for p in parts]
        rows.append([gpu["index"], len(parts), _mean(activities), _max(activities), any(bool(p.get("derived")) for p in parts),
                     _mib(_num(p.get("vram_used_mb")) for p in parts), _mib(_num(p.get("vram_total_mb")) for p in parts),
                     power, temperature])
        samples.extend({"node": node, "gpu": gpu["index"], "partition": p["index"],
                        "logical_index": p.get("logical_index"), "activity": _num(p.get("gfx_activity")),
                        "derived": bool(p.get("derived"))} for p in parts)
    activities = [_num(p.get("gfx_activity")) for p in every]
    return {
        "node": node,
        "ts": _num(snapshot.get("ts")),
        "interval_s": _num(snapshot.get("interval_s")),
        "emulated": bool(snapshot.get("emulated")),
        "partitions": len(every),
        "activity_mean": _mean(activities),
        "activity_max": _max(activities),
        "derived": any(bool(p.get("derived")) for p in every),
        "vram_used_mb": _mib(_num(p.get("vram_used_mb")) for p in every),
        "vram_total_mb": _mib(_num(p.get("vram_total_mb")) for p in every),
        "power_w": _sum(powers),
        "temperature_c": _max(temperatures),
        "gpus": rows,
        "top": _ranked(samples, top_n),
    }


def fleet_view(summaries: Mapping[str, Mapping[str, Any]], *, now: float, max_age_s: float,
               top_n: int = TOP_N) -> dict[str, Any]:
    """The fleet view: every node's summary (without its own top list), the fleet's totals
    and its ``top_n`` busiest partitions. A summary older than ``max_age_s`` (its agent
    stopped reporting) is left out of the figures and named in ``stale``; ``emulated``
    counts the reporting nodes whose figures come from emulated hardware."""
    fresh: dict[str, Mapping[str, Any]] = {}
    stale: list[str] = []
    for name in sorted(summaries):
        summary = summaries[name]
        ts = _num(summary.get("ts"))
        if ts is None or now - ts > max_age_s:
            stale.append(name)
        else:
            fresh[name] = summary
    nodes = {name: {k: v for k, v in s.items() if k != "top"} for name, s in fresh.items()}
    partitions = sum(int(s.get("partitions") or 0) for s in fresh.values())
    weighted = _present(
        None if s.get("activity_mean") is None else float(s["activity_mean"]) * int(s.get("partitions") or 0)
        for s in fresh.values())
    measured = sum(int(s.get("partitions") or 0) for s in fresh.values() if s.get("activity_mean") is not None)
    timestamps = _present(_num(s.get("ts")) for s in fresh.values())
    return {
        "type": "telemetry.fleet",
        "ts": now,
        "sample_ts": max(timestamps) if timestamps else None,
        "oldest_sample_ts": min(timestamps) if timestamps else None,
        "counts": {"nodes": len(fresh), "stale": len(stale), "partitions": partitions,
                   "gpus": sum(len(s.get("gpus") or ()) for s in fresh.values())},
        "fleet": {
            "activity_mean": round(sum(weighted) / measured, 1) if measured else None,
            "activity_max": _max(_num(s.get("activity_max")) for s in fresh.values()),
            "vram_used_mb": _mib(_num(s.get("vram_used_mb")) for s in fresh.values()),
            "vram_total_mb": _mib(_num(s.get("vram_total_mb")) for s in fresh.values()),
            "power_w": _sum(_num(s.get("power_w")) for s in fresh.values()),
            "temperature_c": _max(_num(s.get("temperature_c")) for s in fresh.values()),
        },
        "emulated": sum(1 for s in fresh.values() if s.get("emulated")),
        "gpu_columns": list(GPU_COLUMNS),
        "nodes": nodes,
        "stale": stale,
        "top": _ranked((dict(t) for s in fresh.values() for t in s.get("top") or ()), top_n),
    }


# --- the GPU and deployment views ------------------------------------------------------------

def _header(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    return {"node": snapshot.get("node"), "ts": snapshot.get("ts"), "interval_s": snapshot.get("interval_s"),
            "emulated": bool(snapshot.get("emulated"))}


def gpu_view(snapshot: Mapping[str, Any], gpu: int) -> dict[str, Any] | None:
    """One GPU's entry of a node snapshot, with its partitions (None: the node reports no
    such GPU in this sample)."""
    for entry in _gpus(snapshot):
        if entry["index"] == gpu:
            return {"type": "telemetry.gpu", **_header(snapshot), "gpu": dict(entry)}
    return None


def deployment_view(snapshot: Mapping[str, Any], deployment: str, held: Collection[tuple[int, int]]) -> dict[str, Any] | None:
    """The partitions of a node snapshot that ``deployment`` occupies (``held``: its
    (gpu index, partition index) pairs on this node), each with its GPU's power and
    temperature (None: it holds none reported here)."""
    parts = []
    for entry in _gpus(snapshot):
        for part in _parts(entry):
            if (entry["index"], part["index"]) in held:
                parts.append({**part, "gpu": entry["index"], "gpu_power_w": entry.get("power_w"),
                              "gpu_temperature_c": entry.get("temperature_c")})
    if not parts:
        return None
    return {"type": "telemetry.deployment", "deployment": deployment, **_header(snapshot), "partitions": parts}

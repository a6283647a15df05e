"""Inventory from captured amd-smi outputs (air-gapped nodes, support bundles). Pure Python.

The caller hands over raw texts in any order; each is recognised as the output of ``list``,
``static``, ``partition``, ``metric`` or ``version`` (any supported ROCm version, JSON, CSV
or the human form), then parsed by the same parsers the live backend uses.

Captures are untrusted: each is bounded in size and JSON nesting before anything parses it
(the standard JSON decoder recurses once per level; 100,000 ``[`` would be a RecursionError).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable

from aimconsole.jsonbounds import deeper_than
from partitions.backends.errors import MissingGroups, ParseError
from partitions.backends.parsing import build_inventory
from partitions.backends.parsing.common import strip_group_warnings
from partitions.backends.types import NodeInventory

# The deepest amd-smi JSON (metric: gpu_data / device / usage / gfx_busy_inst / xcp / value)
# nests 6 levels; 32 leaves room for any version and refuses hostile input.
MAX_CAPTURE_DEPTH = 32
MAX_CAPTURE_BYTES = 20_000_000  # per output, as the import API's field limit

KINDS = ("list", "static", "partition", "metric", "version")

_PARTITION_KEYS = {"current_partition", "memory_partition", "partition_profiles", "partition_resources"}
_METRIC_KEYS = {"usage", "mem_usage", "power", "temperature", "ecc", "clock", "pcie", "energy"}
_STATIC_KEYS = {"asic", "vram", "bus", "vbios", "ifwi", "board", "driver", "limit", "ras", "numa"}
_LIST_KEYS = {"bdf", "uuid", "gpu_bdf", "gpu_uuid", "kfd_id", "hip_uuid", "render"}


def _first_json(text: str) -> object | None:
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        doc, _ = json.JSONDecoder().raw_decode(text[start:])
    except (json.JSONDecodeError, RecursionError):
        return None
    return doc


def check_bounds(text: str, name: str = "<input>") -> None:
    """ParseError naming ``name`` when ``text`` is larger than MAX_CAPTURE_BYTES or nests JSON
    deeper than MAX_CAPTURE_DEPTH (checked without recursion, before any parsing)."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_CAPTURE_BYTES:
        raise ParseError(f"{name}: {size} bytes is larger than the limit of {MAX_CAPTURE_BYTES} bytes per output")
    if deeper_than(text, MAX_CAPTURE_DEPTH):
        raise ParseError(f"{name}: JSON nested deeper than {MAX_CAPTURE_DEPTH} levels; not an amd-smi output")


def _first_row_keys(doc: object) -> set[str]:
    if isinstance(doc, dict):
        if _PARTITION_KEYS & set(doc):
            return set(doc)
        doc = doc.get("gpu_data", [])
    if isinstance(doc, list):
        for row in doc:
            if isinstance(row, dict):
                return set(row)
    return set()


def classify_capture(text: str, name: str = "<input>") -> str:
    """Which amd-smi command printed ``text``; ParseError naming ``name`` if none fits."""
    text, _groups = strip_group_warnings(text)
    head = text.lstrip()[:4000]
    if not head:
        raise ParseError(f"{name}: empty file", output=text[:200])
    if "AMDSMI Tool" in head:
        return "version"
    doc = _first_json(head if len(text) < 4000 else text)
    keys = _first_row_keys(doc) if doc is not None else set()
    if keys & _PARTITION_KEYS:
        return "partition"
    if keys & _METRIC_KEYS:
        return "metric"
    if keys & _STATIC_KEYS or "partition" in keys:
        return "static"
    if keys & _LIST_KEYS:
        return "list"
    upper = head.upper()
    # CSV headers and the human form ("GPU: 0" blocks with upper-case section names).
    if "CURRENT_PARTITION" in upper or "MEMORY_PARTITION:" in upper or "GPU_ID" in upper and "NPS" in upper:
        return "partition"
    if any(marker in upper for marker in ("USAGE:", "MEM_USAGE", "GFX_ACTIVITY", "POWER:", "SOCKET_POWER")):
        return "metric"
    if any(marker in upper for marker in ("ASIC:", "MARKET_NAME", "VRAM:", "COMPUTE_PARTITION:", "ACCELERATOR_PARTITION:")):
        return "static"
    if "GPU_BDF" in upper or "BDF:" in upper:
        return "list"
    raise ParseError(
        f"{name}: not recognised as the output of amd-smi list, static, partition, metric or version",
        output=text[:200],
    )


def parse_captures(files: Iterable[tuple[str, str]], *, emulated: bool = False) -> NodeInventory:
    """Inventory from (name, text) pairs. Each command may appear once; ParseError otherwise."""
    by_kind: dict[str, tuple[str, str]] = {}
    warnings: list[str] = []
    for name, text in files:
        check_bounds(text, name)
        _stripped, groups = strip_group_warnings(text)
        if groups is not None:
            warnings.append(f"{name}: amd-smi ran as a user missing the {groups} groups (BDF/UUID not shown): "
                            f"{MissingGroups.hint}")
        kind = classify_capture(text, name)
        if kind in by_kind:
            raise ParseError(f"{name} and {by_kind[kind][0]} are both outputs of amd-smi {kind}; give one of each")
        by_kind[kind] = (name, text)
    if not by_kind.keys() & {"list", "static", "partition", "metric"}:
        raise ParseError("no device output given: pass the output of amd-smi list, static, partition or metric")
    try:
        inventory = build_inventory(
            list_out=by_kind.get("list", (None, None))[1],
            static_out=by_kind.get("static", (None, None))[1],
            partition_out=by_kind.get("partition", (None, None))[1],
            metric_out=by_kind.get("metric", (None, None))[1],
            version_out=by_kind.get("version", (None, None))[1],
            emulated=emulated,
        )
    except ParseError as exc:
        names = ", ".join(name for name, _ in by_kind.values())
        raise ParseError(f"{exc.message} (files: {names})", command=exc.command, output=exc.output) from exc
    except RecursionError:  # bounded above; a last guard for text the depth count misread
        raise ParseError("JSON nested deeper than the parser can read; not an amd-smi output") from None
    return dataclasses.replace(inventory, warnings=inventory.warnings + tuple(warnings)) if warnings else inventory

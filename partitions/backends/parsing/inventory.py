"""Combine the read commands into one :class:`NodeInventory` (logical devices grouped into
physical GPUs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from partitions.backends.parsing.common import DeviceRecord, fail
from partitions.backends.parsing.outputs import parse_list, parse_metrics, parse_partition, parse_static
from partitions.backends.types import (
    GpuInfo,
    LogicalDevice,
    Metrics,
    NodeInventory,
    PartitionInfo,
    PartitionState,
    StaticInfo,
    ToolVersion,
)
from partitions.backends.versions import parse_version
from partitions.geometry import GeometryError, get_spec

_FIXED = {"SPX": 1, "DPX": 2, "TPX": 3, "QPX": 4}


_T = TypeVar("_T")
_D = TypeVar("_D", bound=DeviceRecord)


def gpu_model_for(market_name: str | None) -> str | None:
    """Geometry key for an amd-smi market name ("AMD Instinct MI300X" -> "MI300X"); None
    when the name is not a known model (the market name itself stays visible)."""
    if not market_name:
        return None
    try:
        return get_spec(market_name).model
    except GeometryError:
        return None


def _parsed(value: str | Sequence[_T] | None, parser: Callable[[str], tuple[_T, ...]]) -> tuple[_T, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return parser(value)
    return tuple(value)


def _by_index(items: Iterable[_D], kind: str) -> dict[int, _D]:
    return {i.logical_index: i for i in items}


def build_inventory(list_out: str | Sequence[LogicalDevice] | None = None,
                    static_out: str | Sequence[StaticInfo] | None = None,
                    partition_out: str | Sequence[PartitionState] | None = None,
                    metric_out: str | Sequence[Metrics] | None = None,
                    version_out: str | ToolVersion | None = None,
                    *, emulated: bool = False) -> NodeInventory:
    """Group the logical devices of the given outputs (texts, or what the parse_* functions
    returned) into physical GPUs.

    GPUs are keyed by PCI domain:bus:device; the function digit is the partition id. Without
    BDFs (no ``list`` output, or N/A), consecutive logical devices are grouped using the
    partition ids / compute modes of ``partition``/``static``. Fields the outputs do not
    give are None. Outputs that disagree (a device missing from ``list``, BDF function vs
    partition id) raise ParseError: the layout changed between the commands."""
    devices = _by_index(_parsed(list_out, parse_list), "list")
    statics = _by_index(_parsed(static_out, parse_static), "static")
    states = _by_index(_parsed(partition_out, parse_partition), "partition")
    metrics = _by_index(_parsed(metric_out, parse_metrics), "metric")
    if isinstance(version_out, str):
        version: ToolVersion | None = parse_version(version_out)
    else:
        version = version_out

    indices = sorted(set(devices) | set(statics) | set(states) | set(metrics))
    if devices:
        extra = sorted(set(indices) - set(devices))
        if extra:
            raise fail("list", f"logical devices {extra} are in other outputs but not in list "
                               "(partition layout changed between commands?)", sorted(devices))

    def pid_of(idx: int) -> int | None:
        sources: tuple[PartitionState | StaticInfo | LogicalDevice | None, ...] = (
            states.get(idx), statics.get(idx), devices.get(idx))
        for src in sources:
            if src is not None and src.partition_id is not None:
                return src.partition_id
        return None

    def compute_of(idx: int) -> str | None:
        sources: tuple[PartitionState | StaticInfo | None, ...] = (states.get(idx), statics.get(idx))
        for src in sources:
            if src is not None and src.compute_mode:
                return src.compute_mode
        return None

    # --- group logical devices into physical GPUs -------------------------------------------
    groups: list[list[tuple[int, int]]] = []  # [(partition id, logical index)]
    with_bdf = [i for i in indices if devices.get(i) and devices[i].bdf]
    if with_bdf and len(with_bdf) == len(indices):
        by_key: dict[str, list[tuple[int, int]]] = {}
        for i in indices:
            bdf = devices[i].bdf
            assert bdf is not None
            function = int(bdf[-1])
            for other in (devices[i].partition_id, states.get(i) and states[i].partition_id,
                          statics.get(i) and statics[i].partition_id):
                if other is not None and other != function:
                    raise fail("list", f"logical device {i}: BDF {bdf} but partition id {other} "
                                       "(outputs disagree)", bdf)
            by_key.setdefault(bdf[:-2], []).append((function, i))
        groups = [sorted(by_key[k]) for k in sorted(by_key)]
    else:
        hinted = any(pid_of(i) is not None or compute_of(i) or (i in statics and statics[i].asic_serial)
                     for i in indices)
        if not hinted and metrics:
            groups = _group_by_xcp(indices, metrics)
        else:
            groups = _group_without_bdf(indices, pid_of, compute_of, statics)

    gpus = []
    for gpu_index, members in enumerate(groups):
        gpus.append(_gpu(gpu_index, members, devices, statics, states, metrics))
    return NodeInventory(version=version, gpus=tuple(gpus), emulated=emulated)


def _group_by_xcp(indices: list[int], metrics: dict[int, Metrics]) -> list[list[tuple[int, int]]]:
    """Group metric-only output: a primary partition reports ``gfx_busy_inst`` for every XCP of
    its GPU (xcp_0 .. xcp_{n-1}, 6.3+), and the logical ids of one GPU are consecutive, so the
    primary at id i claims ids i .. i+n-1. A device nothing claims and that reports no XCPs
    cannot be placed: refuse rather than invent one GPU per partition."""
    groups: list[list[tuple[int, int]]] = []
    claimed: dict[int, int] = {}
    for i in indices:
        if i in claimed:
            group = groups[claimed[i]]
            group.append((i - group[0][1], i))
            continue
        xcps = len(metrics[i].gfx_busy_inst) if i in metrics else 0
        if not xcps:
            if len(indices) == 1:
                groups.append([(0, i)])
                continue
            raise fail("metric", "metric output alone does not say which logical devices share a physical GPU "
                                 f"(device {i} reports no per-XCP activity); add the output of amd-smi list, "
                                 "static or partition", i)
        groups.append([(0, i)])
        for j in range(i + 1, i + xcps):
            claimed[j] = len(groups) - 1
    return groups


def _group_without_bdf(indices: list[int], pid_of: Callable[[int], int | None], compute_of: Callable[[int], str | None],
                       statics: dict[int, StaticInfo]) -> list[list[tuple[int, int]]]:
    groups: list[list[tuple[int, int]]] = []
    for i in indices:
        pid = pid_of(i)
        compute = compute_of(i)
        serial = statics[i].asic_serial if i in statics else None
        cur = groups[-1] if groups else None
        start = cur is None
        if cur is not None:
            last_pid = cur[-1][0]
            first = cur[0][1]
            cur_serial = statics[first].asic_serial if first in statics else None
            expected = _expected_count(compute, statics.get(first))
            if pid is not None:
                start = pid == 0 or pid <= last_pid
            elif serial and cur_serial:
                start = serial != cur_serial
            else:
                start = compute in (None, "SPX") or (expected is not None and len(cur) >= expected)
        if start:
            groups.append([(pid if pid is not None else 0, i)])
        else:
            assert cur is not None
            cur.append((pid if pid is not None else cur[-1][0] + 1, i))
    return groups


def _expected_count(compute: str | None, static: StaticInfo | None) -> int | None:
    if compute is None:
        return None
    model = gpu_model_for(static.market_name if static else None)
    if model:
        try:
            return get_spec(model).partition_count(compute)
        except GeometryError:
            return None
    return _FIXED.get(compute)


def _gpu(gpu_index: int, members: list[tuple[int, int]], devices: dict[int, LogicalDevice], statics: dict[int, StaticInfo],
         states: dict[int, PartitionState], metrics: dict[int, Metrics]) -> GpuInfo:
    primary = members[0][1]
    ordered = [i for _, i in members]

    def first(attr: str, sources: Sequence[Mapping[int, object]]) -> Any:
        for idx in [primary, *ordered]:
            for src in sources:
                item = src.get(idx)
                value = getattr(item, attr, None) if item is not None else None
                if value not in (None, (), ""):
                    return value
        return None

    market = first("market_name", [statics])
    model = gpu_model_for(market)
    partitions = []
    for pid, idx in members:
        dev = devices.get(idx)
        st = statics.get(idx)
        met = metrics.get(idx)
        mem = met.vram_total_mb if met and met.vram_total_mb is not None else (st.vram_mb if st else None)
        partitions.append(PartitionInfo(
            partition_id=pid, logical_index=idx,
            bdf=dev.bdf if dev else None, uuid=dev.uuid if dev else None,
            render_node=dev.render if dev else None,
            compute_units=st.num_compute_units if st else None,
            memory_mb=mem,
        ))
    cus = [p.compute_units for p in partitions]
    known_cus = [c for c in cus if c is not None]
    pstate = states.get(primary)
    vram = None
    if statics.get(primary) and statics[primary].vram_mb is not None:
        vram = statics[primary].vram_mb
    elif metrics.get(primary) and metrics[primary].vram_total_mb is not None:
        vram = metrics[primary].vram_total_mb
    return GpuInfo(
        index=gpu_index,
        bdf=devices[primary].bdf if devices.get(primary) else None,
        uuid=devices[primary].uuid if devices.get(primary) else None,
        market_name=market,
        gpu_model=model,
        gfx_target=first("gfx_target", [statics]),
        compute_mode=first("compute_mode", [states, statics]),
        memory_mode=first("memory_mode", [states, statics]),
        memory_caps=(pstate.memory_caps if pstate and pstate.memory_caps else first("memory_caps", [states])) or (),
        profiles=(pstate.profiles if pstate and pstate.profiles else first("profiles", [states])) or (),
        compute_units=sum(known_cus) if cus and len(known_cus) == len(cus) else None,
        vram_mb=vram,
        partitions=tuple(partitions),
    )

"""Parsers of the amd-smi read commands: ``list``, ``static``, ``partition``, ``metric``
(and the human-only ``monitor`` table). JSON is what the backend runs; CSV and human forms
are accepted where the samples exist only in that form."""

from __future__ import annotations

import re
from typing import Any, NoReturn, TypedDict, TypeVar

from partitions.backends.parsing.classify import classify_error
from partitions.backends.parsing.common import (
    DeviceRecord,
    csv_tables,
    device_rows,
    error_document,
    fail,
    human_blocks,
    int_or_none,
    is_na,
    json_documents,
    looks_like_csv,
    mem_mb,
    quantity,
    split_columns,
    strip_group_warnings,
    table_row,
    text_or_none,
)
from partitions.backends.types import AcceleratorProfile, LogicalDevice, Metrics, PartitionState, StaticInfo

COMPUTE_MODES = ("SPX", "DPX", "TPX", "QPX", "CPX")
MEMORY_MODES = ("NPS1", "NPS2", "NPS4", "NPS8")
_BDF = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")

# One device (or table) row as the tool printed it: a JSON object, a CSV row or a human block.
Row = dict[str, Any]
_D = TypeVar("_D", bound=DeviceRecord)


def _is_json(text: str) -> bool:
    return text.lstrip()[:1] in ("[", "{")


def _check_text(text: Any, command: str) -> str:
    if not isinstance(text, str):
        raise fail(command, "output is not text", text)
    if not text.strip():
        raise fail(command, "printed nothing", text)
    return text


def _raise_json_error(doc: Any, command: str, text: str) -> None:
    err = error_document(doc)
    if err is not None:
        exc = classify_error(["amd-smi", *command.split()], 0, text, "")
        raise exc if exc is not None else fail(command, "tool error", err[0], text)


def _single_json_rows(text: str, command: str) -> list[Row]:
    docs, _, _ = json_documents(text, command)
    for doc in docs:
        _raise_json_error(doc, command, text)
    if len(docs) != 1:
        raise fail(command, f"expected one JSON document, got {len(docs)} (mixed outputs?)", text, text)
    return device_rows(docs[0], command, text)


def _csv_rows(text: str, command: str) -> list[dict[str, str]]:
    tables = csv_tables(text, command)
    if tables[0] and list(tables[0][0]) == ["error", "code"]:
        _raise_csv_error(command, text)
    if len(tables) != 1:
        raise fail(command, "expected one CSV table", text, text)
    return tables[0]


def _raise_csv_error(command: str, text: str) -> NoReturn:
    """Raise the typed error of a CSV ``error,code`` table (classify_error always finds one there)."""
    exc = classify_error(["amd-smi", *command.split()], 0, text, "")
    raise exc if exc is not None else fail(command, "tool error", text, text)


def _index(row: Row, key: str, command: str) -> int:
    value = int_or_none(row.get(key), command, key)
    if value is None or value < 0:
        raise fail(command, f"device without a valid {key!r}", row)
    return value


def _mode(value: Any, allowed: tuple[str, ...], command: str, field: str) -> str | None:
    if is_na(value):
        return None
    if not isinstance(value, str) or value.strip().rstrip("*").upper() not in allowed:
        raise fail(command, f"{field!r} is not one of {', '.join(allowed)}", value)
    return value.strip().rstrip("*").upper()


def _unique(items: list[_D], command: str, text: str) -> tuple[_D, ...]:
    seen: set[int] = set()
    for item in items:
        if item.logical_index in seen:
            raise fail(command, f"device {item.logical_index} reported twice (mixed outputs?)", text, text)
        seen.add(item.logical_index)
    return tuple(sorted(items, key=lambda i: i.logical_index))


def _human_gpu_rows(text: str, command: str) -> list[Row]:
    """Per-device rows of the human form (``GPU: n`` blocks); ParseError when there are none."""
    rows = [dict(body, gpu=idx) for kind, idx, body in human_blocks(text, command) if kind == "GPU"]
    if not rows:
        raise fail(command, "no GPU blocks", text, text)
    return rows


# --- list ----------------------------------------------------------------------------------

def parse_list(text: str) -> tuple[LogicalDevice, ...]:
    """``amd-smi list [-e] [--json|--csv]`` -> logical devices."""
    command = "list"
    text = _check_text(text, command)
    text, _groups = strip_group_warnings(text)  # the caller reports them (inventory warning / MissingGroups)
    text = _check_text(text, command)
    if _is_json(text):
        rows = _single_json_rows(text, command)
    elif looks_like_csv(text):
        rows = _csv_rows(text, command)
    else:
        rows = _human_gpu_rows(text, command)
    devices = []
    for row in rows:
        bdf_key = "bdf" if "bdf" in row else "gpu_bdf"
        if bdf_key not in row:
            raise fail(command, "device entry without 'bdf' (not list output?)", row, text)
        for k, v in row.items():
            if isinstance(v, (dict, list)):
                raise fail(command, f"unexpected nested field {k!r}", row, text)
        bdf = text_or_none(row.get(bdf_key))
        if bdf is not None and not _BDF.match(bdf):
            raise fail(command, "malformed BDF", bdf, text)
        devices.append(LogicalDevice(
            logical_index=_index(row, "gpu", command),
            bdf=bdf.lower() if bdf else None,
            uuid=text_or_none(row.get("uuid", row.get("gpu_uuid"))),
            partition_id=int_or_none(row.get("partition_id"), command, "partition_id"),
            kfd_id=int_or_none(row.get("kfd_id"), command, "kfd_id"),
            node_id=int_or_none(row.get("node_id"), command, "node_id"),
            render=text_or_none(row.get("render")),
            card=text_or_none(row.get("card")),
            hip_id=int_or_none(row.get("hip_id"), command, "hip_id"),
            hip_uuid=text_or_none(row.get("hip_uuid")),
        ))
    return _unique(devices, command, text)


# --- static ----------------------------------------------------------------------------------

_STATIC_SECTIONS = {"asic", "vram", "partition", "bus", "limit", "driver", "board", "ras", "numa",
                    "cache_info", "clock", "ifwi", "vbios", "process_isolation", "soc_pstate",
                    "xgmi_plpd", "dfc_ucode", "fb_info", "num_vf", "policy"}


def parse_static(text: str) -> tuple[StaticInfo, ...]:
    """``amd-smi static [-a] [-v] [-p] --json`` (list or ``gpu_data`` envelope) or human."""
    command = "static"
    text = _check_text(text, command)
    if _is_json(text):
        rows = _single_json_rows(text, command)
    else:
        rows = _human_gpu_rows(text, command)
    infos = []
    keys_seen: set[str] = set()
    for row in rows:
        sections = set(row) - {"gpu"}
        if not sections or not sections & _STATIC_SECTIONS:
            raise fail(command, "device entry without static sections (not static output?)", row, text)
        asic = row.get("asic") or {}
        vram = row.get("vram") or {}
        part = row.get("partition") or {}
        for name, sec in (("asic", asic), ("vram", vram), ("partition", part)):
            if not isinstance(sec, dict):
                if is_na(sec):
                    continue
                raise fail(command, f"section {name!r} is not an object", sec, text)
        if not isinstance(asic, dict):
            asic = {}
        if not isinstance(vram, dict):
            vram = {}
        if not isinstance(part, dict):
            part = {}
        key = None
        if "accelerator_partition" in part and "compute_partition" in part:
            raise fail(command, "both compute_partition and accelerator_partition", part, text)
        if "accelerator_partition" in part:
            key = "accelerator_partition"
        elif "compute_partition" in part:
            key = "compute_partition"
        if key:
            keys_seen.add(key)
        serial = text_or_none(asic.get("asic_serial"))
        infos.append(StaticInfo(
            logical_index=_index(row, "gpu", command),
            market_name=text_or_none(asic.get("market_name")),
            device_id=(text_or_none(asic.get("device_id")) or "").lower() or None,
            num_compute_units=int_or_none(asic.get("num_compute_units"), command, "num_compute_units"),
            gfx_target=text_or_none(asic.get("target_graphics_version")),
            vram_mb=mem_mb(vram.get("size"), command, "vram.size"),
            compute_mode=_mode(part.get(key) if key else None, COMPUTE_MODES, command, key or "partition"),
            memory_mode=_mode(part.get("memory_partition"), MEMORY_MODES, command, "memory_partition"),
            partition_id=int_or_none(part.get("partition_id"), command, "partition_id"),
            asic_serial=serial,
        ))
    if len(keys_seen) > 1:
        raise fail(command, "mixed versions: both compute_partition and accelerator_partition keys",
                   text, text)
    return _unique(infos, command, text)


# --- partition ---------------------------------------------------------------------------------

SECTIONS = ("current_partition", "memory_partition", "partition_profiles", "partition_resources")
_HUMAN_SECTIONS = {"CURRENT_PARTITION": "current_partition", "MEMORY_PARTITION": "memory_partition",
                   "ACCELERATOR_PARTITION_PROFILES": "partition_profiles",
                   "ACCELERATOR_PARTITION_RESOURCES": "partition_resources"}


def _section_of_rows(rows: list[Any], command: str, text: str) -> str:
    if not rows:
        raise fail(command, "cannot tell which section an empty list belongs to", rows, text)
    keys = set(rows[0]) if isinstance(rows[0], dict) else set()
    if {"profile_index", "resource_index"} <= keys:
        return "partition_profiles"
    if "accelerator_profile_index" in keys or {"gpu_id", "memory", "accelerator_type"} <= keys:
        return "current_partition"
    if "current_memory_partition" in keys or "memory_partition_caps" in keys:
        return "memory_partition"
    if "resource_index" in keys:
        return "partition_resources"
    raise fail(command, "unexpected JSON structure", rows, text)


def _partition_sections_json(text: str, command: str) -> dict[str, list[Row]]:
    docs, _, _trailing = json_documents(text, command, allow_trailing=True)
    sections: dict[str, list[Row]] = {}
    for doc in docs:
        _raise_json_error(doc, command, text)
        if isinstance(doc, dict):
            items = list(doc.items())
        elif isinstance(doc, list):
            items = [(_section_of_rows(doc, command, text), doc)]
        else:
            raise fail(command, "unexpected JSON structure", doc, text)
        for key, rows in items:
            if key not in SECTIONS:
                raise fail(command, f"unexpected key {key!r}", doc, text)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise fail(command, f"section {key!r} is not a list of objects", rows, text)
            if key in sections:
                raise fail(command, f"section {key!r} printed twice (mixed outputs?)", text, text)
            sections[key] = rows
    return sections


def _partition_sections_human(text: str, command: str) -> dict[str, list[Row]]:
    sections: dict[str, list[Row]] = {}
    section: str | None = None
    columns: list[tuple[str, int]] | None = None
    block_lines: list[str] = []

    def flush_blocks() -> None:
        if not block_lines:
            return
        for kind, idx, body in human_blocks("\n".join(block_lines), command):
            mp = body.get("memory_partition")
            if kind != "GPU" or not isinstance(mp, dict):
                raise fail(command, "unexpected device block", "\n".join(block_lines), text)
            sections.setdefault("memory_partition", []).append({
                "gpu_id": idx, "memory_partition_caps": mp.get("caps", "N/A"),
                "current_memory_partition": mp.get("current", "N/A")})
        block_lines.clear()

    for raw in text.splitlines():
        line = raw.rstrip("\r").rstrip()
        s = line.strip()
        if block_lines and (line.startswith((" ", "\t")) or re.match(r"^GPU:\s*\d+$", s)) and s:
            block_lines.append(line)
            continue
        if re.match(r"^GPU:\s*\d+$", s):
            columns = None
            block_lines.append(line)
            continue
        flush_blocks()
        if not s:
            columns = None
            continue
        if s.startswith("*") or s in ("Legend:",) or s == "...":
            continue
        if s.endswith(":") and s[:-1] in _HUMAN_SECTIONS:
            section, columns = _HUMAN_SECTIONS[s[:-1]], None
            sections.setdefault(section, [])
            continue
        tokens = s.split()
        if columns is None and len(tokens) >= 2 and all(re.fullmatch(r"[A-Z_]+", t) for t in tokens):
            if section is None:
                raise fail(command, "table without a section title", line, text)
            columns = split_columns(line)
            continue
        if columns is not None:
            assert section is not None  # a table header is accepted only under a section title
            cells = table_row(line, columns, command, text)
            sections[section].append({k.lower(): v for k, v in cells.items()})
            continue
        raise fail(command, "unexpected line", line, text)
    flush_blocks()
    if not any(sections.values()):
        raise fail(command, "no partition tables", text, text)
    return sections


def _pid(value: Any, command: str) -> int | None:
    """partition_id: int, "3", "0,1,2,3" (6.3 primary: the list of ids -> 0), "N/A"."""
    if is_na(value):
        return None
    if isinstance(value, str) and "," in value:
        ids = [p.strip() for p in value.split(",")]
        if not all(p.isdigit() for p in ids):
            raise fail(command, "malformed partition_id list", value)
        return int(ids[0])
    return int_or_none(value, command, "partition_id")


class _Profile(TypedDict):
    """One accelerator profile while its resource rows are being collected."""

    profile_index: int
    accelerator_type: str
    memory_caps: tuple[str, ...]
    num_partitions: int | None
    active: bool
    resources: dict[str, int]


def _profiles(rows: list[Row], command: str, text: str) -> dict[int, tuple[list[_Profile], int | None]]:
    """partition_profiles rows -> {gpu_id: ([profile dicts], own partition id)}."""
    out: dict[int, tuple[list[_Profile], int | None]] = {}
    gpu: int | None = None
    current: _Profile | None = None
    for row in rows:
        gid = row.get("gpu_id", "")
        if is_na(gid) and gid != "" and all(is_na(v) or k == "partition_id" for k, v in row.items()):
            continue  # 6.4 non-root human table: every field N/A, no device id
        if gpu is None and gid == "" and all(is_na(v) for v in row.values()):
            continue
        if gid not in ("", None):
            gpu = int_or_none(gid, command, "gpu_id")
            if gpu is None:
                raise fail(command, "profile row without gpu_id", row, text)
            out.setdefault(gpu, ([], None))
            current = None
        if gpu is None:
            raise fail(command, "profile continuation row before any device row", row, text)
        pidx = row.get("profile_index", "")
        if pidx not in ("", None):
            if is_na(pidx):  # non-root: one N/A row per device
                current = None
                pid = _pid(row.get("partition_id"), command)
                if pid is not None:
                    out[gpu] = (out[gpu][0], pid)
                continue
            atype = str(row.get("accelerator_type", ""))
            active = atype.strip().endswith("*")
            caps = text_or_none(row.get("memory_partition_caps"))
            profile_index = int_or_none(pidx, command, "profile_index")
            accelerator_type = _mode(atype, COMPUTE_MODES, command, "accelerator_type")
            memory_caps = tuple(c.strip() for c in caps.split(",")) if caps else ()
            num_partitions = int_or_none(row.get("num_partitions"), command, "num_partitions")
            if accelerator_type is None:
                raise fail(command, "profile without accelerator_type", row, text)
            if profile_index is None:  # only a {"value": "N/A"} object gets here
                raise fail(command, "profile without profile_index", row, text)
            current = {
                "profile_index": profile_index,
                "accelerator_type": accelerator_type,
                "memory_caps": memory_caps,
                "num_partitions": num_partitions,
                "active": active,
                "resources": {},
            }
            out[gpu][0].append(current)
            if active:
                out[gpu] = (out[gpu][0], _pid(row.get("partition_id"), command))
        rtype = text_or_none(row.get("resource_type"))
        if rtype and current is not None:
            current["resources"][rtype] = int_or_none(row.get("resource_instances"), command,
                                                      "resource_instances") or 0
    return out


def parse_partition(text: str) -> tuple[PartitionState, ...]:
    """``amd-smi partition [-c] [-m] [-a] --json`` (7.x object, 6.3 back-to-back documents,
    6.4 JSON followed by stray text), CSV or the human tables."""
    command = "partition"
    text = _check_text(text, command)
    if _is_json(text):
        sections = _partition_sections_json(text, command)
    elif looks_like_csv(text):
        sections = {}
        for table in csv_tables(text, command):
            if table and list(table[0]) == ["error", "code"]:
                _raise_csv_error(command, text)
            if table:
                sections[_section_of_rows(table, command, text)] = table
    else:
        sections = _partition_sections_human(text, command)

    current: dict[int, Row] = {}
    for row in sections.get("current_partition", []):
        current[_index(row, "gpu_id", command)] = row
    memory: dict[int, Row] = {}
    for row in sections.get("memory_partition", []):
        memory[_index(row, "gpu_id", command)] = row
    profiles = _profiles(sections.get("partition_profiles", []), command, text)
    ids = sorted(set(current) | set(memory) | set(profiles))
    if not ids:
        if sections.get("partition_profiles"):
            return ()  # non-root accelerator table: all N/A, nothing identifies a device
        raise fail(command, "no devices in partition output", text, text)

    states = []
    for gid in ids:
        cur = current.get(gid, {})
        mem = memory.get(gid, {})
        profs, prof_pid = profiles.get(gid, ([], None))
        compute = _mode(cur.get("accelerator_type"), COMPUTE_MODES, command, "accelerator_type")
        active = [p for p in profs if p["active"]]
        if len(active) > 1:
            raise fail(command, f"device {gid} has {len(active)} active profiles", text, text)
        if compute is None and active:
            compute = active[0]["accelerator_type"]
        mem_cur = _mode(cur.get("memory"), MEMORY_MODES, command, "memory")
        mem_other = _mode(mem.get("current_memory_partition"), MEMORY_MODES, command,
                          "current_memory_partition")
        if mem_cur and mem_other and mem_cur != mem_other:
            raise fail(command, f"device {gid}: memory {mem_cur} vs current_memory_partition "
                                f"{mem_other} (mixed outputs?)", text, text)
        caps = text_or_none(mem.get("memory_partition_caps"))
        pid = _pid(cur.get("partition_id"), command) if cur else None
        if pid is None:
            pid = prof_pid
        pindex = int_or_none(cur.get("accelerator_profile_index"), command, "accelerator_profile_index")
        if pindex is None and active:
            pindex = active[0]["profile_index"]
        states.append(PartitionState(
            logical_index=gid,
            compute_mode=compute,
            memory_mode=mem_cur or mem_other,
            partition_id=pid,
            profile_index=pindex,
            memory_caps=tuple(c.strip() for c in caps.split(",") if c.strip()) if caps else (),
            profiles=tuple(AcceleratorProfile(
                profile_index=p["profile_index"], accelerator_type=p["accelerator_type"],
                memory_caps=p["memory_caps"], num_partitions=p["num_partitions"],
                active=p["active"], resources=p["resources"]) for p in profs),
        ))
    return tuple(states)


# --- metric ------------------------------------------------------------------------------------

_METRIC_SECTIONS = {"usage", "power", "temperature", "ecc", "ecc_blocks", "mem_usage", "clock", "pcie",
                    "fan", "voltage_curve", "overdrive", "mem_overdrive", "perf_level", "xgmi_err",
                    "voltage", "energy", "throttle", "violation", "gpu_board", "base_board", "timestamp"}
_CSV_METRIC = {"gfx_activity": "usage", "umc_activity": "usage", "socket_power": "power",
               "hotspot": "temperature", "total_vram": "mem_usage", "used_vram": "mem_usage",
               "total_correctable_count": "ecc", "total_uncorrectable_count": "ecc",
               "total_deferred_count": "ecc"}


def _section(row: Row, name: str, command: str) -> Row:
    sec = row.get(name)
    if sec is None or is_na(sec):
        return {}
    if not isinstance(sec, dict):
        raise fail(command, f"section {name!r} is not an object", sec)
    return sec


def _metric_row(row: Row, command: str) -> Metrics:
    usage = _section(row, "usage", command)
    power = _section(row, "power", command)
    temp = _section(row, "temperature", command)
    ecc = _section(row, "ecc", command)
    mem = _section(row, "mem_usage", command)
    busy: dict[int, tuple[float | None, ...]] = {}
    inst = usage.get("gfx_busy_inst")
    if isinstance(inst, dict):
        for key, values in inst.items():
            m = re.fullmatch(r"xcp_(\d+)", str(key).lower())
            if not m or not isinstance(values, list):
                raise fail(command, "malformed gfx_busy_inst", inst)
            busy[int(m.group(1))] = tuple(quantity(v, "pct", command, f"gfx_busy_inst.{key}") for v in values)
    elif inst is not None and not is_na(inst):
        raise fail(command, "malformed gfx_busy_inst", inst)
    socket = power.get("socket_power", power.get("average_socket_power", power.get("current_socket_power")))
    return Metrics(
        logical_index=_index(row, "gpu", command),
        gfx_activity=quantity(usage.get("gfx_activity"), "pct", command, "gfx_activity"),
        umc_activity=quantity(usage.get("umc_activity"), "pct", command, "umc_activity"),
        gfx_busy_inst=busy,
        vram_used_mb=mem_mb(mem.get("used_vram"), command, "used_vram"),
        vram_total_mb=mem_mb(mem.get("total_vram"), command, "total_vram"),
        power_w=quantity(socket, "power", command, "socket_power"),
        temperature_hotspot_c=quantity(temp.get("hotspot"), "temp", command, "hotspot"),
        temperature_mem_c=quantity(temp.get("mem"), "temp", command, "mem"),
        ecc_correctable=int_or_none(ecc.get("total_correctable_count"), command, "total_correctable_count"),
        ecc_uncorrectable=int_or_none(ecc.get("total_uncorrectable_count"), command, "total_uncorrectable_count"),
        ecc_deferred=int_or_none(ecc.get("total_deferred_count"), command, "total_deferred_count"),
    )


def parse_metrics(text: str) -> tuple[Metrics, ...]:
    """``amd-smi metric -u -m -p -t -e --json`` (list or ``gpu_data``), flat CSV, or human."""
    command = "metric"
    text = _check_text(text, command)
    if _is_json(text):
        rows = _single_json_rows(text, command)
    elif looks_like_csv(text):
        rows = []
        for flat in _csv_rows(text, command):
            row: dict[str, Any] = {"gpu": flat.get("gpu")}
            for k, v in flat.items():
                sec = _CSV_METRIC.get(k) or ("mem_usage" if k.endswith(("_vram", "_gtt")) else None)
                if k == "mem" and "hotspot" in flat:
                    sec = "temperature"
                if sec:
                    row.setdefault(sec, {})[k] = v
            rows.append(row)
    else:
        rows = _human_gpu_rows(text, command)
    out = []
    for row in rows:
        if not (set(row) - {"gpu"}) & _METRIC_SECTIONS:
            raise fail(command, "device entry without metric sections (not metric output?)", row, text)
        out.append(_metric_row(row, command))
    return _unique(out, command, text)


_MON_TOKEN = re.compile(
    r"N/A|\d+(?:\.\d+)?/\s*\d+(?:\.\d+)?\s*(?:GB|MB)|-?\d+(?:\.\d+)?\s*(?:W|°C|MHz|%|MB|GB)|\d+")


def parse_monitor(text: str) -> tuple[Metrics, ...]:
    """``amd-smi monitor [-p -t -v]`` table (human only) -> power/temperature/VRAM/GFX%."""
    command = "monitor"
    text = _check_text(text, command)
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip() and ln.strip() != "..."]
    header = lines[0].split()
    if not header or header[0] != "GPU":
        raise fail(command, "no monitor header", lines[0], text)
    out = []
    for line in lines[1:]:
        tokens = _MON_TOKEN.findall(line)
        if len(tokens) != len(header) or "".join(tokens).replace(" ", "") != line.replace(" ", ""):
            raise fail(command, "row does not match the header", line, text)
        cells = dict(zip(header, tokens))
        used = total = None
        if "VRAM_USAGE" in cells and not is_na(cells["VRAM_USAGE"]):
            u, t = cells["VRAM_USAGE"].split("/")
            unit = t.split()[-1]
            used = mem_mb(f"{u.strip()} {unit}", command, "VRAM_USAGE")
            total = mem_mb(t.strip(), command, "VRAM_USAGE")
        out.append(Metrics(
            logical_index=int(cells["GPU"]),
            gfx_activity=quantity(cells.get("GFX%"), "pct", command, "GFX%"),
            umc_activity=quantity(cells.get("MEM%"), "pct", command, "MEM%"),
            vram_used_mb=used if used is not None else mem_mb(cells.get("VRAM_USED"), command, "VRAM_USED"),
            vram_total_mb=total if total is not None else mem_mb(cells.get("VRAM_TOTAL"), command, "VRAM_TOTAL"),
            power_w=quantity(cells.get("POWER"), "power", command, "POWER"),
            temperature_hotspot_c=quantity(cells.get("GPU_T", cells.get("GPU_TEMP")), "temp", command, "GPU_T"),
            temperature_mem_c=quantity(cells.get("MEM_T", cells.get("MEM_TEMP")), "temp", command, "MEM_T"),
        ))
    return _unique(out, command, text)

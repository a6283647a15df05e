"""Output formats of the real CLI: JSON (indent 4), CSV (csv.DictWriter, CRLF) and the human form
(upper-case keys, 4-space nesting, one-line lists, a blank line after each device), plus the
fixed texts (banners, version line, partition tables).
"""

from __future__ import annotations

import csv
import io
import json

from .model import POWER, Device, Hive

NA = "N/A"


def dumps(obj) -> str:
    return json.dumps(obj, indent=4) + "\n"


def envelope(hive: Hive, records: list[dict]) -> str:
    """static/metric JSON: a list before 7.0, ``{"gpu_data": [...]}`` from 7.0."""
    if hive.rocm >= (7, 0, 0):
        return dumps({"gpu_data": records})
    return dumps(records)


# -- human -------------------------------------------------------------------------------
def _is_unit(value) -> bool:
    return isinstance(value, dict) and set(value) == {"value", "unit"}


def human_value(value) -> str:
    if _is_unit(value):
        u = "\u00b0C" if value["unit"] == "C" else value["unit"]
        return f"{value['value']} {u}"
    if isinstance(value, list):
        return "[" + ", ".join(human_value(v) for v in value) + "]"
    return str(value)


def _human_lines(key: str, value, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict) and not _is_unit(value):
        out.append(f"{pad}{key.upper()}:")
        for k, v in value.items():
            _human_lines(k, v, indent + 4, out)
    else:
        out.append(f"{pad}{key.upper()}: {human_value(value)}")


def human_blocks(records: list[dict], id_key: str = "gpu", label: str = "GPU") -> str:
    out: list[str] = []
    for rec in records:
        out.append(f"{label}: {rec[id_key]}")
        for k, v in rec.items():
            if k != id_key:
                _human_lines(k, v, 4, out)
        out.append("")
    return "\n".join(out) + "\n" if out else ""


# -- csv ---------------------------------------------------------------------------------
def _flat_value(value):
    if _is_unit(value):
        return value["value"]
    if isinstance(value, list):
        return str([_flat_value(v) for v in value])
    return value


def flatten(rec: dict) -> dict:
    out: dict = {}

    def walk(prefix: str, obj: dict) -> None:
        for k, v in obj.items():
            if isinstance(v, dict) and not _is_unit(v):
                walk(k, v)
            else:
                key = k if k not in out else f"{prefix}_{k}"
                out[key] = _flat_value(v)

    walk("", rec)
    return out


def csv_text(rows: list[dict], rename: dict | None = None) -> str:
    if not rows:
        return "\n"
    rename = rename or {}
    rows = [{rename.get(k, k): v for k, v in flatten(r).items()} for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), restval=NA, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue() + "\n"


# -- tables (partition) ------------------------------------------------------------------
def table(rows: list[dict], widths: dict | None = None, keep_header_pad: bool = False) -> str:
    if not rows:
        return ""
    widths = dict(widths or {})
    keys = list(rows[0])
    for k in keys:
        longest = max([len(str(r[k])) for r in rows] + [len(k)])
        widths[k] = max(widths.get(k, 0), len(k) + 2, longest + 2)
    header = "".join(k.upper().ljust(widths[k]) for k in keys)
    lines = [header if keep_header_pad else header.rstrip()]
    for r in rows:
        lines.append("".join(str(r[k]).ljust(widths[k]) for k in keys).rstrip())
    return "\n".join(lines) + "\n"


ROOT_WARNING = (
    "***************************************************************************\n"
    "** WARNING:                                                              **\n"
    "** ACCELERATOR_PARTITION_PROFILES requires sudo/root permissions to run. **\n"
    "** Please run the command with sudo permissions to get accurate results. **\n"
    "***************************************************************************\n"
)
BAR = "\u2588"
LEGEND = "\nLegend:\n* = Current mode\n"


def partition_human(hive: Hive, sections: dict) -> str:
    v63 = hive.rocm < (6, 4, 0)
    gpu_w = {"gpu_id": 13} if v63 else {}
    out = ""
    if "current_partition" in sections:
        out += "CURRENT_PARTITION:\n" + table(sections["current_partition"], gpu_w, v63)
    if "memory_partition" in sections:
        if v63:
            out += human_blocks([
                {"gpu_id": r["gpu_id"], "memory_partition": {
                    "caps": r["memory_partition_caps"], "current": r["current_memory_partition"]}}
                for r in sections["memory_partition"]], id_key="gpu_id")
        else:
            out += "\nMEMORY_PARTITION:\n" + table(sections["memory_partition"])
    if "partition_profiles" in sections:
        out += "\nACCELERATOR_PARTITION_PROFILES:\n"
        if not hive.root and not v63:
            out += "\n" + ROOT_WARNING + "\n"
        out += table(sections["partition_profiles"], dict(gpu_w, partition_id=17), v63)
        out += "\nACCELERATOR_PARTITION_RESOURCES:\n" + table(sections["partition_resources"], {}, v63)
        out += "\n" + LEGEND
    return out


# -- fixed texts -------------------------------------------------------------------------
def tool_versions(hive: Hive) -> tuple[str, str, str]:
    """(tool, library, rocm) as ``amd-smi version`` prints them."""
    r = hive.rocm
    table_ = [
        ((7, 13, 0), "26.5.0+3c1f0a2", "26.5.0"),
        ((7, 1, 0), "26.1.0+5df6c765", "26.1.0"),
        ((7, 0, 2), "26.0.2+39589fda", "26.0.2"),
        ((7, 0, 0), "26.0.0+eaa54ecc", "26.0.0"),
        ((6, 4, 2), "25.5.1+c11b8ba", "25.5.1"),
        ((6, 4, 1), "25.4.2+aca1f5e", "25.4.0"),
        ((6, 4, 0), "25.3.0+ede62f2", "25.3.0"),
        ((6, 3, 0), "24.7.1+8dc45db", "25.1.0.0"),
        ((6, 2, 0), "24.6.3+9578815", "24.6.3.0"),
        ((6, 1, 0), "23.4.2+505b858", "24.2.0.0"),
    ]
    for since, tool, lib in table_:
        if r >= since:
            return tool, lib, ".".join(map(str, r))
    return "23.4.2+505b858", "24.2.0.0", ".".join(map(str, r))


NPS_BANNER_6 = """
          ****** WARNING ******

          Setting Dynamic Memory (NPS) partition modes require users to quit all GPU workloads.
          AMD SMI will then attempt to change memory (NPS) partition mode.
          Upon a successful set, AMD SMI will then initiate an action to restart {driver} driver.
          This action will change all GPU's in the hive to the requested memory (NPS) partition mode.

          Please use this utility with caution.

"""

NPS_BANNER_7 = """
            ******WARNING******

            After changing memory (NPS) partition modes, users MUST restart
            (reload) the AMD GPU driver. This command NO LONGER AUTOMATICALLY
            reloads the driver, see `amd-smi reset -h` and
            `sudo amd-smi reset -r` for more information.

            This change is intended to allow users the ability to control when is
            the best time to restart the AMD GPU driver, as it may not be desired
            to restart the AMD GPU driver immediately after changing the
            memory (NPS) partition mode.

            Please use `sudo amd-smi reset -r` AFTER successfully
            changing the memory (NPS) partition mode. A successful driver reload
            is REQUIRED in order to complete updating ALL GPUs in the hive to
            the requested partition mode.

            ******REMINDER******
            In order to reload the AMD GPU driver, users MUST quit all GPU
            workloads across all devices.

"""

RELOAD_BANNER = """
            ******WARNING******

            AMD SMI is about to initiate an AMD GPU driver restart (module reload).
            Users MUST quit all GPU workloads across all devices before continuing.
            All GPUs in the hive will briefly disappear while the driver reloads.

            Please use this utility with caution.

"""

PROMPT = "Do you accept these terms? [Y/N] "
DECLINED = "Confirmation not given. Exiting without setting value\n"


def nps_banner(hive: Hive) -> str:
    if hive.rocm >= (7, 0, 0):
        return NPS_BANNER_7
    return NPS_BANNER_6.format(driver="amdgpu" if hive.rocm < (6, 3, 2) else "AMD GPU")


def progress(label: str, elapsed: float, total: int) -> str:
    filled = min(40, round(40 * elapsed / total)) if total else 40
    return f"{label}: [{BAR * filled}{'.' * (40 - filled)}] {elapsed}/{total} secs remain"


def group_warning(groups: list[str]) -> str:
    """amdsmi_helpers.check_required_groups: the groups sorted, comma-joined."""
    return (f"WARNING: User is missing the following required groups: {', '.join(sorted(groups))}. "
            "Please add user to these groups.")


# -- default view (7.0+) -----------------------------------------------------------------
_DV_RULE = "|-------------------------------------+----------------------------------------|"


def default_view(hive: Hive, devices: list[Device]) -> str:
    """The table ``amd-smi`` alone prints (layout of the real 7.0 capture in
    tests/fixtures/amd-smi/default.MI300X.SPX-NPS1.8gpu.rocm70.txt): two lines per logical
    device; secondary partitions (6.4.1+) show N/A for utilisation, temperature and power and
    their share of the VRAM."""
    from . import records as rec

    tool, _lib, rocm = tool_versions(hive)
    head = f"AMD-SMI {tool}      amdgpu version: {rec.amdgpu_version(hive)}  ROCm version: {rocm}"
    lines = [
        "+" + "-" * 78 + "+",
        f"| {head:<76} |",
        f"| {'Platform: Linux Baremetal':<76} |",
        _DV_RULE,
        "| BDF                        GPU-Name | Mem-Uti   Temp   UEC       Power-Usage |",
        "| GPU  HIP-ID  OAM-ID  Partition-Mode | GFX-Uti    Fan               Mem-Usage |",
        "|=====================================+========================================|",
    ]
    _idle, peak, _bw = POWER.get(hive.spec.model, (150, 750, 5325))
    for n, dev in enumerate(devices):
        gpu = hive.gpus[dev.gpu]
        metric = rec.metric_record(hive, dev, ["usage", "power", "temperature", "mem_usage"])
        usage = metric["usage"]
        na = not isinstance(usage, dict)
        gfx = "N/A" if na else f"{usage['gfx_activity']['value']} %"
        mem_uti = "N/A" if na else f"{usage['umc_activity']['value']} %"
        hot = metric["temperature"]["hotspot"]
        temp = "N/A" if isinstance(hot, str) else f"{hot['value']} \u00b0C"
        watts = metric["power"]["socket_power"]
        power = "N/A" if isinstance(watts, str) else f"{watts['value']}/{peak} W"
        uec = "N/A" if na else str(gpu["ecc"]["uncorrectable"])
        used = metric["mem_usage"]["used_vram"]["value"]
        total = metric["mem_usage"]["total_vram"]["value"]
        name = f"AMD Instinct {hive.spec.model}"
        mode = f"{gpu['compute_mode']}/{gpu['memory_mode']}"
        lines.append(f"| {dev.bdf}{name:>23} | {mem_uti:<9}{temp:<8}{uec:<4}{power:>17} |")
        lines.append(f"|{dev.index:>4}{dev.index:>8}{gpu['oam_id']:>8}{mode:>16} | {gfx:<11}{'N/A':<3}{f'{used}/{total} MB':>24} |")
        if n + 1 < len(devices):
            lines.append(_DV_RULE)
    lines.append("+-------------------------------------+----------------------------------------+")
    lines += [
        "+" + "-" * 78 + "+",
        f"| {'Processes:':<76} |",
        f"|  {'GPU        PID  Process Name          GTT_MEM  VRAM_MEM  MEM_USAGE     CU %':<75} |",
        "|" + "=" * 78 + "|",
        *(_process_rows(hive, devices) or [f"|  {'No running processes found':<75} |"]),
        "+" + "-" * 78 + "+",
    ]
    return "\n".join(lines) + "\n"


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB"


def _process_rows(hive: Hive, devices: list[Device]) -> list[str]:
    """One row per live engine per device it holds (engines.py; dead ones are reaped when the
    hive is read), in the layout of the real 7.0 capture. Pid-less ``processes`` have no row."""
    from .engines import ENGINE_NAME, ENGINE_PID

    rows = []
    for dev in devices:
        part = hive.gpus[dev.gpu]["partitions"][dev.partition]
        if part.get(ENGINE_PID) is None:
            continue
        vram = int(part["vram_used_mb"])
        cu = f"{float(part['load']) * 100:.1f} %"
        rows.append(f"|{dev.index:>5}{part[ENGINE_PID]:>11}  {ENGINE_NAME:<20}{'2.0 MB':>9}"
                    f"{_gb(vram):>10}{_gb(vram + 512):>11}{cu:>9} |")
    return rows

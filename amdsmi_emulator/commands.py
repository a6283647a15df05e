"""Execution of each amd-smi subcommand against the hive model.

Each ``run_*`` gets the hive (mutable; the caller saves it), the parsed options and the
``Active`` faults, and returns a ``Result``: a list of output chunks (stdout text, stderr
text, or a reload pause with its progress bar) plus the exit status. Errors raised after some
GPUs were handled are returned in ``Result.error`` so the state of the handled GPUs is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import records as rec
from . import render
from .errors import ChainedError, CliError, EmulatorExit
from .faults import Active
from .model import Device, Hive, RuleError

DEFAULT_RELOAD_TOTAL = {6: 40, 64: 140, 7: 140}
# 6.1/6.2 ``set -M``: rocm_smi's restartAMDGpuDriver() runs "modprobe -r amdgpu && modprobe
# amdgpu&" in the background and returns: the devices vanish a moment later, then come back.
BACKGROUND_RELOAD_DELAY_S = 0.2
BACKGROUND_RELOAD_S = 0.5
NO_PERM = "[AMDSMI_STATUS_NO_PERM] Command requires elevation"


@dataclass
class Pause:
    """Reload in progress: ``seconds`` of sleep with a ``\\r`` progress bar."""

    seconds: float
    label: str
    total: int


@dataclass
class Result:
    chunks: list = field(default_factory=list)  # str (stdout) | ("stderr", str) | Pause
    status: int = 0
    error: EmulatorExit | None = None
    modified: bool = False

    def out(self, text: str) -> None:
        self.chunks.append(text)


@dataclass
class Options:
    command: str
    fmt: str  # "human" | "json" | "csv"
    devices: list[Device]  # selected logical devices
    all_selected: bool
    flags: dict


def block(fmt: str, gpu_id, key: str, message: str) -> str:
    """One per-GPU result of set/reset."""
    if fmt == "json":
        return render.dumps([{"gpu": gpu_id, key: message}])
    if fmt == "csv":
        return render.csv_text([{"gpu": gpu_id, key: message}])
    return f"GPU: {gpu_id}\n    {key.upper()}: {message}\n\n"


def _records_out(hive: Hive, opts: Options, records: list[dict], enveloped: bool,
                 rename: dict | None = None) -> str:
    if opts.fmt == "json":
        return render.envelope(hive, records) if enveloped else render.dumps(records)
    if opts.fmt == "csv":
        return render.csv_text(records, rename)
    return render.human_blocks(records)


# -- queries -----------------------------------------------------------------------------
def run_list(hive: Hive, opts: Options, active: Active) -> Result:
    res = Result()
    rows = [rec.list_record(hive, d, bool(opts.flags.get("enum"))) for d in opts.devices]
    if hive.missing_groups:
        # list goes on without the groups: the warning once per device and once more, on
        # stdout before the output, and no BDF/UUID (the KFD/DRM files are unreadable).
        res.out((render.group_warning(hive.missing_groups) + "\n") * (len(opts.devices) + 1))
        for row in rows:
            row["bdf"] = row["uuid"] = render.NA
    res.out(_records_out(hive, opts, rows, False, {"bdf": "gpu_bdf", "uuid": "gpu_uuid"}))
    return res


def run_default(hive: Hive, opts: Options, active: Active) -> Result:
    """``amd-smi`` with no subcommand (7.0+): the table view of every logical device."""
    res = Result()
    res.out(render.default_view(hive, opts.devices))
    return res


def run_static(hive: Hive, opts: Options, active: Active) -> Result:
    wanted = [s for s in ("asic", "bus", "driver", "vram", "partition") if opts.flags.get(s)]
    if not wanted:
        wanted = ["asic", "bus", "driver", "vram"]
        if hive.rocm < (7, 0, 0):  # 7.0+: partition only with -p
            wanted.append("partition")
    res = Result()
    res.out(_records_out(hive, opts, [rec.static_record(hive, d, wanted) for d in opts.devices], True))
    return res


METRIC_SECTIONS = ("usage", "power", "temperature", "ecc", "ecc_blocks", "mem_usage")


def run_metric(hive: Hive, opts: Options, active: Active) -> Result:
    wanted = [s for s in METRIC_SECTIONS if opts.flags.get(s)]
    if not wanted:
        wanted = ["usage", "power", "temperature", "ecc", "mem_usage"]
    res = Result()
    res.out(_records_out(hive, opts, [rec.metric_record(hive, d, wanted) for d in opts.devices], True))
    return res


def run_partition(hive: Hive, opts: Options, active: Active) -> Result:
    f = opts.flags
    every = not (f.get("current") or f.get("memory") or f.get("accelerator"))
    sections: dict = {}
    if every or f.get("current"):
        sections["current_partition"] = rec.current_rows(hive, opts.devices)
    if every or f.get("memory"):
        sections["memory_partition"] = rec.memory_rows(hive, opts.devices)
    if every or f.get("accelerator"):
        sections["partition_profiles"], sections["partition_resources"] = rec.profile_rows(hive, opts.devices)
    res = Result()
    if opts.fmt == "json":
        if hive.rocm >= (7, 0, 0):
            res.out(render.dumps(sections))
        elif hive.rocm >= (6, 4, 0):  # valid JSON followed by extra non-JSON text (fixed in 7.0)
            res.out(render.dumps(sections) + render.LEGEND)
        else:  # 6.3: one document per section, back to back
            res.out("".join(render.dumps({k: v}) for k, v in sections.items()))
    elif opts.fmt == "csv":
        res.out("".join(render.csv_text(rows) for rows in sections.values()))
    else:
        res.out(render.partition_human(hive, sections))
    return res


def run_version(hive: Hive, opts: Options, active: Active) -> Result:
    tool, lib, rocm = render.tool_versions(hive)
    # The logger's output dict, printed as [output] in JSON (amdsmi_logger._print_json_output):
    # keys tool, version, amdsmi_library_version, rocm_version, and from 6.4 the drivers.
    fields = {"tool": "AMDSMI Tool", "version": tool, "amdsmi_library_version": lib,
              "rocm_version": rocm}
    line = f"AMDSMI Tool: {tool} | AMDSMI Library version: {lib} | ROCm version: {rocm}"
    if hive.rocm >= (6, 4, 0):
        parts = []
        if not opts.flags.get("cpu_version"):
            fields["amdgpu_version"] = rec.amdgpu_version(hive)
            parts.append(f"amdgpu version: {rec.amdgpu_version(hive)}")
        if not opts.flags.get("gpu_version"):
            fields["amd_hsmp_driver_version"] = "N/A"
            parts.append("amd_hsmp version: N/A")
        line = " | ".join([line] + parts)
    res = Result()
    if opts.fmt == "json":
        res.out(render.dumps([fields]))
    elif opts.fmt == "csv":
        res.out(render.csv_text([fields]))
    else:
        res.out(line + "\n")
    return res


# -- set -C ------------------------------------------------------------------------------
def _targets(opts: Options) -> list[tuple[int, Device]]:
    """One (printed id, device) per physical GPU, in selection order."""
    seen: set[int] = set()
    out: list[tuple[int, Device]] = []
    for dev in opts.devices:
        if dev.gpu not in seen:
            seen.add(dev.gpu)
            out.append((len(out) if opts.all_selected else dev.index, dev))
    return out


def run_set_compute(hive: Hive, opts: Options, active: Active) -> Result:
    res = Result()
    token = opts.flags["compute_partition"]
    modes = [str(m) for m in hive.spec.compute_modes]
    mode = modes[int(token)] if token.isdigit() else token
    v64 = hive.rocm >= (6, 4, 0)
    noun = "accelerator" if v64 else "compute"
    key = "accelerator_partition" if v64 else "computepartition"
    profile = f" (profile #{modes.index(mode)})" if mode in modes else ""
    combined: list[dict] = []

    def emit(gpu_id, message: str) -> None:
        if hive.rocm < (6, 3, 0) and opts.fmt != "human":
            combined.append({"gpu": gpu_id, key: message})
        else:
            res.out(block(opts.fmt, gpu_id, key, message))

    for n, (gpu_id, dev) in enumerate(_targets(opts)):
        where = f"on GPU ID: {gpu_id} BDF:{dev.bdf}"
        if not hive.root:
            res.error = ChainedError("AMDSMI_STATUS_NO_PERM", "PermissionError: Command requires elevation")
            break
        if active.partial is not None and n >= active.partial:
            res.error = ChainedError("AMDSMI_STATUS_UNKNOWN_ERROR",
                                     f"ValueError: Unable to set {noun} partition to {mode} {where}")
            break
        try:
            hive.check_compute(dev.gpu, mode, force_busy=active.busy)
        except RuleError as err:
            if hive.rocm >= (7, 13, 0):  # 7.13+: every failure is reported in-band, per GPU
                emit(gpu_id, f"[{err.status}] Unable to set accelerator partition to {mode}{profile}")
                continue
            if hive.rocm < (6, 4, 0):
                # 6.1-6.3 set_gpu: any library error -> ValueError(...) from e, nothing in-band
                res.error = ChainedError(err.status, f"ValueError: Unable to set compute partition to {mode} {where}")
                break
            if err.status == "AMDSMI_STATUS_NOT_SUPPORTED":
                emit(gpu_id, f"[AMDSMI_STATUS_NOT_SUPPORTED] Unable to set compute partition to {mode}{profile}")
                continue
            if err.status == "AMDSMI_STATUS_SETTING_UNAVAILABLE":
                shown = profile if hive.rocm >= (7, 0, 0) else profile.rstrip(")")
                res.out(
                    f"Attempted to set {noun} partition to {mode}{shown} {where}\n\n"
                    "[AMDSMI_STATUS_SETTING_UNAVAILABLE] Please check amd-smi partition --memory "
                    "--accelerator for available profiles.\n"
                    "Users may need to switch memory partition to another mode in order to enable "
                    "the desired accelerator partition.\n\n")
                final = f"ValueError: [AMDSMI_STATUS_SETTING_UNAVAILABLE] Unable to set {noun} partition to {mode} {where}"
            else:
                final = f"ValueError: Unable to set {noun} partition to {mode} {where}"
            res.error = ChainedError(err.status, final)
            break
        if not active.silent_noop:
            hive.set_compute(dev.gpu, mode)
            res.modified = True
        if v64:
            emit(gpu_id, f"Successfully set accelerator partition to {mode}{profile}")
        else:
            emit(gpu_id, f"Successfully set compute partition to {mode}")
    if combined:
        res.chunks.insert(0, render.dumps(combined) if opts.fmt == "json" else render.csv_text(combined))
    return res


# -- set -M / reset ----------------------------------------------------------------------
def _reload(hive: Hive, active: Active, label: str, total: int, res: Result) -> None:
    hive.reload_driver()
    seconds = active.reload_seconds
    hive.data["reloading_until"] = time.time() + seconds if seconds else 0
    res.chunks.append(Pause(seconds, label, total))
    res.modified = True


def run_set_memory(hive: Hive, opts: Options, active: Active) -> Result:
    res = Result()
    mode = opts.flags["memory_partition"]
    v7, v63 = hive.rocm >= (7, 0, 0), hive.rocm >= (6, 3, 0)
    key = "memory_partition" if hive.rocm >= (6, 3, 2) else "memorypartition"
    devs = opts.devices
    if not hive.root:
        # 7.x set_gpu: NO_PERM -> store and print the GPU's result, then raise PermissionError
        if v7 and devs:
            res.out(block(opts.fmt, devs[0].index, key, NO_PERM))
        res.error = ChainedError("AMDSMI_STATUS_NO_PERM", "PermissionError: Command requires elevation")
        return res
    try:
        hive.check_memory(mode)
    except RuleError as err:
        for dev in devs:
            if err.status == "AMDSMI_STATUS_INVAL":
                # print(f"Valid Memory partition Modes: {caps}\n") before each GPU's result, in
                # every output format (the JSON documents come after it)
                res.out(f"Valid Memory partition Modes: {','.join(hive.memory_caps())}\n\n")
            res.out(block(opts.fmt, dev.index, key, f"[{err.status}] Unable to set memory partition to {mode}"))
        return res
    gpus = sorted({d.gpu for d in hive.devices()})
    changed = gpus if active.partial is None else gpus[: active.partial]
    if v7:  # two-phase: pending until the driver is reloaded
        if not active.silent_noop:
            hive.set_pending_memory(mode, changed)
            res.modified = True
        for dev in devs:
            if dev.gpu not in changed:
                res.error = ChainedError("AMDSMI_STATUS_UNKNOWN_ERROR",
                                         f"ValueError: Unable to set memory partition to {mode} "
                                         f"on GPU ID: {dev.index} BDF:{dev.bdf}")
                break
            res.out(block(opts.fmt, dev.index, key,
                          f"Successfully set memory partition to {mode}, reload driver when ready"))
        return res
    # 6.1-6.4: the library reloads amdgpu itself
    if hive.busy(force=active.busy):
        for dev in devs:
            where = f"on GPU ID: {dev.index} BDF:{dev.bdf}"
            msg = (f"[AMDSMI_STATUS_AMDGPU_RESTART_ERR] Could not successfully restart driver after applying {mode} {where}"
                   if dev.primary else
                   f"[AMDSMI_STATUS_NOT_SUPPORTED] Device does not support setting memory partition to {mode} {where}")
            res.out(block(opts.fmt, dev.index, key, msg))
        return res
    if not active.silent_noop:
        hive.set_pending_memory(mode, changed)
        total = 140 if hive.rocm >= (6, 4, 0) else 40
        if v63:
            _reload(hive, active, "Updating memory partition for gpu 0", total, res)
            res.out("\n\n")
        else:  # 6.1/6.2: the reload runs in the background after the CLI returned
            hive.data["background_reload"] = {"at": time.time() + BACKGROUND_RELOAD_DELAY_S,
                                              "seconds": active.reload_seconds or BACKGROUND_RELOAD_S}
            res.modified = True
    elif v63:
        res.chunks.append(Pause(0, "Updating memory partition for gpu 0", 140))
        res.out("\n\n")
    combined: list[dict[str, int | str]] = []
    for dev in devs:
        if dev.gpu not in changed:
            res.error = ChainedError("AMDSMI_STATUS_UNKNOWN_ERROR",
                                     f"ValueError: Unable to set memory partition to {mode} "
                                     f"on GPU ID: {dev.index} BDF:{dev.bdf}")
            break
        message = f"Successfully set memory partition to {mode}"
        if not v63 and opts.fmt != "human":  # 6.1/6.2: one array for all GPUs
            combined.append({"gpu": dev.index, key: message})
        else:
            res.out(block(opts.fmt, dev.index, key, message))
    if combined:
        res.out(render.dumps(combined) if opts.fmt == "json" else render.csv_text(combined))
    return res


def apply_background_reload(hive: Hive) -> bool:
    """Run the 6.1/6.2 background driver reload once its moment has come (at the start of
    every invocation). It fails silently on a busy GPU, as ``modprobe -r`` would: the mode
    stays pending. Returns whether the state changed."""
    pending = hive.data.get("background_reload")
    if not pending or time.time() < float(pending["at"]):
        return False
    if not hive.busy():
        hive.reload_driver()
        hive.data["reloading_until"] = float(pending["at"]) + float(pending["seconds"])
    hive.data["background_reload"] = None
    return True


def run_reset(hive: Hive, opts: Options, active: Active) -> Result:
    res = Result()
    f = opts.flags
    if f.get("reload_driver"):
        if hive.busy(force=active.busy):
            for dev in opts.devices:
                res.out(block(opts.fmt, dev.index, "reload_driver",
                              "[AMDSMI_STATUS_AMDGPU_RESTART_ERR] Unable to successfully restart driver"))
            return res
        if active.silent_noop:
            res.chunks.append(Pause(0, "Reloading driver for all AMD GPUs", 140))
        else:
            _reload(hive, active, "Reloading driver for all AMD GPUs", 140, res)
        res.out("\n\n")
        for dev in hive.devices():
            res.out(block(opts.fmt, dev.index, "reload_driver", "Successfully reloaded driver"))
        return res
    if not hive.root:
        res.error = ChainedError("AMDSMI_STATUS_NO_PERM", "PermissionError: Command requires elevation")
        return res
    if f.get("compute_partition"):  # 6.1/6.2
        for gpu_id, dev in _targets(opts):
            if hive.busy(dev.gpu, active.busy):
                res.error = ChainedError("AMDSMI_STATUS_BUSY",
                                         f"ValueError: Unable to reset compute partition on GPU ID: {gpu_id} BDF:{dev.bdf}")
                break
            if not active.silent_noop:
                hive.set_compute(dev.gpu, hive.derived_compute(hive.memory_mode(dev.gpu)))
                res.modified = True
            res.out(block(opts.fmt, gpu_id, "computepartition", "Successfully reset compute partition"))
        return res
    if f.get("memory_partition"):
        if not active.silent_noop:
            hive.set_pending_memory(str(hive.spec.default_pair[1]))
            hive.reload_driver()
            res.modified = True
        for dev in opts.devices:
            res.out(block(opts.fmt, dev.index, "memorypartition", "Successfully reset memory partition"))
        return res
    raise CliError("Command 'reset' requires a target argument. Run 'amd-smi reset -h' for more info.", -9)


COMMANDS = {
    "default": run_default,
    "list": run_list,
    "static": run_static,
    "metric": run_metric,
    "partition": run_partition,
    "version": run_version,
    "reset": run_reset,
}

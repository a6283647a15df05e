"""Parsers against every shared amd-smi sample, plus malformed input.

Each fixture file has an entry in FIXTURES: which parser reads it and the key facts it must
give, or the typed error it must raise. A file without an entry fails the suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from partitions.backends.errors import (
    BackendError,
    BackendUnavailable,
    DeviceBusy,
    DeviceNotFound,
    DriverReloadFailed,
    InvalidValue,
    MissingGroups,
    NotSupported,
    ParseError,
    PermissionDenied,
    SettingUnavailable,
)
from partitions.backends.parsing import (
    ConfirmationDeclined,
    build_inventory,
    classify_error,
    parse_default_view,
    parse_list,
    parse_metrics,
    parse_monitor,
    parse_partition,
    parse_set_output,
    parse_static,
    parse_valid_inputs,
    parse_version,
)

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "amd-smi"


def read(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8")


# --- facts ----------------------------------------------------------------------------------

def facts(kind: str, result) -> dict:
    if kind == "list":
        return {"count": len(result), "bdfs": tuple(d.bdf for d in result),
                "partition_ids": tuple(d.partition_id for d in result),
                "renders": tuple(d.render for d in result),
                "distinct_uuids": len({d.uuid for d in result if d.uuid}),
                "hip_ids": tuple(d.hip_id for d in result)}
    if kind == "static":
        return {"count": len(result), "compute": tuple(s.compute_mode for s in result),
                "memory": tuple(s.memory_mode for s in result),
                "partition_ids": tuple(s.partition_id for s in result),
                "market": tuple(s.market_name for s in result),
                "cus": tuple(s.num_compute_units for s in result),
                "vram": tuple(s.vram_mb for s in result),
                "gfx": tuple(s.gfx_target for s in result),
                "device_id": tuple(s.device_id for s in result)}
    if kind == "partition":
        return {"count": len(result), "compute": tuple(s.compute_mode for s in result),
                "memory": tuple(s.memory_mode for s in result),
                "partition_ids": tuple(s.partition_id for s in result),
                "profile_index": tuple(s.profile_index for s in result),
                "caps": tuple(s.memory_caps for s in result),
                "n_profiles": tuple(len(s.profiles) for s in result),
                "active": tuple(tuple(p.accelerator_type for p in s.profiles if p.active) for s in result)}
    if kind in ("metric", "monitor"):
        return {"count": len(result), "power": tuple(m.power_w for m in result),
                "vram_total": tuple(m.vram_total_mb for m in result),
                "vram_used": tuple(m.vram_used_mb for m in result),
                "gfx": tuple(m.gfx_activity for m in result),
                "hotspot": tuple(m.temperature_hotspot_c for m in result),
                "mem_temp": tuple(m.temperature_mem_c for m in result),
                "ecc": tuple((m.ecc_correctable, m.ecc_uncorrectable, m.ecc_deferred) for m in result),
                "xcps": tuple(len(m.gfx_busy_inst) for m in result)}
    if kind == "set":
        return {"count": len(result.entries), "gpus": tuple(e.gpu for e in result.entries),
                "ok": tuple(e.ok for e in result.entries),
                "modes": tuple(sorted({e.mode for e in result.entries})),
                "keys": tuple(sorted({e.key for e in result.entries})),
                "profiles": tuple(sorted({e.profile_index for e in result.entries}, key=str)),
                "statuses": tuple(e.status for e in result.entries),
                "trailing": result.trailing_error, "prompted": result.prompted}
    if kind == "default":
        return {"count": len(result.rows), "tool": result.tool, "rocm": result.rocm,
                "amdgpu": result.amdgpu, "modes": tuple((r.compute_mode, r.memory_mode) for r in result.rows),
                "vram_total": tuple(r.vram_total_mb for r in result.rows),
                "bdfs": tuple(r.bdf for r in result.rows), "power": tuple(r.power_w for r in result.rows)}
    raise AssertionError(kind)


PARSERS = {"list": parse_list, "static": parse_static, "partition": parse_partition,
           "metric": parse_metrics, "monitor": parse_monitor, "set": parse_set_output,
           "default": parse_default_view}

MI300X_SPX_BDFS = ("0000:0c:00.0", "0000:22:00.0", "0000:38:00.0", "0000:5c:00.0",
                   "0000:9f:00.0", "0000:af:00.0", "0000:bf:00.0", "0000:df:00.0")
CPX8 = tuple(f"0000:0c:00.{i}" for i in range(8))
N8 = tuple(range(8))

# file -> (kind, expected facts | exception class, options)
# kinds: parser names above; "error" = classify_error(exit, stdout, stderr) must give the class;
# "version" = parse_version of each transcript part.
FIXTURES: dict[str, tuple] = {
    # list
    "list.MI300X.SPX.8gpu.rocm7x.json": ("list", {"count": 8, "bdfs": MI300X_SPX_BDFS,
                                                  "partition_ids": (0,) * 8, "distinct_uuids": 8}),
    "list.MI300X.SPX.8gpu.rocm7x.csv": ("list", {"count": 8, "bdfs": MI300X_SPX_BDFS,
                                                 "partition_ids": (0,) * 8, "distinct_uuids": 8}),
    "list.MI300X.CPX.gpu0-7.rocm7x.json": ("list", {"count": 8, "bdfs": CPX8, "partition_ids": N8,
                                                    "distinct_uuids": 8, "renders": (None,) * 8}),
    "list-e.MI300X.CPX.gpu0-7.rocm7x.json": ("list", {
        "count": 8, "bdfs": CPX8, "partition_ids": N8, "hip_ids": N8,
        "renders": tuple(f"renderD{128 + i}" for i in range(8))}),
    "list-e.MI300X.CPX.rocm641.txt": ("list", {"count": 2, "bdfs": CPX8[:2], "partition_ids": (0, 1),
                                               "renders": ("renderD128", "renderD129"),
                                               "distinct_uuids": 0, "hip_ids": (0, 1)}),
    "list.MI3xx.rocm63.txt": ("list", {"count": 2, "bdfs": ("0000:23:00.0", "0000:26:00.0"),
                                       "partition_ids": (0, 0)}),
    # static
    "static-asic-vram-partition.MI300X.SPX-NPS1.gpu0-1.rocm7x.json": ("static", {
        "count": 2, "compute": ("SPX", "SPX"), "memory": ("NPS1", "NPS1"), "partition_ids": (0, 0),
        "market": ("AMD Instinct MI300X",) * 2, "cus": (304, 304), "vram": (196592, 196592),
        "gfx": ("gfx942",) * 2, "device_id": ("0x74a1",) * 2}),
    "static-asic-partition.MI300X.CPX-NPS1.gpu0-1.rocm7x.json": ("static", {
        "count": 2, "compute": ("CPX", "CPX"), "memory": ("NPS1", "NPS1"), "partition_ids": (0, 1),
        "cus": (38, 38), "vram": (None, None)}),
    "static-partition.MI300X.CPX-NPS4.gpu0-7.rocm7x.json": ("static", {
        "count": 8, "compute": ("CPX",) * 8, "memory": ("NPS4",) * 8, "partition_ids": N8,
        "market": (None,) * 8}),
    "static-asic-vram-partition.MI355X.SPX-NPS1.gpu0.rocm7x.json": ("static", {
        "count": 1, "market": ("AMD Instinct MI355X",), "cus": (256,), "gfx": ("gfx950",),
        "vram": (294896,), "device_id": ("0x75a3",), "compute": ("SPX",)}),
    "static-partition.MI300X.SPX-NPS1.8gpu.rocm642.json": ("static", {
        "count": 8, "compute": ("SPX",) * 8, "memory": ("NPS1",) * 8, "partition_ids": (0,) * 8}),
    "static-partition.MI300X.SPX-NPS1.rocm642.txt": ("static", {"count": 1, "compute": ("SPX",),
                                                                "memory": ("NPS1",), "partition_ids": (0,)}),
    "static-partition.MI300X.SPX-NPS1.rocm641-and-older.txt": ("static", {
        "count": 1, "compute": ("SPX",), "memory": ("NPS1",), "partition_ids": (0,)}),
    "static-partition.MI300X.CPX-NPS4.rocm63.txt": ("static", {"count": 1, "compute": ("CPX",),
                                                               "memory": ("NPS4",)}),
    "static-partition.MI300X.CPX-NPS4.64gpu.rocm64.txt": ("static", {
        "count": 64, "compute": ("CPX",) * 64, "memory": ("NPS4",) * 64, "partition_ids": N8 * 8}),
    "static-asic.MI308X.CPX.rocm63.txt": ("static", {"count": 1, "market": ("MI308X",), "cus": (20,),
                                                     "device_id": ("0x74a2",), "compute": (None,)}),
    "static.MI300A.SPX-NPS1.rocm71.txt": ("static", {
        "count": 1, "market": ("AMD Instinct MI300A",), "cus": (228,), "vram": (96432,),
        "compute": ("SPX",), "memory": ("NPS1",), "device_id": ("0x74a0",)}),
    # metric / monitor / default view
    "metric.MI300X.SPX.gpu0-1.rocm7x.json": ("metric", {
        "count": 2, "power": (698.0, 142.0), "vram_total": (196592, 196592), "gfx": (97.0, 0.0),
        "hotspot": (71.0, 41.0), "ecc": ((0, 0, 0), (0, 0, 0)), "xcps": (1, 1)}),
    "metric-usage-power-mem.MI300X.CPX-NPS1.gpu0-1.rocm7x.json": ("metric", {
        "count": 2, "power": (201.0, None), "vram_total": (196592, 24574), "gfx": (12.0, None),
        "xcps": (8, 0), "vram_used": (307, 512)}),
    "metric-usage-power-mem.MI355X.SPX.gpu0.rocm7x.json": ("metric", {
        "count": 1, "power": (1105.0,), "vram_total": (294896,), "gfx": (88.0,), "xcps": (1,)}),
    "metric-power-temp-mem.MI300X.SPX.gpu0-1.rocm64.json": ("metric", {
        "count": 2, "power": (133.0, 131.0), "hotspot": (44.0, 42.0), "mem_temp": (36.0, 35.0),
        "vram_total": (196592, 196592), "vram_used": (283, 283), "gfx": (None, None)}),
    "metric-mem-usage.MI300X.SPX.8gpu.rocm7x.csv": ("metric", {
        "count": 8, "vram_total": (196592,) * 8, "vram_used": (171232,) + (283,) * 7, "power": (None,) * 8}),
    "metric-usage.MI300X.CPX.rocm70.txt": ("metric", {"count": 1, "gfx": (0.0,), "xcps": (8,),
                                                      "power": (None,)}),
    "metric-ecc.rocm62.txt": ("metric", {"count": 1, "ecc": ((0, 0, 0),), "power": (None,)}),
    "metric-power.rocm61.json": ("metric", {"count": 1, "power": (10.0,), "vram_total": (None,)}),
    "monitor.MI300X.CPX.rocm641.txt": ("monitor", {
        "count": 9, "power": (202.0,) + (None,) * 7 + (210.0,),
        "vram_total": (196608,) + (24576,) * 7 + (196608,), "hotspot": (46.0,) + (None,) * 7 + (46.0,)}),
    "monitor-power-temp-vram.MI300X.QPX.32gpu.rocm63.txt": ("monitor", {
        "count": 32, "vram_total": (196300,) * 32, "vram_used": (283,) * 32}),
    "default.MI300X.SPX-NPS1.8gpu.rocm70.txt": ("default", {
        "count": 8, "tool": "26.0.0+eaa54ecc", "rocm": "7.0.0", "amdgpu": "6.12.12",
        "modes": (("SPX", "NPS1"),) * 8, "vram_total": (196592,) * 8, "bdfs": MI300X_SPX_BDFS}),
    "default.MI300X.DPX-NPS1.rocm702.partial.txt": ("default", {
        "count": 3, "rocm": "7.0.2", "modes": (("DPX", "NPS1"), (None, None), ("DPX", "NPS1")),
        "vram_total": (196592, 98296, 196592), "power": (142.0, None, 141.0)}),
    "version.rocm64.txt": ("version", None),
    # partition
    "partition.MI300X.SPX-NPS1.8gpu.rocm7x.json": ("partition", {
        "count": 8, "compute": ("SPX",) * 8, "memory": ("NPS1",) * 8, "partition_ids": (0,) * 8,
        "profile_index": (0,) * 8, "caps": (("NPS1", "NPS4"),) * 8, "n_profiles": (4,) * 8,
        "active": (("SPX",),) * 8}),
    "partition.MI300X.CPX-NPS4.gpu0-7.rocm7x.json": ("partition", {
        "count": 8, "compute": ("CPX",) * 8, "memory": ("NPS4",) * 8, "partition_ids": N8,
        "profile_index": (3,) * 8, "n_profiles": (4,) * 8, "active": (("CPX",),) * 8}),
    "partition-current-memory.MI300X.DPX-NPS1.16gpu.rocm7x.json": ("partition", {
        "count": 16, "compute": ("DPX",) * 16, "memory": ("NPS1",) * 16, "partition_ids": (0, 1) * 8,
        "caps": (("NPS1", "NPS4"),) * 16, "n_profiles": (0,) * 16}),
    "partition.MI300X.SPX-NPS1.nonroot.rocm7x.json": ("partition", {
        "count": 8, "compute": ("SPX",) * 8, "partition_ids": (0,) * 8, "n_profiles": (0,) * 8,
        "caps": (("NPS1", "NPS4"),) * 8}),
    "partition.MI355X.DPX-NPS2.gpu0-3.rocm7x.json": ("partition", {
        "count": 4, "compute": ("DPX",) * 4, "memory": ("NPS2",) * 4, "partition_ids": (0, 1, 0, 1),
        "caps": (("NPS1", "NPS2"),) * 4, "active": (("DPX",),) * 4}),
    "partition-current.MI300X.CPX-NPS4.gpu0-15.rocm7x.csv": ("partition", {
        "count": 16, "compute": ("CPX",) * 16, "memory": ("NPS4",) * 16, "partition_ids": N8 * 2,
        "profile_index": (3,) * 16}),
    "partition-current.MI300X.CPX-NPS1.rocm64.txt": ("partition", {
        "count": 11, "compute": ("CPX",) * 11, "memory": ("NPS1",) * 11,
        "partition_ids": N8 + (0, 1, 2)}),
    "partition-current.MI300X.CPX-NPS1.rocm63-array-ids.txt": ("partition", {
        "count": 11, "compute": ("CPX",) * 11, "partition_ids": (0,) + (None,) * 7 + (0, None, None)}),
    "partition-accelerator.nonroot.rocm64.txt": ("partition", {"count": 0}),
    "partition.4gpu.na-fields.rocm63.truncated.txt": ("partition", {
        "count": 4, "compute": (None,) * 4, "memory": ("NPS1",) * 4, "partition_ids": (None,) * 4,
        "caps": ((),) * 4, "n_profiles": (0,) * 4}),
    # the last profile row lacks its RESOURCES_SHARED cell: cut output
    "partition.MI300A.SPX-NPS1.4apu.rocm7x-preview.truncated.txt": ("partition", ParseError),
    # set / reset
    "set-compute-partition.MI300X.CPX.8gpu.rocm64.txt": ("set", {
        "count": 8, "gpus": N8, "ok": (True,) * 8, "modes": ("CPX",), "profiles": (3,),
        "keys": ("accelerator_partition",)}),
    "set-compute-partition.MI300X.SPX.8gpu.rocm64.txt": ("set", {
        "count": 8, "ok": (True,) * 8, "modes": ("SPX",), "profiles": (0,)}),
    "set-compute-partition.MI300X.CPX.8gpu.rocm7x.json": ("set", {
        "count": 8, "gpus": N8, "ok": (True,) * 8, "modes": ("CPX",), "profiles": (3,)}),
    "set-memory-partition.MI300X.NPS1.8gpu.rocm64.txt": ("set", {
        "count": 8, "ok": (True,) * 8, "modes": ("NPS1",), "keys": ("memory_partition",),
        "prompted": True}),
    "set-memory-partition.MI300X.NPS1.rocm63.txt": ("set", {
        "count": 3, "ok": (True,) * 3, "modes": ("NPS1",), "keys": ("memorypartition",)}),
    "set-memory-partition.MI300X.NPS4.8gpu.rocm7x.txt": ("set", {
        "count": 8, "ok": (True,) * 8, "modes": ("NPS4",), "prompted": True}),
    "set-memory-partition.MI300X.NPS4.8gpu.json-mode.rocm7x.txt": ("set", {
        "count": 8, "gpus": N8, "ok": (True,) * 8, "modes": ("NPS4",), "prompted": True}),
    "set-memory-partition.MI300X.NPS4.oserror.rocm64.txt": ("set", {
        "count": 15, "ok": (True,) * 15, "modes": ("NPS4",),
        "trailing": "OSError: [Errno 24] Too many open files"}),
    "set-memory-partition.declined.rocm7x.txt": ("set", ConfirmationDeclined),
    "set-memory-partition.navi.not-supported.rocm70.txt": ("set", NotSupported),
    "set-power-cap.MI300X.DPX.rocm70.txt": ("set", NotSupported),
    "error.set-memory-partition.restart-err.MI300X.rocm632.txt": ("set", DriverReloadFailed),
    # errors: (kind, class, {"exit": n, "stream": "stdout"|"stderr"|"both", "companion": file})
    "error.invalid-gpu.rocm7x.stderr.txt": ("error", DeviceNotFound, {"exit": 1}),
    "error.required-command.json-mode.rocm7x.json": ("error", InvalidValue, {"exit": 0, "stream": "stdout"}),
    "error.set-compute-partition.busy.rocm64.stderr.txt": ("error", DeviceBusy, {"exit": 1}),
    "error.set-compute-partition.invalid-choice.rocm640.stderr.txt": ("error", InvalidValue, {"exit": 2}),
    "error.set-compute-partition.invalid-type-TPX.MI300X.rocm7x.stderr.txt": ("error", InvalidValue, {"exit": 1}),
    "error.set-compute-partition.invalid-type-TPX.MI300X.rocm7x.stdout.txt": ("error", InvalidValue, {
        "exit": 1, "stream": "stdout",
        "companion": "error.set-compute-partition.invalid-type-TPX.MI300X.rocm7x.stderr.txt"}),
    "error.set-compute-partition.no-sudo.rocm64.stderr.txt": ("error", PermissionDenied, {"exit": 1}),
    "error.set-compute-partition.nonroot.rocm7x.stderr.txt": ("error", PermissionDenied, {"exit": 1}),
    "error.set-compute-partition.setting-unavailable.SPX-under-NPS4.rocm64.txt": (
        "error", SettingUnavailable, {"exit": 1, "stream": "both"}),
    "error.set-partition.invalid-parameter.rocm641.txt": ("error", NotSupported, {"exit": 1}),
}

ALL_FILES = sorted(p.name for p in FIX.iterdir() if p.is_file() and p.name != "README.md")


def test_every_fixture_has_an_entry():
    missing = [f for f in ALL_FILES if f not in FIXTURES]
    stale = [f for f in FIXTURES if f not in ALL_FILES]
    assert not missing, f"fixture files without an entry in FIXTURES: {missing}"
    assert not stale, f"FIXTURES entries without a file: {stale}"


@pytest.mark.parametrize("name", ALL_FILES)
def test_fixture(name):
    if name not in FIXTURES:
        pytest.fail(f"{name} has no entry in FIXTURES")
    entry = FIXTURES[name]
    kind, expected = entry[0], entry[1]
    text = read(name)
    if kind == "version":
        return check_version_transcript(text)
    if kind == "error":
        return check_error(name, text, expected, entry[2])
    parser = PARSERS[kind]
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            result = parser(text)
            if kind == "set":
                result.raise_for_errors()
        assert info.value.message
        return
    got = facts(kind, parser(text))
    for key, value in expected.items():
        assert got[key] == value, f"{name}: {key}"


def check_version_transcript(text):
    parts = [p for p in text.split("\n$ ") if p.strip()]
    assert len(parts) == 3
    versions = [parse_version(p.split("\n", 1)[1] if p.startswith("amd-smi") else p) for p in parts]
    for v in versions:
        assert v.tool == "24.7.1+b446d6c-dirty"
        assert v.library == "24.7.2.0"
        assert v.rocm is None
    assert versions[0].amdgpu == "6.10.10" and versions[1].amdgpu == "6.10.10"
    assert versions[2].amdgpu is None  # `-c` prints only the hsmp field
    # driver fields exist only since 6.4.0, so the dev build 24.7.1 counts as 6.4
    assert versions[0].rocm_tuple == (6, 4)


def check_error(name, text, cls, opts):
    stream = opts.get("stream", "stderr")
    stdout = text if stream in ("stdout", "both") else ""
    stderr = text if stream == "stderr" else ""
    if "companion" in opts:
        stderr = read(opts["companion"])
    exc = classify_error(["amd-smi", "set"], opts["exit"], stdout, stderr)
    assert type(exc) is cls, f"{name}: {type(exc).__name__}"
    assert exc.message and exc.message in (stdout + stderr).replace("\n\t", " ") or exc.message
    assert exc.exit_status == opts["exit"]
    assert exc.output


# --- specific facts ---------------------------------------------------------------------------

def test_error_messages_are_the_tools_own():
    exc = classify_error("amd-smi set -C SPX", 1, "", read("error.set-compute-partition.busy.rocm64.stderr.txt"))
    assert "Unable to set accelerator partition to SPX on GPU ID: 0" in exc.message
    assert "AMDSMI_STATUS_BUSY" in exc.message
    exc = classify_error(["amd-smi", "set"], 0, read("error.required-command.json-mode.rocm7x.json"), "")
    assert exc.message.startswith("Command 'set --json' requires a target argument")
    exc = classify_error(["amd-smi", "set"], 1, "", read("error.set-compute-partition.no-sudo.rocm64.stderr.txt"))
    assert exc.message == "PermissionError: Command requires elevation"
    restart = read("error.set-memory-partition.restart-err.MI300X.rocm632.txt")
    exc = classify_error(["amd-smi", "set", "-M", "NPS4"], 0, restart, "")
    assert isinstance(exc, DriverReloadFailed)
    assert "after applying NPS4 on GPU ID: 0 BDF:0000:05:00.0" in exc.message  # wrapped line joined
    exc = classify_error(["amd-smi", "set"], 1, read("set-memory-partition.declined.rocm7x.txt"), "")
    assert isinstance(exc, ConfirmationDeclined)
    assert exc.message == "Confirmation not given. Exiting without setting value"


@pytest.mark.parametrize("stdout,stderr,exit_status,cls", [
    ("", "ERROR: Driver not loaded (amdgpu not found in modules)", 255, BackendUnavailable),
    ("", "", 255, BackendUnavailable),
    ("", "Command 'list' is not supported on the system. Run '--help' for more info. Error code: -7", 1,
     BackendUnavailable),
    ("", "RuntimeError: WARNING: User is missing the following required groups: render, video. "
         "Please add user to these groups.", 1, MissingGroups),  # a PermissionDenied naming the fix
    ("MEMORY_PARTITION: [AMDSMI_STATUS_NO_PERM] Command requires elevation", "PermissionError: Command requires elevation",
     1, PermissionDenied),
    ("", "amdsmi.amdsmi_exception.AmdSmiLibraryException: Error code:\n\t55 | AMDSMI_STATUS_SETTING_UNAVAILABLE - "
         "Setting is not available", 1, SettingUnavailable),
    ("GPU: 0\n    RELOAD_DRIVER: [AMDSMI_STATUS_AMDGPU_RESTART_ERR] Unable to successfully restart driver", "", 0,
     DriverReloadFailed),
    ("", "amdsmi.amdsmi_exception.AmdSmiLibraryException: Error code:\n\t54 | AMDSMI_STATUS_AMDGPU_RESTART_ERR", 1,
     DriverReloadFailed),
    ("Valid Memory partition Modes: NPS1,NPS4\nGPU: 0\n    MEMORY_PARTITION: [AMDSMI_STATUS_INVAL] Unable to set "
     "memory partition to NPS2", "", 0, InvalidValue),
    ('{"error": "Can not find a device: GPU \'9\'", "code": -3}', "", 0, DeviceNotFound),
    ("error,code\r\nCommand 'set --csv' requires a target argument., -9\r\n", "", 0, InvalidValue),
    ("", "usage: amd-smi set ...\namd-smi set: error: argument -M/--memory-partition: invalid choice: 'NPS3'", 2,
     InvalidValue),
    ("", "Traceback? no: something odd happened", 1, BackendError),
    ("", "sudo: a password is required", 1, PermissionDenied),
])
def test_classify_error_table(stdout, stderr, exit_status, cls):
    exc = classify_error(["amd-smi", "x"], exit_status, stdout, stderr)
    assert type(exc) is cls
    assert exc.message


def test_classify_error_none_when_clean():
    assert classify_error(["amd-smi", "list"], 0, read("list.MI300X.SPX.8gpu.rocm7x.json"), "") is None
    assert classify_error(["amd-smi", "set"], 0, read("set-compute-partition.MI300X.CPX.8gpu.rocm7x.json"), "") is None


def test_truncated_mi300a_table_without_its_cut_row():
    text = read("partition.MI300A.SPX-NPS1.4apu.rocm7x-preview.truncated.txt")
    lines = text.rstrip("\n").splitlines()
    states = parse_partition("\n".join(lines[:-1]) + "\n")
    assert [s.compute_mode for s in states] == ["SPX"] * 4
    assert [s.memory_mode for s in states] == ["NPS1"] * 4
    assert all(s.memory_caps == () for s in states)  # MI300A: caps N/A, NPS not switchable


def test_partition_profiles_and_resources():
    states = parse_partition(read("partition.MI300X.CPX-NPS4.gpu0-7.rocm7x.json"))
    profiles = states[0].profiles
    assert [p.accelerator_type for p in profiles] == ["SPX", "DPX", "QPX", "CPX"]
    assert [p.active for p in profiles] == [False, False, False, True]
    assert profiles[0].resources["XCC"] == 8
    assert profiles[3].num_partitions == 8
    assert profiles[2].memory_caps == ("NPS1", "NPS4")


def test_valid_inputs():
    text = read("error.set-compute-partition.invalid-type-TPX.MI300X.rocm7x.stdout.txt")
    assert parse_valid_inputs(text) == ("SPX", "DPX", "QPX", "CPX", "0", "1", "2", "3")


# --- inventory ----------------------------------------------------------------------------------

def test_inventory_spx_node():
    inv = build_inventory(list_out=read("list.MI300X.SPX.8gpu.rocm7x.json"),
                          partition_out=read("partition.MI300X.SPX-NPS1.8gpu.rocm7x.json"),
                          metric_out=read("metric-mem-usage.MI300X.SPX.8gpu.rocm7x.csv"))
    assert len(inv.gpus) == 8
    assert [g.bdf for g in inv.gpus] == list(MI300X_SPX_BDFS)
    g = inv.gpus[0]
    assert (g.compute_mode, g.memory_mode, g.memory_caps) == ("SPX", "NPS1", ("NPS1", "NPS4"))
    assert g.market_name is None and g.gpu_model is None  # no static output given
    assert g.partitions[0].memory_mb == 196592
    assert inv.version is None
    js = inv.to_json()
    assert js["gpus"][0]["partitions"][0]["memory_gb"] == 191.98


def test_inventory_cpx_gpu_groups_by_bdf():
    inv = build_inventory(list_out=read("list-e.MI300X.CPX.gpu0-7.rocm7x.json"),
                          partition_out=read("partition.MI300X.CPX-NPS4.gpu0-7.rocm7x.json"),
                          static_out=read("static-partition.MI300X.CPX-NPS4.gpu0-7.rocm7x.json"))
    assert len(inv.gpus) == 1
    gpu = inv.gpus[0]
    assert [p.partition_id for p in gpu.partitions] == list(range(8))
    assert [p.render_node for p in gpu.partitions] == [f"renderD{128 + i}" for i in range(8)]
    assert gpu.compute_mode == "CPX" and gpu.memory_mode == "NPS4"
    assert len(gpu.profiles) == 4
    assert gpu.bdf == "0000:0c:00.0"


def test_inventory_model_from_market_name():
    inv = build_inventory(static_out=read("static-asic-vram-partition.MI355X.SPX-NPS1.gpu0.rocm7x.json"),
                          metric_out=read("metric-usage-power-mem.MI355X.SPX.gpu0.rocm7x.json"))
    g = inv.gpus[0]
    assert (g.gpu_model, g.market_name, g.gfx_target, g.compute_units, g.vram_mb) == (
        "MI355X", "AMD Instinct MI355X", "gfx950", 256, 294896)
    inv = build_inventory(static_out=read("static-asic.MI308X.CPX.rocm63.txt"))
    assert inv.gpus[0].gpu_model == "MI308X"


def test_inventory_unknown_model_is_visible_not_fatal():
    text = read("static-asic-vram-partition.MI355X.SPX-NPS1.gpu0.rocm7x.json").replace(
        "AMD Instinct MI355X", "AMD Instinct MI999Z")
    g = build_inventory(static_out=text).gpus[0]
    assert g.gpu_model is None and g.market_name == "AMD Instinct MI999Z"


def test_inventory_without_bdf_uses_partition_ids():
    inv = build_inventory(static_out=read("static-partition.MI300X.CPX-NPS4.64gpu.rocm64.txt"))
    assert len(inv.gpus) == 8
    assert all(len(g.partitions) == 8 for g in inv.gpus)
    assert inv.gpus[1].partitions[0].logical_index == 8


def test_inventory_without_bdf_63_array_ids():
    inv = build_inventory(partition_out=read("partition-current.MI300X.CPX-NPS1.rocm63-array-ids.txt"))
    assert [len(g.partitions) for g in inv.gpus] == [8, 3]
    assert [p.partition_id for p in inv.gpus[0].partitions] == list(range(8))
    inv = build_inventory(partition_out=read("partition.4gpu.na-fields.rocm63.truncated.txt"))
    assert len(inv.gpus) == 4  # nothing says they are partitions: one GPU each


def test_inventory_secondary_partition_memory():
    inv = build_inventory(
        list_out=read("list.MI300X.CPX.gpu0-7.rocm7x.json"),
        metric_out=read("metric-usage-power-mem.MI300X.CPX-NPS1.gpu0-1.rocm7x.json"),
        static_out=read("static-asic-partition.MI300X.CPX-NPS1.gpu0-1.rocm7x.json"))
    g = inv.gpus[0]
    assert [p.memory_mb for p in g.partitions[:2]] == [196592, 24574]
    assert g.partitions[2].memory_mb is None
    assert g.vram_mb == 196592
    assert g.gpu_model == "MI300X"
    assert g.compute_units is None  # CU count of partitions 2..7 unknown


def test_inventory_outputs_that_disagree():
    with pytest.raises(ParseError, match="not in list"):
        build_inventory(list_out=read("list.MI300X.CPX.gpu0-7.rocm7x.json"),
                        partition_out=read("partition-current-memory.MI300X.DPX-NPS1.16gpu.rocm7x.json"))
    with pytest.raises(ParseError, match="outputs disagree"):
        build_inventory(list_out=read("list.MI300X.CPX.gpu0-7.rocm7x.json"),
                        static_out=read("static-partition.MI300X.SPX-NPS1.8gpu.rocm642.json"))


def test_inventory_version_text():
    inv = build_inventory(list_out=read("list.MI3xx.rocm63.txt"),
                          version_out="AMDSMI Tool: 26.0.2+39589fda | AMDSMI Library version: 26.0.2 | "
                                      "ROCm version: 7.0.2 | amdgpu version: 6.14.14 | amd_hsmp version: N/A\n")
    assert inv.version.rocm_tuple == (7, 0, 2)
    assert len(inv.gpus) == 2


# --- malformed input ----------------------------------------------------------------------------

BAD = [
    (parse_list, "", "printed nothing"),
    (parse_list, "[\n    {\n        \"gpu\": 0,\n        \"bdf\": \"0000:0c:00.0\",\n", "truncated"),
    (parse_list, "Segmentation fault (core dumped)\n", "list"),
    (parse_list, "\x00\xff garbage \x01", "list"),
    (parse_list, '[{"gpu": 0, "bdf": "0000:0c:00.0"}]\n[{"gpu": 1, "bdf": "0000:22:00.0"}]', "one JSON document"),
    (parse_list, '[{"gpu": 0, "bdf": "zz:0c"}]', "malformed BDF"),
    (parse_list, '[{"gpu": 0, "bdf": "0000:0c:00.0"}, {"gpu": 0, "bdf": "0000:22:00.0"}]', "reported twice"),
    (parse_list, '{"gpus": []}', "unexpected JSON structure"),
    (parse_list, '[{"gpu": 0, "asic": {"market_name": "x"}}]', "without 'bdf'"),
    (parse_list, "gpu,gpu_bdf,gpu_uuid\r\n0,0000:0c:00.0\r\n", "CSV row has 2 cells"),
    (parse_static, '{"gpu_data": [{"gpu": 0, "partition": {"compute_partition": "SPX"}}, '
                   '{"gpu": 1, "partition": {"accelerator_partition": "SPX"}}]}', "mixed versions"),
    (parse_static, '[{"gpu": 0, "partition": {"accelerator_partition": "XPX", "memory_partition": "NPS1"}}]',
     "not one of"),
    (parse_static, '[{"gpu": 0, "vram": {"size": {"value": 5, "unit": "W"}}}]', "unit"),
    (parse_static, '{"gpu_data": [], "surprise": 1}', "unexpected JSON structure"),
    (parse_static, '[{"gpu": 0, "foo": 1}]', "static sections"),
    (parse_partition, '{"current_partition": [], "bogus": []}', "unexpected key"),
    (parse_partition, '{"current_partition": [{"gpu_id": 0, "memory": "NPS1", "accelerator_type": "SPX", '
                      '"accelerator_profile_index": 0, "partition_id": "x"}]}', "not an integer"),
    (parse_partition, '{"current_partition": [{"gpu_id": 0, "memory": "NPS4", "accelerator_type": "SPX", '
                      '"accelerator_profile_index": 0, "partition_id": "0"}], "memory_partition": '
                      '[{"gpu_id": 0, "memory_partition_caps": "NPS1", "current_memory_partition": "NPS1"}]}',
     "mixed outputs"),
    (parse_partition, "CURRENT_PARTITION:\nGPU_ID  MEMORY  ACCELERATOR_TYPE\n0  NPS1  SPX\nhello world\n",
     "cut short"),
    (parse_partition, "CURRENT_PARTITION:\nGPU_ID  MEMORY  ACCELERATOR_TYPE\n0  NPS1  SPX\n\nhello world\n",
     "unexpected line"),
    (parse_metrics, '{"gpu_data": [{"gpu": 0, "power": {"socket_power": {"value": 5, "unit": "MB"}}}]}', "unit"),
    (parse_metrics, '{"gpu_data": [{"gpu": 0, "power": {"socket_power": "lots"}}]}', "not a number"),
    (parse_metrics, '[{"gpu": 0, "bdf": "0000:0c:00.0"}]', "metric sections"),
    (parse_metrics, '[{"gpu": 0, "usage": {"gfx_busy_inst": {"xcc_0": [1]}}}]', "gfx_busy_inst"),
    (parse_set_output, "GPU: 0\n    ACCELERATOR_PARTITION: Successfully set\nwhat is this\n", "unexpected line"),
    (parse_set_output, '[{"gpu": 0, "accelerator_partition": "Successfully set accelerator partition to CPX"}]\n[{"gpu": 1',
     "truncated"),
    (parse_set_output, "Do you accept these terms? [Y/N] y\n", "no per-GPU result"),
    (parse_set_output, "[{\"gpu\": 0, \"accelerator_partition\": 5}]", "not a message"),
    (parse_version, "hello", "no 'AMDSMI Tool' line"),
    (parse_version, "AMDSMI Tool: 26.0.0+x | AMDSMI Library version: 26.0.0 | ROCm version: 7.0.0\n"
                    "AMDSMI Tool: 25.3.0+y | AMDSMI Library version: 25.3.0 | ROCm version: 6.4.0\n", "mixed versions"),
    (parse_version, "AMDSMI Tool: abc | AMDSMI Library version: 26.0.0", "no tool version"),
]


@pytest.mark.parametrize("parser,text,needle", BAD)
def test_bad_input_raises_parse_error(parser, text, needle):
    with pytest.raises(ParseError) as info:
        parser(text)
    assert needle in str(info.value)
    assert info.value.command[:1] == ["amd-smi"]


def test_parse_error_quotes_truncated_text():
    text = "x" * 1000
    with pytest.raises(ParseError) as info:
        parse_list(text)
    assert "xxxx" in info.value.message
    assert len(info.value.message) < 320


def test_json_error_object_with_exit_zero_is_typed():
    with pytest.raises(InvalidValue):
        parse_list('{"error": "Command \'list\' requires a target argument.", "code": -9}\n')
    with pytest.raises(DeviceNotFound):
        parse_static('{"error": "Can not find a device: GPU \'9\'", "code": -3}')
    with pytest.raises(NotSupported):
        parse_set_output('{"error": "Command \'set\' is not supported", "code": -7}')


def test_partition_64_back_to_back_documents_and_trailing_text():
    full = json.loads(read("partition.MI300X.SPX-NPS1.8gpu.rocm7x.json"))
    docs = "\n".join(json.dumps({k: v}, indent=4) for k, v in full.items())
    assert len(parse_partition(docs)) == 8  # 6.3: one document per section
    lists = "\n".join(json.dumps(v, indent=4) for v in full.values())
    assert len(parse_partition(lists)) == 8  # sections as bare arrays
    trailing = json.dumps(full, indent=4) + "\n\nLegend:\n* = Current mode\n"
    assert [s.compute_mode for s in parse_partition(trailing)] == ["SPX"] * 8  # 6.4 stray text
    with pytest.raises(ParseError, match="printed twice"):
        parse_partition(docs + "\n" + json.dumps({"current_partition": full["current_partition"]}))


def test_envelopes_with_cpu_and_core_data():
    rows = json.loads(read("static-partition.MI300X.SPX-NPS1.8gpu.rocm642.json"))
    text = json.dumps({"cpu_data": [], "core_data": [], "gpu_data": rows})
    assert len(parse_static(text)) == 8


def test_units_are_converted():
    text = json.dumps([{"gpu": 0, "mem_usage": {"total_vram": {"value": 192, "unit": "GB"},
                                               "used_vram": {"value": 1048576, "unit": "B"}},
                        "power": {"socket_power": {"value": 750000, "unit": "mW"}},
                        "temperature": {"hotspot": {"value": 50, "unit": "\u00b0C"}, "mem": "N/A"},
                        "usage": "N/A"}])
    (m,) = parse_metrics(text)
    assert (m.vram_total_mb, m.vram_used_mb, m.power_w, m.temperature_hotspot_c, m.temperature_mem_c) == (
        196608, 1, 750.0, 50.0, None)


def test_string_and_int_partition_ids():
    text = json.dumps({"current_partition": [
        {"gpu_id": 0, "memory": "NPS1", "accelerator_type": "DPX", "accelerator_profile_index": 1, "partition_id": 0},
        {"gpu_id": 1, "memory": "NPS1", "accelerator_type": "DPX", "accelerator_profile_index": 1, "partition_id": "1"},
    ]})
    assert [s.partition_id for s in parse_partition(text)] == [0, 1]

"""Map what amd-smi printed (texts, exit status) to the typed errors of errors.py."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from partitions.backends.errors import (
    BackendError,
    BackendUnavailable,
    ConfirmationDeclined,
    DeviceBusy,
    DeviceNotFound,
    DriverReloadFailed,
    InvalidValue,
    MissingGroups,
    NotSupported,
    PermissionDenied,
    SettingUnavailable,
)

_CLI_CODE = re.compile(r"Error code:\s*(-\d+)")
_STATUS = re.compile(r"AMDSMI_STATUS_([A-Z_]+)")

# (error class, pattern over the combined text, CLI codes, library status names); first match wins.
_RULES: list[tuple[type[BackendError], re.Pattern[str], set[int], set[str]]] = [
    (BackendUnavailable,
     re.compile(r"Driver not loaded|amdgpu not found in modules|is not supported on the system"),
     set(), {"DRIVER_NOT_LOADED", "NOT_INIT"}),
    (MissingGroups, re.compile(r"missing the following required groups"), set(), set()),
    (PermissionDenied,
     re.compile(r"requires elevation|PermissionError|"
                r"Permission denied|AmdSmiPermissionDeniedException|"
                r"sudo: a password is required|sudo: a terminal is required"),
     {-11}, {"NO_PERM"}),
    (DriverReloadFailed,
     re.compile(r"Unable to successfully restart driver|Could not successfully restart|"
                r"AMDGPU restart failed"),
     set(), {"AMDGPU_RESTART_ERR"}),
    (DeviceBusy, re.compile(r"Device busy"), set(), {"BUSY"}),
    (SettingUnavailable, re.compile(r"Setting is not available"), set(), {"SETTING_UNAVAILABLE"}),
    (ConfirmationDeclined, re.compile(r"Confirmation not given"), set(), set()),
    (DeviceNotFound, re.compile(r"AmdSmiDeviceNotFoundException|Can not find a device"), {-3}, set()),
    (NotSupported,
     re.compile(r"Parameter '[^']*' is invalid|Feature not supported"),
     {-2, -7}, {"NOT_SUPPORTED"}),
    (InvalidValue,
     re.compile(r"invalid choice|is not of valid type or format|Invalid parameters|Valid inputs are|"
                r"requires a target argument|\berror: argument\b"),
     {-1, -5, -6, -9, -10}, {"INVAL"}),
]
_LIB_CODES = {1: "INVAL", 2: "NOT_SUPPORTED", 10: "NO_PERM", 30: "BUSY", 34: "DRIVER_NOT_LOADED",
              54: "AMDGPU_RESTART_ERR", 55: "SETTING_UNAVAILABLE"}
_LIB_CODE = re.compile(r"^\s*(\d+)\s*\|\s*AMDSMI_STATUS_", re.M)


def _argv(command: str | Sequence[str] | None) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return command.split()
    return [str(c) for c in command]


def _json_errors(stdout: str) -> list[tuple[str, int | None]]:
    """``{"error": "...", "code": -9}`` lines (JSON mode) and ``error,code`` CSV errors."""
    found: list[tuple[str, int | None]] = []
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith('{"error"'):
            try:
                doc = json.loads(s)
            except ValueError:
                continue
            if isinstance(doc, dict) and "error" in doc:
                code = doc.get("code")
                found.append((str(doc["error"]), code if isinstance(code, int) else None))
        elif s == "error,code" and i + 1 < len(lines):
            msg, _, code = lines[i + 1].rpartition(",")
            try:
                found.append((msg.strip(), int(code.strip())))
            except ValueError:
                found.append((lines[i + 1].strip(), None))
    return found


def _line_with(text: str, pattern: re.Pattern[str] | None, names: set[str], codes: set[int]) -> str | None:
    """The (last) line of ``text`` carrying the signal, with its wrapped continuation lines."""
    lines = text.splitlines()
    hit = None
    for i, line in enumerate(lines):
        if (pattern is not None and pattern.search(line)) or any(
                f"AMDSMI_STATUS_{n}" in line for n in names) or any(
                re.search(rf"Error code:\s*{c}\b", line) for c in codes):
            hit = i
    if hit is None:
        return None
    out = lines[hit].strip()
    indent = len(lines[hit]) - len(lines[hit].lstrip())
    for nxt in lines[hit + 1:]:
        nind = len(nxt) - len(nxt.lstrip())
        if nxt.strip() and nind > indent and not re.match(r"^\s*[A-Z_]+:", nxt):
            out += " " + nxt.strip()
        else:
            break
    return out


def _final_exception_line(stderr: str) -> str | None:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception):", line):
            return line
    return lines[-1] if lines else None


def classify_error(command: str | Sequence[str] | None, exit_status: int | None,
                   stdout: str | None, stderr: str | None) -> BackendError | None:
    """The typed error amd-smi reported, or None when it reported none.

    Looks at the exit status (255: driver not loaded; 2: argparse), JSON/CSV-mode error
    objects, CLI exception codes (``Error code: -3``), library status names/numbers
    (``AMDSMI_STATUS_BUSY``, ``30 | ...``) and known messages, in stdout too: many errors
    are printed there with exit status 0. The error carries the tool's own message.
    """
    stdout = stdout or ""
    stderr = stderr or ""
    argv = _argv(command)
    combined = f"{stderr}\n{stdout}"
    json_errs = _json_errors(stdout)
    codes = {int(c) for c in _CLI_CODE.findall(combined)} | {c for _, c in json_errs if c is not None}
    statuses = set(_STATUS.findall(combined)) | {
        _LIB_CODES[int(n)] for n in _LIB_CODE.findall(combined) if int(n) in _LIB_CODES}
    json_text = "\n".join(m for m, _ in json_errs)

    chosen: type[BackendError] | None = None
    signal: tuple[re.Pattern[str] | None, set[str], set[int]] = (None, set(), set())
    if exit_status == 255:
        chosen = BackendUnavailable
    for cls, pattern, rule_codes, rule_statuses in _RULES:
        if chosen is not None:
            break
        if pattern.search(combined) or codes & rule_codes or statuses & rule_statuses:
            chosen = cls
            signal = (pattern, rule_statuses, rule_codes & codes)
    if chosen is None:
        if exit_status == 2:
            chosen = InvalidValue
        elif exit_status not in (0, None) or statuses or codes or json_errs:
            chosen = BackendError
        else:
            return None

    # the tool's own message: JSON error text, else the final exception line (with the
    # line carrying the status when that is a different one), else the matching line.
    final = _final_exception_line(stderr)
    matched = (_line_with(stderr, *signal) or _line_with(stdout, *signal)) if signal[0] or signal[1] or signal[2] else None
    if json_errs:
        message = json_text
    elif final and matched and matched not in final and final not in matched:
        message = f"{final} ({matched})"
    else:
        message = final or matched or (stdout.strip().splitlines() or [""])[-1]
    message = re.sub(r"^.*\[Y/N\]\s*", "", message)
    if not message:
        message = f"amd-smi exited with status {exit_status}"
    if chosen is MissingGroups:
        message = f"{message} Fix: {MissingGroups.hint}"
    return chosen(message, command=argv, output=(stdout + ("\n" + stderr if stderr else "")).strip(),
                  exit_status=exit_status)

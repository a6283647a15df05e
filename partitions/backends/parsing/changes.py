"""Results of ``set -C``, ``set -M``, ``reset -r`` (JSON arrays per GPU or human blocks, with
the warning banner, the [Y/N] prompt and progress bars around them), ``Valid inputs are``
lists, and the human-only default view."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from partitions.backends.errors import BackendError, ParseError
from partitions.backends.parsing.classify import ConfirmationDeclined, classify_error
from partitions.backends.parsing.common import error_document, fail, is_na, json_documents

_GPU_LINE = re.compile(r"^\s*GPU:\s*(\d+)\b(.*)$")
_RESULT_LINE = re.compile(r"^\s*([A-Z][A-Z_]*[A-Z]):\s*(.*\S)\s*$")
_STATUS = re.compile(r"\[(AMDSMI_STATUS_[A-Z_]+)\]")
_MODE_IN_MSG = re.compile(r"\bto\s+([A-Z]{3}\d?|NPS\d)\b")
_PROFILE_IN_MSG = re.compile(r"profile #(\d+)")
_EXC_LINE = re.compile(r"^([\w.]+(?:Error|Exception)):\s*(.*)$")
_PROMPT = re.compile(r"Do you accept these terms\? \[Y/N\]\s*(\S*)")
# 7.1+ set -M on AMDSMI_STATUS_INVAL: print(f"Valid Memory partition Modes: {caps}\n") before
# each GPU's result, whatever the output format (so between the JSON documents too)
_VALID_MODES = re.compile(r"^[ \t]*Valid Memory partition Modes:[ \t]*(?P<modes>\S*)[ \t]*\r?\n?", re.M)


@dataclass(frozen=True)
class SetEntry:
    """One per-GPU line of a set/reset result."""

    gpu: int
    key: str  # "accelerator_partition", "memory_partition", "reload_driver", ...
    message: str
    ok: bool
    status: str | None = None  # "AMDSMI_STATUS_NOT_SUPPORTED"
    mode: str | None = None  # "CPX" / "NPS4" when the message names one
    profile_index: int | None = None


@dataclass(frozen=True)
class SetResult:
    command: str
    entries: tuple[SetEntry, ...]
    trailing_error: str | None = None  # e.g. "OSError: [Errno 24] Too many open files"
    prompted: bool = False
    answer: str | None = None  # what the transcript shows after the prompt, if anything

    @property
    def failed(self) -> tuple[SetEntry, ...]:
        return tuple(e for e in self.entries if not e.ok)

    @property
    def succeeded(self) -> tuple[SetEntry, ...]:
        return tuple(e for e in self.entries if e.ok)

    def error_for(self, entry: SetEntry) -> BackendError:
        exc = classify_error(["amd-smi", *self.command.split()], 0, entry.message, "")
        if exc is None:
            exc = BackendError(entry.message, command=["amd-smi", *self.command.split()],
                               output=entry.message)
        return exc

    def raise_for_errors(self) -> None:
        """Raise the typed error of the first failed GPU (driver-restart failures first)."""
        failed = self.failed
        if not failed:
            return
        restart = [e for e in failed if e.status == "AMDSMI_STATUS_AMDGPU_RESTART_ERR"]
        raise self.error_for((restart or list(failed))[0])


def _entry(gpu: int, key: str, message: str) -> SetEntry:
    message = " ".join(message.split())
    status = _STATUS.search(message)
    mode = _MODE_IN_MSG.search(message)
    prof = _PROFILE_IN_MSG.search(message)
    return SetEntry(gpu=gpu, key=key.lower(), message=message,
                    ok=message.startswith("Successfully") and status is None,
                    status=status.group(1) if status else None,
                    mode=mode.group(1) if mode else None,
                    profile_index=int(prof.group(1)) if prof else None)


def parse_set_output(text: str, command: str = "set") -> SetResult:
    """Parse what ``set -C``/``set -M``/``reset -r`` printed on stdout (JSON or human).

    Raises :class:`ConfirmationDeclined` when the prompt was declined, the typed error for a
    JSON-mode error object, and :class:`ParseError` for output with no per-GPU result.
    Per-GPU failures do not raise here: see :meth:`SetResult.raise_for_errors`."""
    if not isinstance(text, str) or not text.strip():
        raise fail(command, "printed nothing", text)
    prompt = _PROMPT.search(text)
    valid_modes = [m.group("modes") for m in _VALID_MODES.finditer(text)]
    if valid_modes:
        text = _VALID_MODES.sub("", text)
    if "Confirmation not given" in text:
        raise ConfirmationDeclined("Confirmation not given. Exiting without setting value",
                                   command=["amd-smi", *command.split()], output=text, exit_status=1)
    docs, _, trailing = json_documents(text, command, allow_prefix=True, allow_trailing=True)
    if docs:
        entries = []
        for doc in docs:
            err = error_document(doc)
            if err:
                error = classify_error(["amd-smi", *command.split()], 0, text, "")
                raise error if error is not None else fail(command, "tool error", err[0], text)
            rows = doc if isinstance(doc, list) else [doc]
            for row in rows:
                if not isinstance(row, dict) or "gpu" not in row or len(row) < 2:
                    raise fail(command, "unexpected JSON structure", row, text)
                gpu = row["gpu"]
                if not isinstance(gpu, int):
                    raise fail(command, "gpu is not an integer", row, text)
                for key, value in row.items():
                    if key == "gpu":
                        continue
                    if not isinstance(value, str):
                        raise fail(command, f"{key!r} is not a message", row, text)
                    entries.append(_entry(gpu, key, value))
        trailing_error = None
        if trailing.strip():
            exc = [ln.strip() for ln in trailing.splitlines() if _EXC_LINE.match(ln.strip())]
            if not exc:
                raise fail(command, "unexpected text after the JSON output", trailing, text)
            trailing_error = exc[-1]
        return _with_valid_modes(SetResult(command, tuple(entries), trailing_error, bool(prompt),
                                           prompt.group(1) or None if prompt else None), valid_modes)
    return _with_valid_modes(_parse_set_human(text, command, prompt), valid_modes)


def _with_valid_modes(result: SetResult, valid_modes: list[str]) -> SetResult:
    """Name the valid memory modes the tool printed in the message of an INVAL failure."""
    if not valid_modes or not valid_modes[-1]:
        return result
    entries = tuple(
        replace(e, message=f"{e.message} (valid memory partition modes: {valid_modes[-1]})")
        if e.status == "AMDSMI_STATUS_INVAL" else e
        for e in result.entries)
    return replace(result, entries=entries)


@dataclass
class _ResultLine:
    """One ``KEY: message`` result line of a GPU block (the message may wrap onto further lines)."""

    gpu: int
    key: str
    message: str
    indent: int


def _parse_set_human(text: str, command: str, prompt: re.Match[str] | None) -> SetResult:
    entries: list[_ResultLine] = []
    gpu: int | None = None
    trailing_error = None
    for raw in text.splitlines():
        line = raw.rstrip()
        s = line.strip()
        if not s or s == "...":
            continue
        m = _GPU_LINE.match(line)
        if m:
            gpu = int(m.group(1))
            continue
        if gpu is None:
            continue  # banner, prompt, progress bar before the first GPU block
        exc = _EXC_LINE.match(s)
        if exc and not line.startswith((" ", "\t")):
            trailing_error = s
            continue
        if "secs remain" in s:
            continue
        r = _RESULT_LINE.match(line)
        if r:
            entries.append(_ResultLine(gpu, r.group(1), r.group(2), len(line) - len(line.lstrip())))
            continue
        if entries and entries[-1].gpu == gpu and len(line) - len(line.lstrip()) > entries[-1].indent:
            entries[-1].message += " " + s  # message wrapped over two lines
            continue
        raise fail(command, "unexpected line in the result", line, text)
    if not entries:
        if trailing_error:
            raise ParseError(f"amd-smi {command}: {trailing_error}",
                             command=["amd-smi", *command.split()], output=text)
        raise fail(command, "no per-GPU result", text, text)
    return SetResult(command, tuple(_entry(e.gpu, e.key, e.message) for e in entries), trailing_error,
                     bool(prompt), prompt.group(1) or None if prompt else None)


def parse_valid_inputs(text: str) -> tuple[str, ...]:
    """``Valid inputs are SPX, DPX, QPX, CPX, 0, 1, 2, 3`` (7.x ``set -C`` with a bad token)."""
    m = re.search(r"Valid inputs are\s+(.+)", text or "")
    if not m:
        raise fail("set", "no 'Valid inputs are' line", text)
    return tuple(t.strip() for t in m.group(1).split(",") if t.strip())


# --- default view (human only) -------------------------------------------------------------

@dataclass(frozen=True)
class DefaultViewRow:
    logical_index: int
    bdf: str
    market_name: str
    hip_id: int | None
    oam_id: int | None
    compute_mode: str | None
    memory_mode: str | None
    vram_used_mb: int | None
    vram_total_mb: int | None
    power_w: float | None
    temperature_c: float | None


@dataclass(frozen=True)
class DefaultView:
    tool: str | None
    rocm: str | None
    amdgpu: str | None
    rows: tuple[DefaultViewRow, ...]


_DV_HEAD = re.compile(r"AMD-SMI\s+(\S+)\s+amdgpu version:\s*(.*?)\s+ROCm version:\s*(\S+)")
_DV_ROW1 = re.compile(r"^\|\s*([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\s+(.+?)\s*\|\s*(\S+(?: %)?)\s+"
                      r"(N/A|\d+ °C)\s+(\S+)\s+(N/A|\d+/\d+ W)\s*\|$")
_DV_ROW2 = re.compile(r"^\|\s*(\d+)\s+(\d+|N/A)\s+(\d+|N/A)\s+(N/A|[A-Z]PX/NPS\d)\s*\|\s*(\S+(?: %)?)\s+"
                      r"(\S+)\s+(N/A|\d+/\d+ MB)\s*\|$")


def _opt_int(v: str) -> int | None:
    return None if is_na(v) else int(v)


def parse_default_view(text: str) -> DefaultView:
    """``amd-smi`` with no subcommand (7.0+ table view): per logical device BDF, name, mode."""
    command = "default"
    if not isinstance(text, str) or not text.strip():
        raise fail(command, "printed nothing", text)
    head = _DV_HEAD.search(text)
    lines = [ln.rstrip() for ln in text.splitlines()]
    rows: list[DefaultViewRow] = []
    i = 0
    while i < len(lines):
        m1 = _DV_ROW1.match(lines[i])
        if lines[i].startswith("| 0000:") and not m1:
            raise fail(command, "malformed device row", lines[i], text)
        if m1:
            if i + 1 >= len(lines) or not _DV_ROW2.match(lines[i + 1]):
                raise fail(command, "device row without its second line (truncated?)",
                           "\n".join(lines[i:i + 2]), text)
            m2 = _DV_ROW2.match(lines[i + 1])
            assert m2 is not None
            mode = m2.group(4)
            compute, memory = mode.split("/") if not is_na(mode) else (None, None)
            mem = m2.group(7)
            used, total = (int(x) for x in mem.split()[0].split("/")) if not is_na(mem) else (None, None)
            power = m1.group(6)
            rows.append(DefaultViewRow(
                logical_index=int(m2.group(1)), bdf=m1.group(1), market_name=m1.group(2),
                hip_id=_opt_int(m2.group(2)), oam_id=_opt_int(m2.group(3)),
                compute_mode=compute, memory_mode=memory, vram_used_mb=used, vram_total_mb=total,
                power_w=None if is_na(power) else float(power.split("/")[0]),
                temperature_c=None if is_na(m1.group(4)) else float(m1.group(4).split()[0]),
            ))
            i += 2
            continue
        i += 1
    if not rows:
        raise fail(command, "no device rows", text, text)

    def _clean(v: Any) -> str | None:
        return None if v is None or is_na(v) else str(v)

    return DefaultView(tool=_clean(head.group(1)) if head else None,
                       rocm=_clean(head.group(3)) if head else None,
                       amdgpu=_clean(head.group(2)) if head else None, rows=tuple(rows))

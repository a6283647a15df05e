"""Shared low-level readers for amd-smi output: JSON documents, CSV, human blocks/tables,
"N/A" and unit objects. Pure Python."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from typing import Any, Protocol

from partitions.backends.errors import ParseError


class DeviceRecord(Protocol):
    """What every per-logical-device record of the read commands has (LogicalDevice, StaticInfo, ...)."""

    @property
    def logical_index(self) -> int: ...


NA_STRINGS = frozenset({"N/A", "n/a", "NA", "", "<redacted>", "<Redacted>", "UNKNOWN"})
EXCERPT = 200


def excerpt(text: Any, limit: int = EXCERPT) -> str:
    """The offending text, truncated to ``limit`` characters, for error messages."""
    shown = (text if isinstance(text, str) else repr(text)).strip()
    return shown if len(shown) <= limit else shown[:limit] + "..."


def fail(command: str, problem: str, offending: Any, output: str = "") -> ParseError:
    """A ParseError naming the command and quoting the offending text (truncated)."""
    return ParseError(
        f"amd-smi {command}: {problem}: {excerpt(offending)!r}",
        command=["amd-smi", *command.split()],
        output=output if isinstance(output, str) else "",
    )


def is_na(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in NA_STRINGS)


def text_or_none(value: Any) -> str | None:
    if is_na(value):
        return None
    if isinstance(value, (dict, list)):
        return None
    return str(value).strip()


def int_or_none(value: Any, command: str, field: str) -> int | None:
    """int from an int, a numeric string, or a {value, unit} object; "N/A"/"" -> None."""
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    if is_na(value):
        return None
    if isinstance(value, bool):
        raise fail(command, f"field {field!r} is a boolean", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise fail(command, f"field {field!r} is not an integer", value)


# --- units -----------------------------------------------------------------------------

_UNITS: dict[str, dict[str, float]] = {
    "mem": {"MB": 1, "MIB": 1, "GB": 1024, "GIB": 1024, "KB": 1 / 1024, "KIB": 1 / 1024,
            "B": 1 / 2**20, "TB": 1024 * 1024},
    "power": {"W": 1, "MW": 0.001, "UW": 1e-6},  # MW = mW after upper-casing
    "temp": {"C": 1, "°C": 1, "DEGC": 1},
    "pct": {"%": 1},
}
_HUMAN_QTY = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(%|[°A-Za-z/]+)?\s*$")


def quantity(value: Any, kind: str, command: str, field: str) -> float | None:
    """A number in the canonical unit of ``kind`` (mem: MiB, power: W, temp: C, pct: %)
    from ``{"value": v, "unit": u}``, a bare number (CSV: no units), or "97 %"."""
    unit = None
    if isinstance(value, dict):
        if "value" not in value:
            raise fail(command, f"field {field!r} has no 'value'", value)
        unit = value.get("unit")
        value = value["value"]
    if is_na(value):
        return None
    if isinstance(value, str):
        m = _HUMAN_QTY.match(value)
        if not m:
            raise fail(command, f"field {field!r} is not a number", value)
        value = float(m.group(1))
        unit = unit or m.group(2)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(command, f"field {field!r} is not a number", value)
    if unit is None or unit == "":
        return float(value)
    factor = _UNITS[kind].get(str(unit).strip().upper())
    if factor is None:
        raise fail(command, f"field {field!r} has unit {unit!r}, expected one of "
                            f"{', '.join(_UNITS[kind])}", {"value": value, "unit": unit})
    return float(value) * factor


def mem_mb(value: Any, command: str, field: str) -> int | None:
    q = quantity(value, "mem", command, field)
    return None if q is None else int(round(q))


# --- JSON --------------------------------------------------------------------------------

def json_documents(text: str, command: str, *, allow_prefix: bool = False,
                   allow_trailing: bool = False) -> tuple[list[Any], str, str]:
    """Decode back-to-back JSON documents (``raw_decode`` loop).

    Returns (documents, text before the first document, text after the last one).
    ``allow_prefix``: skip non-JSON text before the first document (the ``set -M`` banner and
    prompt). ``allow_trailing``: accept non-JSON text after the documents (6.4 ``partition``);
    trailing text that starts like JSON (a cut document) is always an error.
    """
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos = 0
    n = len(text)
    prefix = ""
    if allow_prefix:
        start = _first_json_start(text, decoder)
        if start is None:
            return [], text, ""
        prefix, pos = text[:start], start
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        if text[pos] not in "[{":
            if not docs:
                raise fail(command, "expected JSON output, got", text[pos:], text)
            if allow_trailing:
                return docs, prefix, text[pos:]
            raise fail(command, "unexpected text after the JSON output", text[pos:], text)
        try:
            doc, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(command, f"malformed or truncated JSON ({exc.msg} at char {exc.pos})",
                       text[pos:], text) from None
        except RecursionError:  # the decoder recurses per level; callers bound depth first
            raise fail(command, "JSON nested too deeply", text[pos:pos + 40], "") from None
        docs.append(doc)
        pos = end
    if not docs:
        raise fail(command, "printed no JSON", text, text)
    return docs, prefix, ""


def _first_json_start(text: str, decoder: json.JSONDecoder) -> int | None:
    """Offset of the first line that starts a JSON document: one that decodes, or one that
    clearly opens a document but does not decode (cut output, reported by the caller).
    Lines like ``[AMDSMI_STATUS_...] message`` are text, not JSON."""
    offset = 0
    for line in text.splitlines(keepends=True):
        s = line.lstrip()
        if s[:1] in ("[", "{"):
            start = offset + (len(line) - len(s))
            try:
                decoder.raw_decode(text, start)
                return start
            except RecursionError:
                return start  # a document, far too deep: json_documents reports it
            except ValueError:
                if s.rstrip() in ("[", "{") or s.startswith(('{"', "[{", "[\n", "[\r")):
                    return start
        offset += len(line)
    return None


def error_document(doc: Any) -> tuple[str, int | None] | None:
    """``{"error": "...", "code": -9}`` (JSON-mode CLI error) -> (message, code)."""
    if isinstance(doc, dict) and "error" in doc and set(doc) <= {"error", "code"}:
        code = doc.get("code")
        try:
            code = int(code) if code is not None else None
        except (TypeError, ValueError):
            code = None
        return str(doc["error"]), code
    return None


def device_rows(doc: Any, command: str, text: str, *, device_key: str = "gpu") -> list[dict[str, Any]]:
    """The per-device objects of a list/static/metric document: a JSON array (<= 6.4) or
    ``{"gpu_data": [...]}`` with optional ``cpu_data``/``core_data``/``nic_data`` siblings."""
    if isinstance(doc, dict):
        unknown = set(doc) - {"gpu_data", "cpu_data", "core_data", "nic_data"}
        if "gpu_data" not in doc or unknown:
            raise fail(command, "unexpected JSON structure (no 'gpu_data' list)", doc, text)
        doc = doc["gpu_data"]
    if not isinstance(doc, list):
        raise fail(command, "unexpected JSON structure (expected a list of devices)", doc, text)
    for row in doc:
        if not isinstance(row, dict) or device_key not in row:
            raise fail(command, f"device entry without {device_key!r}", row, text)
    return doc


# --- CSV ---------------------------------------------------------------------------------

_CSV_HEADER = re.compile(r"^[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)+$")


def looks_like_csv(text: str) -> bool:
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return bool(_CSV_HEADER.match(first))


def csv_tables(text: str, command: str) -> list[list[dict[str, str]]]:
    """CSV tables (``csv.DictWriter`` output, CRLF); a blank line or a new header starts a
    new table. Rows with the wrong number of cells are an error (truncation)."""
    tables: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip("\r")
        if not line.strip():
            header = None
            continue
        if _CSV_HEADER.match(line.strip()):
            header = [c.strip() for c in line.strip().split(",")]
            tables.append([])
            continue
        if header is None:
            raise fail(command, "CSV row without a header", line, text)
        cells = next(csv.reader(io.StringIO(line)))
        if len(cells) != len(header):
            raise fail(command, f"CSV row has {len(cells)} cells, header has {len(header)}",
                       line, text)
        tables[-1].append({h: c.strip() for h, c in zip(header, cells)})
    if not tables:
        raise fail(command, "no CSV table", text, text)
    return tables


# --- human output --------------------------------------------------------------------------

GROUP_WARNING = re.compile(r"^(?:RuntimeError: )?WARNING: User is missing the following required groups: "
                           r"(?P<groups>[a-z, ]+)\. Please add user to these groups\.\s*$")


def strip_group_warnings(text: str) -> tuple[str, str | None]:
    """``text`` without the lines amd-smi prints for a user outside the render/video groups
    (``list`` prints one per device plus one more before its output, on stdout), and the
    groups it named ("render, video") or None."""
    groups = None
    kept = []
    for line in text.splitlines(keepends=True):
        m = GROUP_WARNING.match(line.strip())
        if m:
            groups = m.group("groups").strip()
        else:
            kept.append(line)
    return ("".join(kept), groups) if groups is not None else (text, None)


_BLOCK = re.compile(r"^\s*(GPU|CPU|NIC|CORE)\s*:\s*(\d+)\s*$")
_KEYLINE = re.compile(r"^([A-Za-z][A-Za-z0-9_ ]*?)\s*:(?:\s+(.*?))?\s*$")
_HUMAN_NUM_UNIT = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(%|°C|C|W|mW|MB|GB|KB|B|MHz|mV|GB/s|GT/s|J)$")
_WARNING_LINES = re.compile(
    r"^(RuntimeError: WARNING: User is missing|WARNING: User is missing|\.\.\.$)")


def human_scalar(value: str) -> Any:
    """Turn a human value into the JSON shape: "97 %" -> {"value": 97, "unit": "%"},
    "[0 %, N/A]" -> list, "12" -> 12, other strings unchanged."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        inner = value[1:-1].strip()
        return [human_scalar(v) for v in inner.split(",")] if inner else []
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    m = _HUMAN_NUM_UNIT.match(value)
    if m:
        num = float(m.group(1))
        num = int(num) if num.is_integer() else num
        unit = "C" if m.group(2) == "°C" else m.group(2)
        return {"value": num, "unit": unit}
    return value


def human_blocks(text: str, command: str) -> list[tuple[str, int, dict[str, Any]]]:
    """``GPU: 0`` blocks of human output as nested dicts with lower-cased keys.

    Lines of only ``...`` (excerpts) and the non-root group warning are ignored; any other
    text outside a block is an error."""
    blocks: list[tuple[str, int, dict[str, Any]]] = []
    stack: list[tuple[int, dict[str, Any]]] = []
    last_key: tuple[dict[str, Any], str] | None = None
    block_indent = 0
    for raw in text.splitlines():
        line = raw.rstrip("\r").rstrip()
        if not line.strip() or line.strip() == "...":
            continue
        m = _BLOCK.match(line)
        indent = len(line) - len(line.lstrip())
        if m and (not stack or indent <= block_indent):
            root: dict[str, Any] = {}
            blocks.append((m.group(1), int(m.group(2)), root))
            stack = [(indent, root)]
            block_indent = indent
            last_key = None
            continue
        if not stack:
            if _WARNING_LINES.match(line.strip()):
                continue
            raise fail(command, "unexpected text outside a device block", line, text)
        while len(stack) > 1 and indent <= stack[-1][0]:
            stack.pop()
        km = _KEYLINE.match(line.strip())
        parent = stack[-1][1]
        if km:
            key = km.group(1).strip().lower().replace(" ", "_")
            val = km.group(2)
            if val is None or val == "":
                child: dict[str, Any] = {}
                parent[key] = child
                stack.append((indent, child))
                last_key = (parent, key)
            else:
                parent[key] = human_scalar(val)
                last_key = (parent, key)
        elif last_key is not None:
            # value continuation (e.g. a list printed one item per line)
            holder, key = last_key
            cur = holder.get(key)
            if isinstance(cur, dict) and not cur:
                cur = []
            elif not isinstance(cur, list):
                cur = [cur]
            cur.append(human_scalar(line.strip()))
            holder[key] = cur
            # the child dict opened for this key is no longer a container
            if stack and stack[-1][1] is not holder and not isinstance(holder.get(key), dict):
                stack.pop()
        else:
            raise fail(command, "unexpected line", line, text)
    return blocks


def split_columns(header_line: str) -> list[tuple[str, int]]:
    """Column names of a human table header with their start offsets."""
    return [(m.group(0), m.start()) for m in re.finditer(r"\S+", header_line)]


def table_row(line: str, columns: list[tuple[str, int]], command: str, text: str) -> dict[str, str]:
    """Cells of a human table row: by whitespace when the count matches the header, else by
    the header's column offsets (continuation rows with empty leading cells)."""
    tokens = line.split()
    names = [c for c, _ in columns]
    if len(tokens) == len(names) and not line[: columns[0][1] + 1].isspace():
        return dict(zip(names, tokens))
    cells: dict[str, str] = {}
    for i, (name, start) in enumerate(columns):
        end = columns[i + 1][1] if i + 1 < len(columns) else None
        cells[name] = line[start:end].strip() if start < len(line) else ""
    if not cells[names[-1]]:
        raise fail(command, "table row is cut short (truncated output?)", line, text)
    # a cell that spilled into the next column shows up as text before the column start
    rebuilt = " ".join(v for v in cells.values() if v).split()
    if rebuilt != tokens:
        raise fail(command, "table row does not line up with its header", line, text)
    return cells


def join_nonempty(parts: Iterable[str]) -> str:
    return "\n".join(p for p in parts if p)

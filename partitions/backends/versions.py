"""``amd-smi version`` parsing and the per-version syntax decisions of the amdsmi backend.

Pure Python (no Django, no subprocess). Facts from docs/hardware/amd-smi.md sections 1,
4, 6 and 7. Every decision helper takes a :class:`ToolVersion` or a ROCm tuple like
``(6, 4, 1)``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from partitions.backends.errors import ParseError
from partitions.backends.types import ToolVersion

VersionLike = ToolVersion | tuple[int, ...]

# Reload strategies after a memory (NPS) change. The backend decides from what the installed
# tool accepts (``amd-smi reset --help``: :func:`reload_method_from_help`), the version only
# breaking the tie where the help says nothing about a reload.
RELOAD_BACKGROUND = "background"  # 6.1/6.2: ``set -M`` starts the reload in the background and returns
RELOAD_BY_TOOL = "tool"  # 6.3/6.4: ``set -M`` reloads amdgpu itself and waits
RELOAD_RESET = "reset"  # 7.0-7.11: ``amd-smi reset -r``
RELOAD_MODPROBE = "modprobe"  # 7.12+: ``modprobe -r amdgpu && modprobe amdgpu``

DEFAULT_MODPROBE_COMMAND: tuple[str, ...] = ("sh", "-c", "modprobe -r amdgpu && modprobe amdgpu")

_FIELD_RE = re.compile(
    r"(?P<key>AMDSMI Tool|AMDSMI Library version|ROCm version|amdgpu version|amd_hsmp version)"
    r"\s*:\s*(?P<value>[^|]*)"
)
_LEADING_INTS = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def _excerpt(text: str, limit: int = 200) -> str:
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value in ("", "N/A", "n/a", "NA"):
        return None
    return value


def _ints(text: str | None) -> tuple[int, ...]:
    """Leading dotted integers of a version string ("24.7.1+b446d6c" -> (24, 7, 1))."""
    if not text:
        return ()
    m = _LEADING_INTS.match(text)
    if not m:
        return ()
    return tuple(int(p) for p in m.group(1).split("."))


def parse_version(text: str) -> ToolVersion:
    """Parse ``amd-smi version`` (human one-line form, also ``-g``/``-c``) or ``version --json``.

    Accepts both library version formats (``YY.M.m.p`` until 6.3, ``Major.Minor.Patch`` from
    6.4.0). The amdgpu field is kept verbatim (it may be a squashed kernel banner).
    Raises :class:`ParseError` for anything else, including two different version lines.
    """
    command = ["amd-smi", "version"]
    if not isinstance(text, str) or not text.strip():
        raise ParseError("amd-smi version printed nothing", command=command, output=text or "")
    stripped = text.strip()
    if stripped[0] in "[{":
        return _parse_version_json(stripped, command)
    found: list[dict[str, str]] = []
    for line in stripped.splitlines():
        if "AMDSMI Tool" not in line:
            if line.strip():
                # anything else (warnings from the tool) is tolerated only if it is not a field
                if _FIELD_RE.search(line):
                    raise ParseError(f"amd-smi version: unexpected line {_excerpt(line)!r}",
                                     command=command, output=text)
            continue
        fields = {m.group("key"): m.group("value").strip() for m in _FIELD_RE.finditer(line)}
        found.append(fields)
    if not found:
        raise ParseError(f"amd-smi version: no 'AMDSMI Tool' line in {_excerpt(text)!r}",
                         command=command, output=text)
    first = found[0]
    for other in found[1:]:
        if (other.get("AMDSMI Tool"), other.get("AMDSMI Library version")) != (
            first.get("AMDSMI Tool"), first.get("AMDSMI Library version")
        ):
            raise ParseError(f"amd-smi version: mixed versions in output {_excerpt(text)!r}",
                             command=command, output=text)
    return _tool_version(first.get("AMDSMI Tool"), first.get("AMDSMI Library version"),
                         first.get("ROCm version"), first.get("amdgpu version"), text, command)


def _tool_version(tool: str | None, library: str | None, rocm: str | None, amdgpu: str | None, text: str,
                  command: list[str]) -> ToolVersion:
    tool = _clean(tool)
    library = _clean(library)
    if not tool or not _ints(tool):
        raise ParseError(f"amd-smi version: no tool version in {_excerpt(text)!r}",
                         command=command, output=text)
    if not library or not _ints(library):
        raise ParseError(f"amd-smi version: no library version in {_excerpt(text)!r}",
                         command=command, output=text)
    rocm = _clean(rocm)
    if rocm is not None and not _ints(rocm):
        raise ParseError(f"amd-smi version: ROCm version {rocm!r} is not a version",
                         command=command, output=text)
    return ToolVersion(tool=tool, library=library, rocm=rocm, amdgpu=_clean(amdgpu))


def _parse_version_json(text: str, command: list[str]) -> ToolVersion:
    try:
        data: Any = json.loads(text)
    except ValueError:
        raise ParseError(f"amd-smi version --json: not JSON: {_excerpt(text)!r}",
                         command=command, output=text) from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        raise ParseError(f"amd-smi version --json: unexpected structure {_excerpt(text)!r}",
                         command=command, output=text)
    if "error" in data:
        raise ParseError(f"amd-smi version --json: tool error {_excerpt(str(data['error']))!r}",
                         command=command, output=text)

    def pick(*names: str) -> str | None:
        for n in names:
            if n in data and not isinstance(data[n], (dict, list)):
                return str(data[n])
        return None

    tool = pick("version", "tool_version", "amdsmi_tool_version")
    library = pick("amdsmi_library_version", "library_version", "lib_version")
    rocm = pick("rocm_version")
    amdgpu = pick("amdgpu_version", "driver_version")
    return _tool_version(tool, library, rocm, amdgpu, text, command)


def rocm_version_tuple(tool_version: VersionLike) -> tuple[int, ...]:
    """ROCm version as a tuple; derived from the tool version when the ROCm field is N/A
    (26.x -> 7.0, 25.x -> 6.4, 24.7 -> 6.3, 24.6 -> 6.2, older -> 6.1). The driver fields of
    the version line exist only since 6.4.0, so their presence lifts 24.7 to 6.4."""
    if isinstance(tool_version, tuple):
        return tool_version
    rocm = _ints(tool_version.rocm)
    if rocm:
        return rocm
    tool = _ints(tool_version.tool)
    lib = _ints(tool_version.library)
    major = tool[0] if tool else 0
    minor = tool[1] if len(tool) > 1 else 0
    if major >= 26:
        guess: tuple[int, ...] = (7, 0)
    elif major == 25:
        guess = (6, 4, 1) if minor >= 4 else (6, 4)
    elif major == 24 and minor >= 7:
        guess = (6, 3)
    elif major == 24 and minor == 6:
        guess = (6, 2)
    else:
        guess = (6, 1)
    if guess < (6, 4) and (tool_version.amdgpu is not None or (len(lib) == 3 and lib[0] >= 25)):
        guess = (6, 4)
    return guess


def _v(version: VersionLike) -> tuple[int, ...]:
    return rocm_version_tuple(version)


def needs_confirmation(version: VersionLike, command: str = "set -M") -> bool:
    """Whether ``command`` ("set -M", "reset -r", "set -C") asks ``[Y/N]`` on stdin."""
    command = command.strip()
    if command.startswith("reset"):
        return True
    if command in ("set -M", "set --memory-partition"):
        return _v(version) >= (6, 3)
    return False


def memory_change_reloads_driver(version: VersionLike) -> bool:
    """Before 7.0 ``set -M`` reloads amdgpu itself: 6.3/6.4 wait for it (40 s / up to 140 s),
    6.1/6.2 start it in the background (rocm_smi.cc ``restartAMDGpuDriver``)."""
    return _v(version) < (7, 0)


def reload_method(version: VersionLike) -> str:
    """How the driver is reloaded after ``set -M``, by version alone (RELOAD_BACKGROUND,
    RELOAD_BY_TOOL, RELOAD_RESET or RELOAD_MODPROBE). ``reset -r`` was removed in 7.12.0 by the
    tool's changelog (7.13.0 by AMD's partition guide): prefer :func:`reload_method_from_help`."""
    v = _v(version)
    if v < (6, 3):
        return RELOAD_BACKGROUND
    if v < (7, 0):
        return RELOAD_BY_TOOL
    if v < (7, 12):
        return RELOAD_RESET
    return RELOAD_MODPROBE


def reload_method_from_help(reset_help: str, version: VersionLike) -> str:
    """The reload method given what ``amd-smi reset --help`` printed: ``--reload-driver``
    listed -> RELOAD_RESET whatever the version; not listed -> the version's own reload
    (6.x: ``set -M`` reloads) or modprobe."""
    if re.search(r"(^|\s)--reload-driver\b", reset_help or ""):
        return RELOAD_RESET
    method = reload_method(version)
    return RELOAD_MODPROBE if method == RELOAD_RESET else method


def reload_command(version: VersionLike) -> list[str] | None:
    """The reload to run after ``set -M``: ``["reset", "-r"]`` = amd-smi arguments (7.0-7.11),
    the modprobe argv (7.12+, run outside amd-smi), or None (before 7.0: ``set -M`` reloads)."""
    method = reload_method(version)
    if method in (RELOAD_BY_TOOL, RELOAD_BACKGROUND):
        return None
    if method == RELOAD_RESET:
        return ["reset", "-r"]
    return list(DEFAULT_MODPROBE_COMMAND)


def memory_reload_wait_s(version: VersionLike) -> int:
    """How long the tool itself may wait for the reload (6.3: 40 s, 6.4 and reset -r: 140 s)."""
    v = _v(version)
    return 40 if (6, 3) <= v < (6, 4) else 140


def static_partition_key(version: VersionLike) -> str:
    """Key of the compute mode in ``static --partition``: renamed in 6.4.2."""
    return "accelerator_partition" if _v(version) >= (6, 4, 2) else "compute_partition"


def set_compute_key(version: VersionLike) -> str:
    """Result key of ``set -C`` (6.1/6.2 "computepartition", later "accelerator_partition")."""
    return "accelerator_partition" if _v(version) >= (6, 3) else "computepartition"


def has_partition_command(version: VersionLike) -> bool:
    """``amd-smi partition`` exists since 6.3."""
    return _v(version) >= (6, 3)


def list_has_enumeration(version: VersionLike) -> bool:
    """``amd-smi list -e`` (render/card/hip ids) exists since 6.4.0."""
    return _v(version) >= (6, 4)


def set_needs_gpu_all(version: VersionLike) -> bool:
    """Before 6.3 ``set`` without ``-g`` did not act on all GPUs: pass ``-g all``."""
    return _v(version) < (6, 3)


def json_has_gpu_data_envelope(version: VersionLike) -> bool:
    """``static``/``metric`` JSON is ``{"gpu_data": [...]}`` since 7.0."""
    return _v(version) >= (7, 0)


def uuids_per_partition(version: VersionLike) -> bool:
    """Each partition has its own UUID since 7.0 (before: the physical GPU's UUID repeated)."""
    return _v(version) >= (7, 0)


def secondaries_report_na(version: VersionLike) -> bool:
    """Since 6.4.1 secondary partitions report N/A power/temp/activity and VRAM total/N."""
    return _v(version) >= (6, 4, 1)


def compute_accepts_profile_index(version: VersionLike) -> bool:
    """``set -C`` accepts a profile index as well as a type since 6.4.0."""
    return _v(version) >= (6, 4)

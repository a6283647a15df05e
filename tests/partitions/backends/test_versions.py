"""amd-smi version parsing and the per-version syntax decisions."""

from __future__ import annotations

import json

import pytest

from partitions.backends import versions as v
from partitions.backends.errors import ParseError
from partitions.backends.types import ToolVersion


@pytest.mark.parametrize("line,tool,library,rocm,amdgpu,rocm_tuple", [
    ("AMDSMI Tool: 23.4.2+505b858 | AMDSMI Library version: 24.2.0.0 | ROCm version: 6.1.0",
     "23.4.2+505b858", "24.2.0.0", "6.1.0", None, (6, 1, 0)),
    ("AMDSMI Tool: 24.7.1+8dc45db | AMDSMI Library version: 25.1.0.0 | ROCm version: 6.3.3",
     "24.7.1+8dc45db", "25.1.0.0", "6.3.3", None, (6, 3, 3)),
    ("AMDSMI Tool: 25.3.0+abc | AMDSMI Library version: 25.3.0 | ROCm version: 6.4.0 | "
     "amdgpu version: 6.10.5 | amd_hsmp version: N/A", "25.3.0+abc", "25.3.0", "6.4.0", "6.10.5", (6, 4, 0)),
    ("AMDSMI Tool: 26.0.2+39589fda | AMDSMI Library version: 26.0.2 | ROCm version: 7.0.2 | "
     "amdgpu version: Linuxversion6.8.0-79-generic(buildd@lcy02-amd64-028)(x86_64-linux-gnu-gcc-13) | "
     "amd_hsmp version: N/A", "26.0.2+39589fda", "26.0.2", "7.0.2",
     "Linuxversion6.8.0-79-generic(buildd@lcy02-amd64-028)(x86_64-linux-gnu-gcc-13)", (7, 0, 2)),
    # ROCm N/A: derived from the tool version
    ("AMDSMI Tool: 26.0.0+eaa54ecc | AMDSMI Library version: 26.0.0 | ROCm version: N/A",
     "26.0.0+eaa54ecc", "26.0.0", None, None, (7, 0)),
    ("AMDSMI Tool: 25.4.2+aca1f5e | AMDSMI Library version: 25.4.0 | ROCm version: N/A",
     "25.4.2+aca1f5e", "25.4.0", None, None, (6, 4, 1)),
    ("AMDSMI Tool: 25.2.0+aaa | AMDSMI Library version: 25.2.0 | ROCm version: N/A", "25.2.0+aaa", "25.2.0",
     None, None, (6, 4)),
    ("AMDSMI Tool: 24.7.1+8dc45db | AMDSMI Library version: 24.7.2.0 | ROCm version: N/A",
     "24.7.1+8dc45db", "24.7.2.0", None, None, (6, 3)),
    ("AMDSMI Tool: 24.6.2+f1a2b3c | AMDSMI Library version: 24.6.2.0 | ROCm version: N/A",
     "24.6.2+f1a2b3c", "24.6.2.0", None, None, (6, 2)),
    ("AMDSMI Tool: 23.4.2+505b858 | AMDSMI Library version: 24.2.0.0 | ROCm version: N/A",
     "23.4.2+505b858", "24.2.0.0", None, None, (6, 1)),
    ("AMDSMI Tool: 24.7.1+b446d6c-dirty | AMDSMI Library version: 24.7.2.0 | ROCm version: N/A | "
     "amdgpu version: 6.10.10 | amd_hsmp version: 2.2", "24.7.1+b446d6c-dirty", "24.7.2.0", None, "6.10.10", (6, 4)),
])
def test_parse_version(line, tool, library, rocm, amdgpu, rocm_tuple):
    tv = v.parse_version(line + "\n")
    assert (tv.tool, tv.library, tv.rocm, tv.amdgpu) == (tool, library, rocm, amdgpu)
    assert tv.rocm_tuple == rocm_tuple
    assert v.rocm_version_tuple(tv) == rocm_tuple


def test_parse_version_json():
    text = json.dumps({"tool": "AMDSMI Tool", "version": "26.1.0+5df6c765", "amdsmi_library_version": "26.1.0",
                       "rocm_version": "7.1.0", "amdgpu_version": "6.14.14", "amd_hsmp_version": "N/A"}, indent=4)
    tv = v.parse_version(text)
    assert (tv.tool, tv.library, tv.rocm, tv.amdgpu) == ("26.1.0+5df6c765", "26.1.0", "7.1.0", "6.14.14")
    assert v.parse_version(json.dumps([json.loads(text)])).rocm == "7.1.0"


def test_warning_lines_are_tolerated():
    text = ("RuntimeError: WARNING: User is missing the following required groups: render\n"
            "AMDSMI Tool: 26.0.0+x | AMDSMI Library version: 26.0.0 | ROCm version: 7.0.0\n")
    assert v.parse_version(text).rocm == "7.0.0"


@pytest.mark.parametrize("text", ["", "   \n", "garbage", "AMDSMI Tool: | AMDSMI Library version: 26.0.0",
                                  "AMDSMI Tool: 26.0.0 | AMDSMI Library version: ",
                                  "AMDSMI Tool: 26.0.0 | AMDSMI Library version: 26.0.0 | ROCm version: seven",
                                  "{not json", '{"error": "boom", "code": -1}'])
def test_parse_version_rejects(text):
    with pytest.raises(ParseError):
        v.parse_version(text)


def tv(rocm: str) -> ToolVersion:
    return ToolVersion(tool="x", library="y", rocm=rocm)


@pytest.mark.parametrize("rocm,reloads,method,command,key,partition_cmd,enum", [
    # rocm_smi.cc 6.1.2/6.2.2: set -M starts "modprobe -r amdgpu && modprobe amdgpu&" itself
    ("6.1.3", True, v.RELOAD_BACKGROUND, None, "compute_partition", False, False),
    ("6.2.4", True, v.RELOAD_BACKGROUND, None, "compute_partition", False, False),
    ("6.3.2", True, v.RELOAD_BY_TOOL, None, "compute_partition", True, False),
    ("6.4.0", True, v.RELOAD_BY_TOOL, None, "compute_partition", True, True),
    ("6.4.1", True, v.RELOAD_BY_TOOL, None, "compute_partition", True, True),
    ("6.4.2", True, v.RELOAD_BY_TOOL, None, "accelerator_partition", True, True),
    ("7.0.0", False, v.RELOAD_RESET, ["reset", "-r"], "accelerator_partition", True, True),
    ("7.1.1", False, v.RELOAD_RESET, ["reset", "-r"], "accelerator_partition", True, True),
    ("7.11.0", False, v.RELOAD_RESET, ["reset", "-r"], "accelerator_partition", True, True),
    # rocm-systems amdsmi CHANGELOG 7.12.0 "Removed": reset -r (the partition guide says 7.13)
    ("7.12.0", False, v.RELOAD_MODPROBE, list(v.DEFAULT_MODPROBE_COMMAND), "accelerator_partition", True, True),
    ("7.13.0", False, v.RELOAD_MODPROBE, list(v.DEFAULT_MODPROBE_COMMAND), "accelerator_partition", True, True),
])
def test_syntax_by_version(rocm, reloads, method, command, key, partition_cmd, enum):
    t = tv(rocm)
    assert v.memory_change_reloads_driver(t) is reloads
    assert v.reload_method(t) == method
    assert v.reload_command(t) == command
    assert v.static_partition_key(t) == key
    assert v.has_partition_command(t) is partition_cmd
    assert v.list_has_enumeration(t) is enum


def test_other_helpers():
    assert v.needs_confirmation(tv("7.1.0"), "set -M") and v.needs_confirmation(tv("6.3.0"), "set -M")
    assert not v.needs_confirmation(tv("6.2.0"), "set -M")
    assert v.needs_confirmation(tv("7.1.0"), "reset -r")
    assert not v.needs_confirmation(tv("7.1.0"), "set -C")
    assert v.set_needs_gpu_all(tv("6.2.0")) and not v.set_needs_gpu_all(tv("6.3.0"))
    assert v.json_has_gpu_data_envelope(tv("7.0.0")) and not v.json_has_gpu_data_envelope(tv("6.4.3"))
    assert v.uuids_per_partition(tv("7.0.0")) and not v.uuids_per_partition(tv("6.4.3"))
    assert v.secondaries_report_na(tv("6.4.1")) and not v.secondaries_report_na(tv("6.4.0"))
    assert v.compute_accepts_profile_index(tv("6.4.0")) and not v.compute_accepts_profile_index(tv("6.3.3"))
    assert v.set_compute_key(tv("6.2.0")) == "computepartition"
    assert v.memory_reload_wait_s(tv("6.3.1")) == 40 and v.memory_reload_wait_s(tv("6.4.0")) == 140
    assert v.rocm_version_tuple((7, 13)) == (7, 13)


@pytest.mark.parametrize("help_text, rocm, method", [
    ("usage: amd-smi reset [-h] [-r] ...\n  -r, --reload-driver  Restart the AMD GPU driver", "7.1.0", v.RELOAD_RESET),
    ("usage: amd-smi reset [-h] ...\n", "7.1.0", v.RELOAD_MODPROBE),   # a 7.1 build without -r
    ("usage: amd-smi reset [-h] [-r]\n  -r, --reload-driver", "7.13.0", v.RELOAD_RESET),  # what it accepts wins
    ("usage: amd-smi reset [-h] ...\n", "7.13.0", v.RELOAD_MODPROBE),
    ("usage: amd-smi reset [-h] ...\n", "6.4.1", v.RELOAD_BY_TOOL),
    ("usage: amd-smi reset [-h] [-C | -M]\n", "6.2.0", v.RELOAD_BACKGROUND),
])
def test_reload_method_from_reset_help(help_text, rocm, method):
    assert v.reload_method_from_help(help_text, tv(rocm)) == method

"""The emulator reproduces the project's amd-smi samples (tests/fixtures/amd-smi).

Every sample file is either in CASES (the command, version, GPU model and modes that reproduce
it, and how it is compared) or in NOT_REPRODUCED with the reason; a test checks that the two
lists cover the folder exactly. Invented values (serials, UUIDs, kfd ids, live metrics) are
compared by type; structure is compared strictly: JSON keys and their order, nesting, value
types, "N/A"/"" placement, units, partition facts; CSV headers and row shapes; human-form keys;
exit status; stdout vs stderr.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from .conftest import fixture_dir, make_state, run_emulator

FIXTURES = fixture_dir()
G8 = [str(i) for i in range(8)]
G16 = [str(i) for i in range(16)]

# JSON keys whose values are partition/hardware facts, compared exactly (others: by type).
EXACT_KEYS = {
    "gpu", "gpu_id", "bdf", "partition_id", "unit", "memory", "accelerator_type",
    "accelerator_profile_index", "memory_partition_caps", "current_memory_partition",
    "profile_index", "num_partitions", "num_resources", "resource_index", "resource_type",
    "resource_instances", "resources_shared", "accelerator_partition", "compute_partition",
    "memory_partition", "num_compute_units", "market_name", "device_id", "subsystem_id",
    "target_graphics_version", "vendor_id", "render", "card", "hsa_id", "hip_id", "node_id",
    "mm_activity", "throttle_status", "power_management", "edge", "type", "vendor",
    "bit_width", "total_vram", "total_visible_vram", "size", "max_bandwidth",
}


@dataclass
class Case:
    file: str
    argv: list
    rocm: str
    gpu: str = "MI300X"
    count: int = 8
    compute: str | None = None
    memory: str | None = None
    root: bool = True
    processes: dict = field(default_factory=dict)
    quirks: list = field(default_factory=list)
    stdin: str | None = None
    mode: str = "json"  # json | json_keys | json_concat | csv | human_keys | exact | stripped | shape | messages | version
    stream: str = "stdout"
    exit: int = 0
    stderr_file: str | None = None  # a second fixture for stderr (stdout/stderr pairs)
    exact_human: tuple = ()  # human keys whose values must match too
    excerpt: bool = False  # the sample shows only the start of the output
    truncated: bool = False  # ... and its last line is cut mid-line


CASES = [
    # list
    Case("list.MI300X.SPX.8gpu.rocm7x.json", ["list", "--json"], "7.1"),
    Case("list.MI300X.SPX.8gpu.rocm7x.csv", ["list", "--csv"], "7.1", mode="csv"),
    Case("list.MI300X.CPX.gpu0-7.rocm7x.json", ["list", "--json", "-g", *G8], "7.1", compute="CPX"),
    Case("list-e.MI300X.CPX.gpu0-7.rocm7x.json", ["list", "-e", "--json", "-g", *G8], "7.1", compute="CPX"),
    Case("list-e.MI300X.CPX.rocm641.txt", ["list", "-e"], "6.4.1", compute="CPX", mode="human_keys",
         exact_human=("BDF", "NODE_ID", "PARTITION_ID", "RENDER", "CARD", "HSA_ID", "HIP_ID")),
    Case("list.MI3xx.rocm63.txt", ["list"], "6.3", count=2, mode="human_keys", exact_human=("PARTITION_ID",)),
    # static
    Case("static-asic-vram-partition.MI300X.SPX-NPS1.gpu0-1.rocm7x.json",
         ["static", "-a", "-v", "-p", "--json", "-g", "0", "1"], "7.1"),
    Case("static-asic-partition.MI300X.CPX-NPS1.gpu0-1.rocm7x.json",
         ["static", "-a", "-p", "--json", "-g", "0", "1"], "7.1", compute="CPX"),
    Case("static-partition.MI300X.CPX-NPS4.gpu0-7.rocm7x.json",
         ["static", "-p", "--json", "-g", *G8], "7.1", compute="CPX", memory="NPS4"),
    Case("static-asic-vram-partition.MI355X.SPX-NPS1.gpu0.rocm7x.json",
         ["static", "-a", "-v", "-p", "--json", "-g", "0"], "7.1", gpu="MI355X", count=1),
    Case("static-partition.MI300X.SPX-NPS1.8gpu.rocm642.json", ["static", "-p", "--json"], "6.4.2"),
    Case("static-partition.MI300X.SPX-NPS1.rocm642.txt", ["static", "--partition"], "6.4.2", count=1,
         mode="exact"),
    Case("static-partition.MI300X.SPX-NPS1.rocm641-and-older.txt", ["static", "--partition"], "6.4.1",
         count=1, mode="exact"),
    Case("static-partition.MI300X.CPX-NPS4.rocm63.txt", ["static", "--partition"], "6.3",
         compute="CPX", memory="NPS4", mode="exact", excerpt=True),
    Case("static-partition.MI300X.CPX-NPS4.64gpu.rocm64.txt", ["static", "--partition"], "6.4",
         compute="CPX", memory="NPS4", mode="exact"),
    Case("static-asic.MI308X.CPX.rocm63.txt", ["static", "--asic"], "6.3", gpu="MI308X", compute="CPX",
         mode="human_keys", exact_human=("VENDOR_ID", "DEVICE_ID", "SUBSYSTEM_ID", "NUM_COMPUTE_UNITS",
                                         "TARGET_GRAPHICS_VERSION", "REV_ID")),
    # metric
    Case("metric.MI300X.SPX.gpu0-1.rocm7x.json",
         ["metric", "-u", "-p", "-t", "-e", "-m", "--json", "-g", "0", "1"], "7.1"),
    Case("metric-usage-power-mem.MI300X.CPX-NPS1.gpu0-1.rocm7x.json",
         ["metric", "-u", "-p", "-m", "--json", "-g", "0", "1"], "7.1", compute="CPX"),
    Case("metric-usage-power-mem.MI355X.SPX.gpu0.rocm7x.json",
         ["metric", "-u", "-p", "-m", "--json", "-g", "0"], "7.1", gpu="MI355X", count=1),
    Case("metric-power-temp-mem.MI300X.SPX.gpu0-1.rocm64.json",
         ["metric", "-p", "-t", "-m", "--json", "-g", "0", "1"], "6.4"),
    Case("metric-mem-usage.MI300X.SPX.8gpu.rocm7x.csv", ["metric", "-m", "--csv"], "7.1", mode="csv"),
    Case("metric-power.rocm61.json", ["metric", "-p", "--json", "-g", "0"], "6.1", mode="json_keys"),
    Case("metric-usage.MI300X.CPX.rocm70.txt", ["metric", "--usage"], "7.0", compute="CPX", mode="exact",
         excerpt=True),
    Case("metric-ecc.rocm62.txt", ["metric", "--ecc", "--ecc-blocks"], "6.2", mode="human_keys",
         exact_human=("TOTAL_CORRECTABLE_COUNT", "TOTAL_UNCORRECTABLE_COUNT", "CORRECTABLE_COUNT")),
    # partition
    Case("partition.MI300X.SPX-NPS1.8gpu.rocm7x.json", ["partition", "--json"], "7.1"),
    Case("partition.MI300X.CPX-NPS4.gpu0-7.rocm7x.json", ["partition", "--json", "-g", *G8], "7.1",
         compute="CPX", memory="NPS4"),
    Case("partition-current-memory.MI300X.DPX-NPS1.16gpu.rocm7x.json", ["partition", "-c", "-m", "--json"],
         "7.1", compute="DPX"),
    Case("partition.MI300X.SPX-NPS1.nonroot.rocm7x.json", ["partition", "--json"], "7.1", root=False),
    Case("partition.MI355X.DPX-NPS2.gpu0-3.rocm7x.json", ["partition", "--json", "-g", "0", "1", "2", "3"],
         "7.1", gpu="MI355X", count=2, compute="DPX", memory="NPS2"),
    Case("partition-current.MI300X.CPX-NPS4.gpu0-15.rocm7x.csv", ["partition", "-c", "--csv", "-g", *G16],
         "7.1", compute="CPX", memory="NPS4", mode="exact"),
    Case("partition-current.MI300X.CPX-NPS1.rocm64.txt", ["partition", "--current"], "6.4", compute="CPX",
         mode="exact"),
    Case("partition-current.MI300X.CPX-NPS1.rocm63-array-ids.txt", ["partition", "--current"], "6.3",
         compute="CPX", mode="shape"),
    Case("partition-accelerator.nonroot.rocm64.txt", ["partition", "--accelerator"], "6.4", root=False,
         mode="exact"),
    Case("partition.4gpu.na-fields.rocm63.truncated.txt", ["partition"], "6.3", count=4, mode="shape"),
    Case("partition.MI300A.SPX-NPS1.4apu.rocm7x-preview.truncated.txt", ["partition"], "7.1", gpu="MI300A",
         count=4, mode="exact", truncated=True),
    # set / reset
    Case("set-compute-partition.MI300X.CPX.8gpu.rocm64.txt", ["set", "--gpu", "all", "--compute-partition", "CPX"],
         "6.4", mode="exact"),
    Case("set-compute-partition.MI300X.SPX.8gpu.rocm64.txt", ["set", "--gpu", "all", "--compute-partition", "SPX"],
         "6.4", compute="CPX", mode="exact"),
    Case("set-compute-partition.MI300X.CPX.8gpu.rocm7x.json", ["set", "-C", "CPX", "--json"], "7.1", mode="exact"),
    Case("set-memory-partition.MI300X.NPS4.8gpu.rocm7x.txt", ["set", "-M", "NPS4"], "7.1", stdin="y\n",
         mode="stripped"),
    Case("set-memory-partition.MI300X.NPS4.8gpu.json-mode.rocm7x.txt", ["set", "-M", "NPS4", "--json"], "7.1",
         stdin="y\n", mode="stripped"),
    Case("set-memory-partition.declined.rocm7x.txt", ["set", "-M", "NPS4"], "7.1", stdin="n\n",
         mode="stripped", exit=1),
    Case("set-memory-partition.navi.not-supported.rocm70.txt", ["set", "-M", "NPS2"], "7.0", gpu="MI300A",
         count=2, stdin="y\n", mode="stripped"),
    Case("set-memory-partition.MI300X.NPS1.8gpu.rocm64.txt", ["set", "--memory-partition", "NPS1"], "6.4",
         compute="QPX", memory="NPS4", stdin="Y\n", mode="stripped"),
    Case("set-memory-partition.MI300X.NPS1.rocm63.txt", ["set", "-M", "NPS1"], "6.3", compute="CPX",
         memory="NPS4", stdin="y\n", mode="stripped"),
    Case("set-memory-partition.MI300X.NPS4.oserror.rocm64.txt", ["set", "--memory-partition", "NPS4"], "6.4",
         compute="CPX", stdin="Y\n", mode="stripped"),
    Case("error.set-memory-partition.restart-err.MI300X.rocm632.txt", ["set", "--memory-partition", "NPS4"],
         "6.3.2", compute="CPX", processes={0: 1}, stdin="Y\n", mode="messages"),
    # errors
    Case("error.invalid-gpu.rocm7x.stderr.txt", ["static", "-g", "9"], "7.1", mode="exact", stream="stderr", exit=1),
    Case("error.required-command.json-mode.rocm7x.json", ["set", "--json"], "7.1", mode="exact"),
    Case("error.set-compute-partition.invalid-type-TPX.MI300X.rocm7x.stdout.txt", ["set", "-C", "TPX"], "7.1",
         mode="exact", exit=1, stderr_file="error.set-compute-partition.invalid-type-TPX.MI300X.rocm7x.stderr.txt"),
    Case("error.set-compute-partition.nonroot.rocm7x.stderr.txt", ["set", "-C", "CPX"], "7.1", root=False,
         mode="exact", stream="stderr", exit=1),
    Case("error.set-compute-partition.no-sudo.rocm64.stderr.txt",
         ["set", "--gpu", "all", "--compute-partition", "SPX"], "6.4", root=False, mode="stripped",
         stream="stderr", exit=1),
    Case("error.set-compute-partition.busy.rocm64.stderr.txt",
         ["set", "--gpu", "all", "--compute-partition", "SPX"], "6.4", processes={0: 2}, mode="stripped",
         stream="stderr", exit=1),
    Case("error.set-compute-partition.setting-unavailable.SPX-under-NPS4.rocm64.txt",
         ["set", "--gpu", "all", "--compute-partition", "SPX"], "6.4", compute="CPX", memory="NPS4",
         mode="stripped", stream="both", exit=1),
    Case("error.set-compute-partition.invalid-choice.rocm640.stderr.txt", ["set", "-C", "DPX"], "6.4",
         quirks=["argparse_char_choices"], mode="stripped", stream="stderr", exit=2),
    Case("version.rocm64.txt", ["version"], "6.4", mode="version"),
]

NOT_REPRODUCED = {
    "README.md": "documentation, not a sample",
    "default.MI300X.SPX-NPS1.8gpu.rocm70.txt": "default table view (`amd-smi` alone) and its process table are not emulated",
    "default.MI300X.DPX-NPS1.rocm702.partial.txt": "default table view is not emulated",
    "monitor-power-temp-vram.MI300X.QPX.32gpu.rocm63.txt": "`amd-smi monitor` is not emulated",
    "monitor.MI300X.CPX.rocm641.txt": "`amd-smi monitor` is not emulated",
    "set-power-cap.MI300X.DPX.rocm70.txt": "`set --power-cap` is not emulated",
    "static.MI300A.SPX-NPS1.rocm71.txt": ("full `static` (CPU block, ifwi/limit/board/ras/numa/cache sections) is not emulated; "
                                          "asic/bus/driver/vram/partition only"),
    "error.set-partition.invalid-parameter.rocm641.txt": "SR-IOV guest / non-bare-metal mode (partition options absent) is not emulated",
    "error.set-compute-partition.invalid-type-TPX.MI300X.rocm7x.stderr.txt": "covered together with its .stdout.txt pair",
}

BDF = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def test_every_fixture_is_classified():
    files = {p.name for p in FIXTURES.iterdir() if p.is_file()}
    assert files, f"no fixtures in {FIXTURES}"
    covered = {c.file for c in CASES} | set(NOT_REPRODUCED)
    assert files - covered == set(), "unclassified fixtures"
    assert covered - files == set(), "classified fixtures that no longer exist"


# -- comparison helpers ------------------------------------------------------------------
def compare_json(expected, actual, path="$", keys_only=False, key=None):
    if keys_only and not (isinstance(expected, (dict, list)) and isinstance(actual, (dict, list))):
        return  # leaves not compared (e.g. a GPU with voltage sensors)
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected object, got {actual!r}"
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for k in expected:
            compare_json(expected[k], actual[k], f"{path}.{k}", keys_only, k)
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected list, got {actual!r}"
        assert len(actual) == len(expected), f"{path}: {len(actual)} items != {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            compare_json(e, a, f"{path}[{i}]", keys_only, key)
    elif expected in ("N/A", "") or actual in ("N/A", ""):
        assert actual == expected, f"{path}: {actual!r} != {expected!r} (N/A/empty placement)"
    elif key in EXACT_KEYS:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
    else:
        assert type(actual) is type(expected), f"{path}: {type(actual).__name__} != {type(expected).__name__}"


KEY_LINE = re.compile(r"^(\s*)([A-Z][A-Z0-9_ ]*):(.*)$")


def human_keys(text: str, upto_ellipsis: bool) -> list:
    out = []
    for line in text.splitlines():
        if line.strip() == "...":
            if upto_ellipsis:
                break
            continue
        m = KEY_LINE.match(line)
        if m:
            out.append((len(m.group(1)), m.group(2), m.group(3).strip()))
    return out


def prefix_lines(fixture: str) -> list[str]:
    """Lines of a fixture, cut at an excerpt marker ('...')."""
    lines = fixture.splitlines()
    if "..." in [l.strip() for l in lines]:
        lines = lines[: [l.strip() for l in lines].index("...")]
    return lines


def normalise(line: str) -> str:
    line = BDF.sub("<BDF>", line.strip())
    line = re.sub(r"\[Y/N\] \S+$", "[Y/N]", line)
    return re.sub(r"\s+", " ", line)


def stripped(text: str) -> list[str]:
    out = []
    for line in text.replace("\r", "\n").splitlines():
        if "secs remain" in line:
            out.append("<progress>")
        elif line.strip():
            out.append(normalise(line))
    return [l for i, l in enumerate(out) if not (l == "<progress>" and i and out[i - 1] == "<progress>")]


# -- the parametrized check --------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_fixture_reproduced(case: Case, tmp_path):
    fixture = (FIXTURES / case.file).read_bytes().decode()
    state = tmp_path / "state.json"
    make_state(state, case.gpu, case.count, case.rocm, root=case.root, compute=case.compute,
               memory=case.memory, processes=case.processes, quirks=case.quirks)
    res = run_emulator(state, *case.argv, stdin=case.stdin)
    assert res.returncode == case.exit, (res.stdout[-2000:], res.stderr)
    if case.stream == "stdout":
        got, other = res.stdout, res.stderr
        assert other == "" or case.stderr_file, f"unexpected stderr: {other}"
    elif case.stream == "stderr":
        got, other = res.stderr, res.stdout
        if case.mode != "stripped" or "usage:" not in fixture:
            assert other == "" or case.stdin, f"unexpected stdout: {other}"
    else:
        got = res.stdout + res.stderr
    if case.stderr_file:
        assert res.stderr == (FIXTURES / case.stderr_file).read_bytes().decode()

    if case.mode in ("json", "json_keys"):
        compare_json(json.loads(fixture), json.loads(got), keys_only=case.mode == "json_keys")
    elif case.mode == "csv":
        exp_lines, got_lines = fixture.split("\r\n"), got.split("\r\n")
        assert got_lines[0] == exp_lines[0], "CSV header"
        assert len(got_lines) == len(exp_lines), "CSV row count"
        assert [l.count(",") for l in got_lines] == [l.count(",") for l in exp_lines]
        assert got.endswith("\r\n\n") and fixture.endswith("\r\n\n")
    elif case.mode == "human_keys":
        exp = human_keys(fixture, True)
        act = human_keys(got, False)[: len(exp)]
        assert [(i, k) for i, k, _ in act] == [(i, k) for i, k, _ in exp]
        for (_, k, v_exp), (_, _, v_act) in zip(exp, act):
            if k in case.exact_human or v_exp == "N/A":
                assert v_act == v_exp, f"{k}: {v_act!r} != {v_exp!r}"
    elif case.mode == "exact":
        exp_lines = prefix_lines(fixture)
        act_lines = got.splitlines()[: len(exp_lines)]
        if case.truncated:
            assert act_lines[-1].startswith(exp_lines[-1])
            exp_lines, act_lines = exp_lines[:-1], act_lines[:-1]
        assert act_lines == exp_lines
        if not (case.excerpt or case.truncated or "..." in fixture):
            assert got.rstrip("\n") == fixture.rstrip("\n")
    elif case.mode == "stripped":
        exp = stripped("\n".join(prefix_lines(fixture)))
        exp = [l for l in exp if not l.startswith("OSError")]  # 6.4.0 host bug, see rules tests
        act = stripped(got)
        if "usage:" in fixture:  # argparse usage text differs by Python version: compare the error line
            exp, act = exp[-1:], act[-1:]
        assert act[: len(exp)] == exp
    elif case.mode == "shape":
        exp_lines = prefix_lines(fixture)
        exp_lines = [l for l in exp_lines if l.strip()]
        act_lines = [l for l in got.splitlines() if l.strip()][: len(exp_lines)]
        for e, a in zip(exp_lines, act_lines):
            if re.match(r"^(\d|N/A)", e):  # table data row: same number of columns
                assert len(a.split()) == len(e.split()), (a, e)
                assert a.split()[0] == e.split()[0]
            elif KEY_LINE.match(e):
                assert KEY_LINE.match(a).group(2) == KEY_LINE.match(e).group(2)
            else:  # section titles and headers (token-wise: widths differ between 6.3 builds)
                assert a.split() == e.split()
        assert len(act_lines) == len(exp_lines)
    elif case.mode == "messages":
        banner = [l for l in stripped(fixture) if not l.startswith(("GPU", "MEMORY", "driver", "memory"))]
        assert stripped(got)[: len(banner) - 1] == banner[:-1]
        flat = lambda t: BDF.sub("<BDF>", re.sub(r"\s+", " ", t))  # noqa: E731
        pattern = re.compile(r"MEMORY_PARTITION: \[[A-Z_]+\].*?BDF:<BDF>")
        exp = pattern.findall(flat(fixture))
        assert len(exp) == 2
        assert pattern.findall(flat(got))[:2] == exp
    elif case.mode == "version":
        commands = [["version"], ["version", "-g"], ["version", "-c"]]
        blocks = [b for b in re.split(r"\n\$ amd-smi version[^\n]*\n", fixture) if b.strip()]
        for argv, block in zip(commands, blocks):
            out = run_emulator(state, *argv).stdout
            labels = lambda t: [f.split(":")[0].strip() for f in t.strip().split(" | ")]  # noqa: E731
            assert labels(out) == labels(block)
    else:  # pragma: no cover
        raise AssertionError(case.mode)

"""amd-smi invocations and time per compute-mode change and per telemetry sample, against the
amd-smi emulator (a real subprocess per invocation, as on a node).

Measured in the same run, on one emulated node (MI300X, ROCm 7.1, ``--gpus`` GPUs):

- a compute-mode change as the reconfiguration runner drives the backend (read the node, ``set
  -C``, the runner's own read-back), alternating SPX/CPX on GPU 0: the backend as shipped
  (phase reads + cached layout facts) against the same backend with both caches off, i.e.
  every read a full ``static``/``list``/``partition`` (what a backend that trusts nothing
  cached would do);
- a telemetry sample: ``metrics()`` through the amdsmi library (the emulator's **emulated**
  library face, ``amdsmi_emulator/pylib``) against ``amd-smi metric``.

Counts come from the emulator's call log (``AMD_SMI_EMULATOR_CALL_LOG``). Prints counts, median
times and ratios; the last stdout line is one JSON object. ``--quick``: a few seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amdsmi_emulator.state import EmulatorState  # noqa: E402
from partitions.backends import get_backend  # noqa: E402
from partitions.backends.amdsmi import forget_node_facts  # noqa: E402
from partitions.backends.amdsmi_library import emulator_library_path  # noqa: E402


def calls(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if '"start"' in line) if log.exists() else 0


def backend(state: Path, log: Path, **options):  # type: ignore[no-untyped-def]
    env = {"AMD_SMI_EMULATOR_CALL_LOG": str(log)}
    return get_backend("emulator", state_file=state, env=env, timeout=60, poll_interval=0.05, **options)


def changes(b, log: Path, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(invocations, median seconds) per change, as partitions/reconfigure.py calls the backend."""
    counts, times = [], []
    for i in range(n):
        mode = "CPX" if i % 2 == 0 else "SPX"
        before, started = calls(log), time.perf_counter()
        b.inventory()  # "read the hardware state"
        b.set_compute_mode([0], mode)
        b.inventory()  # "read back the new state"
        times.append(time.perf_counter() - started)
        counts.append(calls(log) - before)
    return statistics.mean(counts), statistics.median(times)


def samples(b, log: Path, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    counts, times = [], []
    for _ in range(n):
        before, started = calls(log), time.perf_counter()
        b.metrics()
        times.append(time.perf_counter() - started)
        counts.append(calls(log) - before)
    return statistics.mean(counts), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args()
    n_changes, n_samples = (4, 5) if args.quick else (10, 30)
    work = Path(tempfile.mkdtemp(prefix="aim-amdsmi-bench-"))
    results = {}
    for name, options in (("cached", {}), ("uncached", {"facts_max_age_s": -1, "reading_max_age_s": -1})):
        state, log = work / f"{name}.json", work / f"{name}.calls.jsonl"
        EmulatorState.create(state, gpu_model="MI300X", count=args.gpus, rocm="7.1")
        forget_node_facts()
        b = backend(state, log, **options)
        b.inventory()  # the agent's start-up sync
        count, seconds = changes(b, log, n_changes)
        results[name] = {"invocations": round(count, 2), "ms": round(seconds * 1000, 1)}
        print(f"compute-mode change, {name}: {count:.1f} amd-smi invocations, {seconds * 1000:.0f} ms", flush=True)
    state, log = work / "telemetry.json", work / "telemetry.calls.jsonl"
    EmulatorState.create(state, gpu_model="MI300X", count=args.gpus, rocm="7.1")
    telemetry = {}
    for name, options in (("library", {"library": emulator_library_path()}), ("cli", {})):
        b = backend(state, log, **options)
        b.metrics()  # warm-up (the library loads and initialises once)
        count, seconds = samples(b, log, n_samples)
        telemetry[name] = {"invocations": round(count, 2), "ms": round(seconds * 1000, 2), "source": b.telemetry_source()}
        print(f"telemetry sample, {name} ({b.telemetry_source()}): {count:.1f} amd-smi invocations, "
              f"{seconds * 1000:.1f} ms", flush=True)
    ratios = {"change_invocations": round(results["uncached"]["invocations"] / results["cached"]["invocations"], 2),
              "change_time": round(results["uncached"]["ms"] / results["cached"]["ms"], 2),
              "sample_time_cli_vs_library": round(telemetry["cli"]["ms"] / telemetry["library"]["ms"], 2)}
    print(f"uncached / cached per change: invocations x{ratios['change_invocations']}, time x{ratios['change_time']}; "
          f"CLI / library per sample: time x{ratios['sample_time_cli_vs_library']} (target: <= 6 invocations per change, "
          "0 per sample with the library)", flush=True)
    print(json.dumps({"benchmark": "amdsmi_calls", "quick": args.quick, "gpus": args.gpus, "change": results,
                      "telemetry": telemetry, "ratios": ratios}))


if __name__ == "__main__":
    main()

"""The demo's process supervisor (aimconsole/supervise.py): a real child that crashes and is
killed comes back each time, with doubling delays; SIGTERM stops both for good."""

from __future__ import annotations

import os
import re
import signal
import sys

import pytest

from aimconsole.supervise import Backoff, describe_exit
from tests.processes import Process, wait_for

# Crashes (status 3) on its first two runs, then stays up until killed. Counts its runs in a file.
CHILD = """
import os, sys, time
from pathlib import Path
runs = Path(sys.argv[1])
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
print(f"child run {n} pid {os.getpid()}", flush=True)
if n <= 2:
    sys.exit(3)
time.sleep(600)
"""


@pytest.mark.parametrize(("failures", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (40, 30.0)])
def test_each_quick_failure_doubles_the_delay_up_to_the_maximum(failures, delay):
    assert Backoff(initial=1.0, maximum=30.0).delay(failures) == delay


@pytest.mark.parametrize(("before", "ran_for", "after"), [(0, 0.5, 1), (3, 29.9, 4), (3, 30.0, 1), (7, 3600.0, 1)])
def test_a_run_that_lasted_resets_the_count(before, ran_for, after):
    assert Backoff(stable_after=30.0).failures_after(before, ran_for) == after


@pytest.mark.parametrize(("code", "text"), [(3, "exited with status 3"), (0, "exited with status 0"),
                                            (-9, "killed by SIGKILL"), (-15, "killed by SIGTERM")])
def test_the_log_says_how_the_process_ended(code, text):
    assert describe_exit(code) == text


def _runs(proc: Process) -> list[tuple[int, int]]:
    """(run number, pid) of every child run so far."""
    return [(int(n), int(pid)) for n, pid in re.findall(r"child run (\d+) pid (\d+)", proc.output())]


def _restarts(proc: Process) -> list[tuple[str, int, str]]:
    """(why, restart number, delay) of every restart so far."""
    return re.findall(r"crashy: (.+?) after [\d.]+ s; restart (\d+) in ([\d.]+) s", proc.output())


def test_a_crashing_and_killed_child_is_restarted_with_backoff_until_the_supervisor_stops(tmp_path):
    runs = tmp_path / "runs"
    proc = Process([sys.executable, "-m", "aimconsole.supervise", "crashy", "--backoff", "0.01", "--max-backoff", "0.04",
                    "--stable-after", "600", "--", sys.executable, "-c", CHILD, str(runs)],
                   {**os.environ, "PYTHONUNBUFFERED": "1"}, tmp_path / "supervise.log")
    try:
        # Two crashes on its own, each restarted after a longer delay.
        wait_for(lambda: len(_runs(proc)) == 3, 60, "the third run")
        assert [(why, int(n), float(d)) for why, n, d in _restarts(proc)] == [
            ("exited with status 3", 1, 0.01), ("exited with status 3", 2, 0.02)]

        # Killed from outside, twice: back each time; the delay keeps doubling, then stays capped.
        for expected_runs, delay in ((4, 0.04), (5, 0.04)):
            _, pid = _runs(proc)[-1]
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda n=expected_runs: len(_runs(proc)) == n, 60, f"run {expected_runs}")
            assert _restarts(proc)[-1] == ("killed by SIGKILL", str(expected_runs - 1), f"{delay:.2f}")
        assert proc.alive()

        # SIGTERM to the supervisor alone: passed on to the child, no restart, a clean exit.
        _, last_pid = _runs(proc)[-1]
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
        assert "crashy: stopped" in proc.output()
        with pytest.raises(ProcessLookupError):
            os.kill(last_pid, 0)
        assert runs.read_text() == "5" and len(_restarts(proc)) == 4
    finally:
        proc.stop()

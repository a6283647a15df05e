"""Keep one process running: restart it when it exits, with exponential backoff.

``python -m aimconsole.supervise NAME -- COMMAND [ARG ...]`` runs COMMAND and, whenever it
exits (a crash, a kill, even status 0), logs why and starts it again after a delay that doubles
with every quick failure: ``--backoff`` seconds, then 2×, 4×, … up to ``--max-backoff``. A run
that lasted ``--stable-after`` seconds or more counts as healthy, so the next failure starts
from the first delay again.

The demo's Procfile runs every process under it: honcho stops the whole demo as soon as one
of its processes exits, and the supervisor is the process honcho sees, so a crashed agent,
web server or Redis comes back instead of taking the demo down. SIGTERM or SIGINT to the
supervisor (honcho sends SIGTERM on Ctrl-C) is passed on to the child; the supervisor waits
for it and exits 0 without restarting. The child stays in the supervisor's process group, so
honcho's group-wide signals reach it too.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("aimconsole.supervise")


@dataclass(frozen=True)
class Backoff:
    """Restart delays in seconds: ``initial`` after the first quick failure, doubling with
    each consecutive one, never above ``maximum``. A run of ``stable_after`` seconds or longer
    resets the count."""

    initial: float = 1.0
    maximum: float = 30.0
    stable_after: float = 30.0

    def delay(self, consecutive_failures: int) -> float:
        """Delay before the restart that follows the ``consecutive_failures``-th quick failure (≥ 1)."""
        return float(min(self.maximum, self.initial * 2.0 ** max(0, consecutive_failures - 1)))

    def failures_after(self, consecutive_failures: int, ran_for_s: float) -> int:
        """The consecutive-failure count once a run of ``ran_for_s`` seconds has ended."""
        return 1 if ran_for_s >= self.stable_after else consecutive_failures + 1


def describe_exit(returncode: int) -> str:
    """``exited with status 3`` or ``killed by SIGKILL`` (Popen reports a signal as ``-signum``)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Supervisor:
    """Runs ``argv`` until ``stop()``; each exit is logged and followed by a restart."""

    def __init__(self, name: str, argv: list[str], backoff: Backoff) -> None:
        self.name = name
        self.argv = argv
        self.backoff = backoff
        self.restarts = 0
        # A plain flag, not a threading.Event: stop() runs in a signal handler, which may
        # interrupt this same thread while it holds the Event's (non-reentrant) lock.
        self._stopping = False
        self._signum: int = signal.SIGTERM
        self._child: subprocess.Popen[bytes] | None = None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop for good: pass ``signum`` on to the running child; no restart follows."""
        self._stopping = True
        self._signum = signum
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def run(self) -> int:
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            try:
                self._child = subprocess.Popen(self.argv)
            except OSError as exc:
                # A missing executable is a failure like any other: retried with backoff.
                log.error("%s: could not start %s: %s", self.name, self.argv[0], exc)
                returncode = None
            else:
                if self._stopping:  # the signal came while it was starting
                    self._child.send_signal(self._signum)
                log.info("%s: started (pid %d)%s", self.name, self._child.pid,
                         f", restart {self.restarts}" if self.restarts else "")
                returncode = self._child.wait()  # a signal handler runs meanwhile; wait() resumes
            if self._stopping:
                break
            ran_for = time.monotonic() - started
            failures = self.backoff.failures_after(failures, ran_for)
            delay = self.backoff.delay(failures)
            why = "did not start" if returncode is None else describe_exit(returncode)
            self.restarts += 1
            log.warning("%s: %s after %.1f s; restart %d in %.2f s", self.name, why, ran_for, self.restarts, delay)
            self._sleep(delay)
        child = self._child
        if child is not None:
            child.wait()
        log.info("%s: stopped", self.name)
        return 0

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking within 0.1 s of stop()."""
        deadline = time.monotonic() + seconds
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aimconsole.supervise", description=(__doc__ or "").split("\n\n")[0],
                                     usage="%(prog)s NAME [options] -- COMMAND [ARG ...]")
    parser.add_argument("name", help="the process's name in the log (e.g. agent1)")
    parser.add_argument("--backoff", type=float, default=Backoff.initial, help="first restart delay, s (default %(default)s)")
    parser.add_argument("--max-backoff", type=float, default=Backoff.maximum, help="longest delay, s (default %(default)s)")
    parser.add_argument("--stable-after", type=float, default=Backoff.stable_after,
                        help="a run this long resets the delay, s (default %(default)s)")
    argv = sys.argv[1:] if argv is None else argv
    # Everything after the first "--" is the command, options included.
    split = argv.index("--") if "--" in argv else len(argv)
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]
    if not command:
        parser.error("give the command to run after --")
    if not (0 < args.backoff <= args.max_backoff) or args.stable_after < 0:
        parser.error("need 0 < --backoff <= --max-backoff and --stable-after >= 0")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    supervisor = Supervisor(args.name, command, Backoff(args.backoff, args.max_backoff, args.stable_after))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        supervisor.stop(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return supervisor.run()


if __name__ == "__main__":
    raise SystemExit(main())

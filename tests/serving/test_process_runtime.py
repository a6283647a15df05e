"""The ``process`` runtime end to end in this process (the test is the node agent's loops
process: it owns the supervisor and ticks it): a deployment on an emulated node starts real
engine-emulator processes, they become ready and answer HTTP, a killed one is restarted, a
reconfiguration's drain stops them before amd-smi runs, and stopping the deployment leaves no
process behind. Real processes, real HTTP, the amd-smi emulator; no mock."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from amdsmi_emulator import engines
from models.models import ModelProfile
from partitions.models import GPU
from partitions.reconfigure import run_reconfiguration
from partitions.services.reconfiguration import request_reconfiguration
from planning.services import DemandSpec
from serving.models import Deployment, Replica
from serving.runtime import process
from serving.services import create_deployment, reconcile_node, stop_deployment, supervise_node
from tests.emulated_nodes import make_emulated_node

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SMALL = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def process_node(tmp_path, settings, catalog, fast_ops):
    settings.SERVING_DIR = tmp_path / "serving"
    settings.SERVING_STOP_GRACE_S = 3.0
    settings.SERVING_BACKOFF_S = 0.1
    settings.SERVING_SUPERVISE_S = 0.2
    settings.SERVING_START_TIMEOUT_S = 60.0
    settings.ENGINE_EMULATOR_TIME_SCALE = 0.01
    emulated = make_emulated_node(tmp_path, "emu-p", gpus=2)
    emulated.node.runtime = "process"
    emulated.node.save(update_fields=["runtime"])
    yield emulated
    sup = process.supervisor_for(emulated.node)
    if sup is not None:
        sup.converge([])
    process.release_supervisor(emulated.node.name)


def small_profile() -> ModelProfile:
    return ModelProfile.objects.filter(model__hf_id=SMALL, gpu_model="MI300X").order_by("context_tokens").first()


def tick_until(node, predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervise_node(node=node)
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    rows = list(Replica.objects.values_list("key", "state", "reason"))
    raise AssertionError(f"timed out waiting for {what}; replicas: {rows}")


def alive(pid: int) -> bool:
    """Running (a zombie, exited and not yet reaped by this test process, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ready_copies(deployment: Deployment, n: int) -> list[Replica]:
    rows = list(Replica.objects.filter(deployment=deployment, state="ready"))
    return rows if len(rows) == n else []


def test_a_deployment_runs_as_supervised_processes_that_serve_and_stop(process_node):
    node = process_node.node
    deployment = create_deployment(spec=DemandSpec(name="chat", profile=small_profile(), replicas=2, spread=True))
    copies = tick_until(node, lambda: ready_copies(deployment, 2), "two ready copies")

    deployment.refresh_from_db()
    assert deployment.state == "running" and deployment.runtime in ("", "process")
    assert {c.runtime for c in copies} == {"process"} and len({c.port for c in copies}) == 2
    for copy in copies:
        # The partition's device visibility reaches the process, with no shell between.
        environ = open(f"/proc/{copy.pid}/environ", "rb").read().split(b"\0")
        logical = str(copy.partitions[0]["logical_index"]).encode()
        assert b"ROCR_VISIBLE_DEVICES=" + logical in environ
        reply = httpx.post(f"{copy.endpoint}/v1/completions", json={"model": "chat", "prompt": "hello", "max_tokens": 4}, timeout=10)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 4
        # The amd-smi emulator sees the engine on its GPU: repartitioning it would be refused.
        gpu = process_node.state.data["gpus"][copy.partitions[0]["gpu_index"]]
        assert copy.pid in engines.live_engine_pids(gpu)

    # A copy killed outright is restarted: restarting, then ready again with a new process.
    victim = copies[0]
    os.kill(victim.pid, signal.SIGKILL)
    seen: set[str] = set()

    def back() -> Replica | None:
        row = Replica.objects.get(pk=victim.pk)
        seen.add(row.state)
        return row if row.state == "ready" and row.pid != victim.pid else None

    restarted = tick_until(node, back, "the killed copy to come back")
    assert "restarting" in seen and restarted.restarts == 1 and alive(restarted.pid)

    pids = [restarted.pid, copies[1].pid]
    stop_deployment(deployment=deployment)
    reconcile_node(node=node)
    assert not any(alive(pid) for pid in pids)
    assert set(Replica.objects.filter(deployment=deployment).values_list("state", flat=True)) == {"stopped"}
    assert not list((process.root_for(node.name)).glob("*.json"))


def test_a_reconfiguration_drains_the_processes_before_amd_smi_runs(process_node):
    node = process_node.node
    deployment = create_deployment(spec=DemandSpec(name="chat", profile=small_profile(), replicas=1, pin_node=node, pin_gpu_index=0))
    (copy,) = tick_until(node, lambda: ready_copies(deployment, 1), "a ready copy")

    op = request_reconfiguration(gpu=GPU.objects.get(node=node, index=0), compute_mode="CPX", drain=True, reason="test")
    run_reconfiguration(op.pk)
    op.refresh_from_db()
    # amd-smi refuses a GPU with a live engine (BUSY): success means the process was gone first.
    assert op.state == "succeeded", (op.error_code, op.error_message)
    drain = op.steps.get(action="drain")
    assert f"process {copy.pid}" in drain.message
    assert not alive(copy.pid)
    assert Replica.objects.get(pk=copy.pk).state == "stopped"
    assert process_node.state.compute_mode(0) == "CPX"


def test_outside_the_supervising_process_a_freed_copy_is_stopped_through_its_pid_file(process_node):
    node = process_node.node
    deployment = create_deployment(spec=DemandSpec(name="chat", profile=small_profile(), replicas=1))
    (copy,) = tick_until(node, lambda: ready_copies(deployment, 1), "a ready copy")
    # Another process (the agent's Celery worker) has no supervisor: it never starts copies, and
    # stops the ones whose slots are gone through their pid files before it returns.
    process.release_supervisor(node.name)
    stop_deployment(deployment=deployment)
    reconcile_node(node=node)
    assert not alive(copy.pid)
    assert not (process.root_for(node.name) / f"{copy.key}.json").exists()


def test_a_copy_that_never_becomes_ready_fails_with_its_log_and_degrades_the_deployment(process_node, settings, monkeypatch):
    node = process_node.node
    settings.SERVING_START_TIMEOUT_S = 1.5
    deployment = create_deployment(spec=DemandSpec(name="stuck", profile=small_profile(), replicas=1))
    # The engine emulator's own fault switch: /health answers 503 forever.
    original = process.process_spec

    def never_ready(node_, copy):
        spec = original(node_, copy)
        return type(spec)(key=spec.key, argv=(*spec.argv, "--fault", "never-ready"), env=spec.env, served_model=spec.served_model)

    monkeypatch.setattr(process, "process_spec", never_ready)
    failed = tick_until(node, lambda: Replica.objects.filter(deployment=deployment, state="failed").first(), "the copy to fail", 30)
    assert "not ready" in failed.reason and failed.log_tail
    deployment.refresh_from_db()
    assert deployment.state == "degraded" and "replica 0 failed" in deployment.state_message


def test_a_plan_moves_a_serving_replica_and_it_serves_where_the_plan_puts_it(process_node, monkeypatch):
    from partitions.models import Reconfiguration
    from planning.models import Plan
    from planning.planner import GpuTarget
    from planning.services import apply_plan, create_plan

    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)  # run in this process below
    node = process_node.node
    deployment = create_deployment(spec=DemandSpec(name="chat", profile=small_profile(), replicas=1, pin_node=node, pin_gpu_index=0))
    (old,) = tick_until(node, lambda: ready_copies(deployment, 1), "a ready copy")
    plan = create_plan(gpu_targets=[GpuTarget(node=node.name, gpu_index=0, compute_mode="CPX")])
    (displaced,) = plan.result["displaced"]
    # The small model fits a CPX partition of the same GPU: it stops at the drain, then starts there.
    assert displaced["move"] == "stop-then-start"
    apply_plan(plan=Plan.objects.get(pk=plan.pk))
    (op,) = Reconfiguration.objects.filter(plan=plan)
    assert run_reconfiguration(op.pk) == "succeeded"  # amd-smi refuses a GPU with a live engine: the drain stopped it first
    assert not alive(old.pid) and Replica.objects.get(pk=old.pk).state == "stopped"

    def moved() -> Replica | None:
        reconcile_node(node=node)  # the agent's sweeper binds the move's new partitions
        return Replica.objects.filter(deployment=deployment, state="ready").first()

    new = tick_until(node, moved, "the moved replica to serve")
    target = displaced["to"][0]
    assert (new.node.name, new.partitions[0]["gpu_index"], new.partitions[0]["partition_index"]) == (
        target["node"], target["gpu_index"], target["partition_index"])
    reply = httpx.post(f"{new.endpoint}/v1/completions", json={"model": "chat", "prompt": "hi", "max_tokens": 2}, timeout=10)
    assert reply.status_code == 200
    assert process_node.state.compute_mode(0) == "CPX"
    deployment.refresh_from_db()
    assert deployment.state == "running"


def test_stopping_a_deployment_while_a_request_streams_ends_it_cleanly_and_leaves_no_process(process_node, settings):
    import threading

    settings.ENGINE_EMULATOR_TIME_SCALE = 1.0  # a stream that lasts: 400 tokens at ~10 ms each
    node = process_node.node
    deployment = create_deployment(spec=DemandSpec(name="chat", profile=small_profile(), replicas=1))
    (copy,) = tick_until(node, lambda: ready_copies(deployment, 1), "a ready copy")
    outcome: dict[str, object] = {}
    first = threading.Event()

    def stream() -> None:
        lines = []
        try:
            body = {"model": "chat", "prompt": "hello", "max_tokens": 400, "stream": True}
            with httpx.stream("POST", f"{copy.endpoint}/v1/completions", json=body, timeout=30) as response:
                for line in response.iter_lines():
                    lines.append(line)
                    first.set()
            outcome["lines"] = lines
        except httpx.HTTPError as exc:
            outcome["error"] = exc
        first.set()

    thread = threading.Thread(target=stream)
    thread.start()
    assert first.wait(20)
    stop_deployment(deployment=deployment)
    reconcile_node(node=node)  # returns once the process is gone (SIGTERM; SIGKILL after the grace)
    thread.join(20)
    assert not thread.is_alive()
    assert not alive(copy.pid)
    # The engine let the running sequence finish within its shutdown grace, or ended it: either way
    # the stream closed with [DONE] (never a hang, never a half event).
    lines = [line for line in outcome.get("lines", []) if line]
    assert "error" not in outcome and lines[-1] == "data: [DONE]", outcome

"""The reliability table of the operations issue, with a real Redis broker, real node agents
(Celery worker processes started with ``manage.py run_agent``) and the amd-smi emulator."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from django.db import connection

from partitions import operations as ops
from partitions.models import GPU, Node, Reconfiguration
from tests.emulated_nodes import make_emulated_node
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]


def finished(op_id: int, timeout: float = 90) -> Reconfiguration:
    def done():  # type: ignore[no-untyped-def]
        op = Reconfiguration.objects.get(pk=op_id)
        return op if op.is_terminal else None
    return wait_for(done, timeout, f"operation #{op_id} to finish")  # type: ignore[return-value]


def actions(op: Reconfiguration) -> list[str]:
    return list(op.steps.order_by("seq").values_list("action", flat=True))


def overlapping(calls: list[dict]) -> list[tuple[dict, dict]]:
    spans = sorted((c for c in calls if c["start"] is not None), key=lambda c: c["start"])
    return [(a, b) for a, b in zip(spans, spans[1:]) if a["end"] is None or b["start"] < a["end"]]


def reconfigure(client, gpu: GPU, mode: str):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/gpus/{gpu.pk}/reconfigure/", {"compute_mode": mode}, format="json")


def test_twenty_concurrent_requests_for_one_gpu(tmp_path, start_agent, api_client_for, operator):
    emulated = make_emulated_node(tmp_path, "emu-c", gpus=2)
    gpu = GPU.objects.get(node=emulated.node, index=0)
    start_agent("emu-c")

    def request(i: int) -> int:
        try:
            return reconfigure(api_client_for(operator), gpu, "CPX" if i % 2 else "DPX").status_code
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(request, range(20)))
    assert sorted(codes).count(202) == 1 and codes.count(409) == 19, codes
    (op,) = Reconfiguration.objects.all()
    op = finished(op.pk)
    assert op.state == ops.SUCCEEDED, actions(op)
    sets = emulated.calls("set")
    assert len(sets) == 1 and not overlapping(sets)
    assert emulated.state.compute_mode(0) == op.target_compute_mode


def test_worker_killed_during_an_nps_change_converges(tmp_path, start_agent, api_client_for, operator):
    emulated = make_emulated_node(tmp_path, "emu-k", gpus=2, rocm="6.4.1")
    # The tool's own driver reload (6.4) takes 6 s: long enough to kill the worker inside it.
    emulated.state.add_fault({"match": "set -M", "kind": "slow_reload", "seconds": 6})
    first = start_agent("emu-k")
    response = api_client_for(operator).post("/api/v1/nodes/emu-k/reconfigure/",
                                             {"memory_mode": "NPS4", "compute_mode": "CPX"}, format="json")
    assert response.status_code == 202
    op_id = response.json()["id"]
    wait_for(lambda: Reconfiguration.objects.get(pk=op_id).state == ops.APPLYING, 60, "the apply step")
    time.sleep(1.5)  # inside amd-smi set -M
    first.kill()
    assert Reconfiguration.objects.get(pk=op_id).state == ops.APPLYING
    start_agent("emu-k")
    op = finished(op_id, timeout=120)
    assert op.state in (ops.SUCCEEDED, ops.ROLLED_BACK), (op.state, op.error_message, actions(op))
    assert actions(op).count(ops.STEP_APPLY) == 1
    assert op.attempts == 2 and op.fencing_token == 2
    modes = emulated.state.memory_modes()
    assert modes == (["NPS4"] * 2 if op.state == ops.SUCCEEDED else ["NPS1"] * 2)
    assert Node.objects.get(name="emu-k").schedulable


def test_hung_amd_smi_times_out_and_marks_the_gpu_unhealthy(tmp_path, start_agent, api_client_for, operator):
    emulated = make_emulated_node(tmp_path, "emu-h", gpus=2)
    emulated.state.add_fault({"match": "set -C", "kind": "hang"})
    start_agent("emu-h")
    gpu = GPU.objects.get(node=emulated.node, index=1)
    op = finished(reconfigure(api_client_for(operator), gpu, "CPX").json()["id"])
    assert op.state == ops.FAILED and op.error_code == "timeout"
    gpu.refresh_from_db()
    assert (gpu.health, gpu.schedulable) == ("unhealthy", False)
    hung = [c for c in emulated.calls("set")]
    assert len(hung) == 1 and hung[0]["end"] is None
    import os
    with pytest.raises(ProcessLookupError):
        os.kill(hung[0]["pid"], 0)  # the hung process group is gone


def test_partial_nps_change_leaves_the_node_unschedulable(tmp_path, start_agent, api_client_for, admin_user):
    emulated = make_emulated_node(tmp_path, "emu-p", gpus=8, rocm="6.4.1")
    emulated.state.add_fault({"match": "set -M", "kind": "partial", "gpus": 3, "times": 1})
    emulated.state.add_fault({"match": "set -M NPS1", "kind": "fail", "exit": 1, "message": "amdgpu: injected failure"})
    start_agent("emu-p")
    response = api_client_for(admin_user).post("/api/v1/nodes/emu-p/reconfigure/",
                                               {"memory_mode": "NPS4", "compute_mode": "CPX"}, format="json")
    op = finished(response.json()["id"])
    assert op.state == ops.FAILED
    assert "GPUs [0, 1, 2]" in op.error_message
    node = Node.objects.get(name="emu-p")
    assert not node.schedulable and "GPUs [0, 1, 2] in NPS4" in node.layout_problem


@pytest.mark.parametrize("fault, code", [
    ("busy", "device_busy"),
    ("nonroot", "permission_denied"),
    ("nps4", "setting_unavailable"),
])
def test_tool_refusals_fail_with_the_tools_reason_and_change_nothing(tmp_path, start_agent, api_client_for, operator, fault, code):
    emulated = make_emulated_node(tmp_path, "emu-r", gpus=2)
    start_agent("emu-r")
    if fault == "busy":
        emulated.state.set_processes(0, 1)
    elif fault == "nonroot":
        emulated.state.set_root(False)
    else:  # the hardware moved to NPS4 behind the console's back: DPX is refused there
        emulated.state.set_modes(compute="CPX", memory="NPS4")
    before = [emulated.state.compute_mode(i) for i in range(2)], emulated.state.memory_modes()
    gpu = GPU.objects.get(node=emulated.node, index=0)
    op = finished(reconfigure(api_client_for(operator), gpu, "DPX").json()["id"])
    assert op.state == ops.FAILED and op.error_code == code, (op.error_code, op.error_message)
    assert op.error_message
    assert ([emulated.state.compute_mode(i) for i in range(2)], emulated.state.memory_modes()) == before
    assert GPU.objects.get(pk=gpu.pk).health != "unhealthy"


def test_the_same_task_delivered_twice_changes_nothing_the_second_time(tmp_path, start_agent, operator):
    from partitions.services.reconfiguration import enqueue, request_reconfiguration

    emulated = make_emulated_node(tmp_path, "emu-d", gpus=2)
    gpu = GPU.objects.get(node=emulated.node, index=1)
    op = request_reconfiguration(gpu=gpu, compute_mode="QPX", requested_by=operator)
    assert enqueue(op.pk) and enqueue(op.pk)  # two messages for one operation
    start_agent("emu-d")
    op = finished(op.pk)
    time.sleep(3)  # let the second delivery run
    assert op.state == ops.SUCCEEDED
    assert actions(Reconfiguration.objects.get(pk=op.pk)).count(ops.STEP_CLAIMED) == 1
    assert len(emulated.calls("set")) == 1


@pytest.fixture
def private_redis(tmp_path, settings):  # type: ignore[no-untyped-def]
    """A Redis this test may stop and start, used by the test process and its agents."""
    from aimconsole import embedded
    from aimconsole.celery import app
    from tests.conftest import _wait_for_redis
    from tests.processes import free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    class Server:
        proc = None

        def start(self) -> None:
            self.proc = embedded.start_redis(port, tmp_path / "redis")
            _wait_for_redis(url)

        def stop(self) -> None:
            self.proc.terminate()
            self.proc.wait(10)

    server = Server()
    server.start()
    def use(broker: str) -> None:
        app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = broker
        app._pool = None  # drop pooled connections and producers to the previous Redis
        app.amqp._producer_pool = None

    old = app.conf.broker_url
    settings.REDIS_URL = url
    use(url)
    yield url, server
    use(old)
    if server.proc and server.proc.poll() is None:
        server.stop()


def test_redis_stopped_during_a_request(tmp_path, start_agent, process_env, api_client_for, operator, private_redis):
    url, server = private_redis
    emulated = make_emulated_node(tmp_path, "emu-b", gpus=2)
    start_agent("emu-b", env={**process_env, "REDIS_URL": url})
    gpu = GPU.objects.get(node=emulated.node, index=0)
    server.stop()

    started = time.monotonic()
    response = reconfigure(api_client_for(operator), gpu, "CPX")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"the API took {elapsed:.2f} s with Redis down"
    assert response.status_code == 202  # accepted: the intent is in the database
    op = Reconfiguration.objects.get(pk=response.json()["id"])
    assert op.state == ops.PENDING and op.enqueued_at is None

    time.sleep(2)
    assert Reconfiguration.objects.get(pk=op.pk).state == ops.PENDING  # nothing runs without a broker
    server.start()
    op = finished(op.pk, timeout=90)
    time.sleep(3)  # any duplicate message would have run by now
    op.refresh_from_db()
    assert op.state == ops.SUCCEEDED
    assert actions(op).count(ops.STEP_CLAIMED) == 1
    assert len(emulated.calls("set")) == 1

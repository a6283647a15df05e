"""A plan that moves a running replica, carried out by a real node agent (Celery worker
process started with ``manage.py run_agent``, real Redis broker, the amd-smi emulator)."""

from __future__ import annotations

import pytest

from models.models import ModelProfile
from partitions.models import GPU, Reconfiguration
from serving.models import Deployment, ReplicaMove
from tests.emulated_nodes import make_emulated_node
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]


def test_an_agent_moves_one_replica_make_before_break_and_the_deployment_keeps_serving(
        tmp_path, start_agent, api_client_for, operator, catalog):
    emulated = make_emulated_node(tmp_path, "emu-m", gpus=4)
    start_agent("emu-m")
    api = api_client_for(operator)
    big = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.3-70B-Instruct", precision__code="fp16",
                                   gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    created = api.post("/api/v1/deployments/", {"name": "big", "profile": big.pk, "replicas": 2}, format="json")
    assert created.status_code == 201, created.json()
    wait_for(lambda: Deployment.objects.get(name="big").state == "running", 60, "big to run")
    (slot,) = [s for s in created.json()["slots"] if s["replica"] == 0]
    gpu = GPU.objects.get(node=emulated.node, index=slot["gpu_index"])
    plan = api.post("/api/v1/plans/", {"gpus": [{"gpu": gpu.pk, "compute_mode": "CPX"}]}, format="json").json()
    assert plan["result"]["displaced"][0]["move"] == "make-before-break"

    assert api.post(f"/api/v1/plans/{plan['id']}/apply/").status_code == 202
    states: set[str] = set()
    serving: list[int] = []

    def moved() -> bool:
        deployment = Deployment.objects.get(name="big")
        states.add(deployment.state)
        serving.append(sum(int(g.get("console_replicas", 0)) for g in emulated.state.data["gpus"]))
        op = Reconfiguration.objects.filter(plan_id=plan["id"]).first()
        return bool(op and op.is_terminal and ReplicaMove.objects.filter(state="done").exists()
                    and emulated.state.compute_mode(gpu.index) == "CPX")

    wait_for(moved, 90, "the move and the reconfiguration", interval=0.1)
    op = Reconfiguration.objects.get(plan_id=plan["id"])
    assert op.state == "succeeded", op.error_message
    deployment = Deployment.objects.get(name="big")
    assert (deployment.state, deployment.replicas, deployment.slots.count()) == ("running", 2, 2)
    assert Deployment.objects.count() == 1
    assert states == {"running"}  # never degraded, never stopped
    assert min(serving) >= 2  # the old copy stopped only once the new one ran
    assert emulated.state.data["gpus"][gpu.index].get("processes", 0) == 0

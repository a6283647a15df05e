"""The ``process`` runtime under a real node agent (``manage.py run_agent``: Celery worker,
loops process, real Redis): the agent starts the engine-emulator processes, is SIGKILLed while
they serve, and the next agent adopts them: they keep serving throughout, no duplicate starts,
no port reused. Real processes and HTTP; the amd-smi emulator."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from models.models import ModelProfile
from serving.models import Deployment, Replica
from tests.emulated_nodes import make_emulated_node
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]


def engine_processes(state_file: Path) -> list[int]:
    """Pids of every running engine emulator on this node (its environment names the node's
    amd-smi state file), whoever started it: a duplicate start would show here."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"engine_emulator" in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z" and str(state_file).encode() in environ:
            found.append(int(proc.name))
    return found


def test_a_killed_agent_leaves_its_replicas_serving_and_the_next_one_adopts_them(tmp_path, start_agent, process_env, catalog):
    emulated = make_emulated_node(tmp_path, "emu-k", gpus=2)
    emulated.node.runtime = "process"
    emulated.node.save(update_fields=["runtime"])
    serving_dir = tmp_path / "serving"
    env = {**process_env, "AIM_SERVING_DIR": str(serving_dir), "AIM_ENGINE_EMULATOR_TIME_SCALE": "0.01",
           "AIM_SERVING_SUPERVISE_S": "0.3", "AIM_SERVING_STOP_GRACE_S": "3"}
    first = start_agent("emu-k", env=env)

    from planning.services import DemandSpec
    from serving.services import create_deployment

    profile = ModelProfile.objects.filter(model__hf_id="Qwen/Qwen2.5-0.5B-Instruct", gpu_model="MI300X").order_by("context_tokens").first()
    deployment = create_deployment(spec=DemandSpec(name="adopt", profile=profile, replicas=2, spread=True))

    def ready() -> list[Replica]:
        rows = list(Replica.objects.filter(deployment=deployment, state="ready"))
        return rows if len(rows) == 2 else []

    copies = wait_for(ready, 60, "two ready copies")
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).state == "running", 30, "the deployment to run")
    before = {c.key: (c.pid, c.port) for c in copies}

    # Traffic straight to the copies all along: none of it may fail while the agent is gone.
    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                for copy in copies:
                    try:
                        r = client.post(f"{copy.endpoint}/v1/completions", json={"model": "adopt", "prompt": "hi", "max_tokens": 2})
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text[:200]}")
                        served[0] += 1
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        first.kill()  # SIGKILL the agent's whole process group: the engines are in sessions of their own
        assert all(os.path.exists(f"/proc/{pid}") for pid, _ in before.values())
        served_while_down = served[0]
        start_agent("emu-k", env=env)
        wait_for(lambda: served[0] > served_while_down + 20, 30, "traffic after the restart")
    finally:
        stop.set()
        thread.join(15)
    assert not failures, failures[:5]
    pidfiles = sorted(p.stem for p in (serving_dir / "emu-k").glob("*.json"))
    assert pidfiles == sorted(before)

    # The new agent supervises what it adopted: a copy killed now is restarted by it, and the
    # other one keeps its process (adopted, never started twice).
    kept, victim = copies
    os.kill(victim.pid, signal.SIGKILL)

    def restarted() -> Replica | None:
        row = Replica.objects.get(key=victim.key)
        return row if row.state == "ready" and row.pid != victim.pid else None

    back = wait_for(restarted, 60, "the second agent to restart the killed copy")
    assert back.restarts == 1 and back.port != kept.port
    same = Replica.objects.get(key=kept.key)
    assert (same.pid, same.port, same.restarts, same.state) == (kept.pid, kept.port, 0, "ready")
    assert sorted(engine_processes(emulated.state_file)) == sorted([kept.pid, back.pid])

    from serving.services import stop_deployment

    stop_deployment(deployment=deployment)
    wait_for(lambda: not engine_processes(emulated.state_file), 30, "the processes to stop")

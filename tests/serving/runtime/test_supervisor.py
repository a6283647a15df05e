"""The serving supervisor with real processes: readiness, restarts, stops, adoption.

The copies are tests/serving/runtime/fake_engine.py (stdlib, quick to start) or the engine
emulator; timeouts, backoff and grace are small so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.runtime.supervisor import FAILED, READY, RESTARTING, STARTING, STOPPED, ProcessSpec, ProcessStatus, Supervisor, stop_recorded

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
FAKE_ENGINE = str(HERE / "fake_engine.py")
AGENT_SCRIPT = str(HERE / "agent_script.py")

FAST = {"probe_interval_s": 0.05, "probe_timeout_s": 1.0, "grace_s": 1.0, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
        "start_timeout_s": 15.0, "unhealthy_after": 2}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def poll_until(sup: Supervisor, key: str, state: str, timeout: float = 15.0, *, other_than: int | None = None) -> ProcessStatus:
    """Tick the supervisor until ``key`` is in ``state`` (and, with ``other_than``, on another pid)."""

    def reached() -> ProcessStatus | None:
        status = sup.poll().get(key)
        if status is None or status.state != state or (other_than is not None and status.pid == other_than):
            return None
        return status

    return wait_for(reached, f"{key} to be {state} (now {sup.statuses().get(key)})", timeout)


def stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def running(pid: int) -> bool:
    """Alive and not a zombie (zombies of adopted copies wait for this process to reap them)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in {"Z", "X"}


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def pids_with(marker: str) -> set[int]:
    """Live processes whose command line mentions ``marker`` (a served name unique to the test)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline and running(int(entry.name)):
                found.add(int(entry.name))
    return found


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def fake_spec(key: str, *extra: str, served: str | None = None, env: dict[str, str] | None = None) -> ProcessSpec:
    served = served or f"served-{key}-{os.getpid()}"
    argv = (sys.executable, FAKE_ENGINE, f"model-{key}", "--port", "{port}", "--served-model-name", served, *extra)
    return ProcessSpec(key=key, argv=argv, env=env or {}, served_model=served)


def emulator_spec(key: str, *extra: str, served: str | None = None) -> ProcessSpec:
    served = served or f"emu-{key}-{os.getpid()}"
    argv = (sys.executable, "-m", "engine_emulator", "tiny-model", "--port", "{port}", "--served-model-name", served,
            "--time-scale", "0.01", *extra)
    return ProcessSpec(key=key, argv=argv, env={}, served_model=served, cwd=str(REPO))


@pytest.fixture
def supervisors(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    """Make supervisors on tmp_path/root; at the end stop every copy any of them holds."""
    made: list[Supervisor] = []

    def make(**options: Any) -> Supervisor:
        sup = Supervisor(tmp_path / "root", **(FAST | options))
        made.append(sup)
        return sup

    yield make
    for sup in reversed(made):
        for key in list(sup.statuses()):
            sup.stop(key, reason="test over")
        sup.close()


@pytest.fixture
def events() -> list[ProcessStatus]:
    return []


def test_a_copy_is_starting_then_ready_with_its_endpoint_and_pid_file(supervisors: Callable[..., Supervisor], tmp_path: Path,
                                                                       events: list[ProcessStatus]) -> None:
    sup = supervisors(on_change=events.append)
    spec = emulator_spec("a", "--start-delay", "30")  # x time-scale 0.01: 0.3 s of model load

    first = sup.converge([spec])["a"]

    assert first.state == STARTING and first.endpoint == "" and first.pid and first.port
    ready = poll_until(sup, "a", READY)
    assert ready.pid == first.pid and ready.endpoint == f"http://127.0.0.1:{first.port}" and ready.ready_at
    assert httpx.get(f"{ready.endpoint}/v1/models").json()["data"][0]["id"] == spec.served_model
    record = json.loads((tmp_path / "root" / "a.json").read_text())
    assert (record["pid"], record["port"], record["spec_hash"]) == (first.pid, first.port, spec.fingerprint)
    assert int(stat_fields(first.pid)[19]) == record["start_ticks"]  # type: ignore[index]
    assert record["argv"][record["argv"].index("--port") + 1] == str(first.port) and "{port}" not in record["argv"]
    assert [(e.state, e.pid) for e in events] == [(STARTING, first.pid), (READY, first.pid)]


def test_argv_and_env_reach_the_process_literally_in_its_own_session(supervisors: Callable[..., Supervisor], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIM_SUPERVISOR_TEST_LEAK", "agent secret")
    sup = supervisors()
    dump = tmp_path / "dump.json"
    tricky = "a b; echo $HOME `id` > /tmp/x"
    spec = fake_spec("env", "--dump", str(dump), "--extra", tricky, "--also={port}",
                     env={"ROCR_VISIBLE_DEVICES": "3", "AIM_TEST_VALUE": "$HOME and spaces"})

    status = sup.converge([spec])["env"]

    info = wait_for(lambda: dump.exists() and json.loads(dump.read_text()), "the dump")
    assert info["argv"][info["argv"].index("--extra") + 1] == tricky
    assert f"--also={status.port}" in info["argv"] and info["argv"][2] == str(status.port)
    assert info["env"]["ROCR_VISIBLE_DEVICES"] == "3" and info["env"]["AIM_TEST_VALUE"] == "$HOME and spaces"
    assert "AIM_SUPERVISOR_TEST_LEAK" not in info["env"] and info["env"]["PATH"] == os.environ["PATH"]
    assert info["pid"] == status.pid and info["pgid"] == status.pid != os.getpgid(0)


def test_two_copies_get_different_ports(supervisors: Callable[..., Supervisor]) -> None:
    sup = supervisors()

    result = sup.converge([fake_spec("one"), fake_spec("two")])

    assert result["one"].port != result["two"].port
    assert {poll_until(sup, key, READY).port for key in ("one", "two")} == {result["one"].port, result["two"].port}


def test_ports_in_use_on_the_host_or_recorded_in_a_pid_file_are_skipped(supervisors: Callable[..., Supervisor], tmp_path: Path) -> None:
    base = next(p for p in range(31000, 32000, 7) if all(bindable(p + i) for i in range(3)))
    root = tmp_path / "root"
    root.mkdir()
    (root / "elsewhere.json").write_text(json.dumps({"pid": None, "port": base + 1}))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base))
        squatter.listen()
        sup = supervisors(port_range=(base, base + 2))

        status = sup.converge([fake_spec("p")])["p"]

        assert status.port == base + 2
        assert poll_until(sup, "p", READY).port == base + 2


def test_a_copy_killed_mid_life_is_restarted_with_a_new_pid(supervisors: Callable[..., Supervisor], events: list[ProcessStatus]) -> None:
    sup = supervisors(on_change=events.append)
    sup.converge([emulator_spec("k")])
    old = poll_until(sup, "k", READY)

    os.kill(old.pid, signal.SIGKILL)  # type: ignore[arg-type]

    restarted = poll_until(sup, "k", READY, other_than=old.pid)
    assert restarted.pid != old.pid and restarted.restarts == 1 and not running(old.pid)  # type: ignore[arg-type]
    crash = next(e for e in events if e.state == RESTARTING)
    assert crash.pid is None and crash.restarts == 0 and "killed by SIGKILL" in crash.reason and crash.exit_code == -9
    assert [e.state for e in events] == [STARTING, READY, RESTARTING, STARTING, READY]


def test_an_unhealthy_ready_copy_is_restarted(supervisors: Callable[..., Supervisor]) -> None:
    sup = supervisors(probe_timeout_s=0.3)
    sup.converge([fake_spec("h")])
    old = poll_until(sup, "h", READY)

    os.kill(old.pid, signal.SIGSTOP)  # type: ignore[arg-type]  # alive, but answers nothing

    try:
        crash = poll_until(sup, "h", RESTARTING, timeout=20)
    finally:
        os.kill(old.pid, signal.SIGCONT)  # type: ignore[arg-type]
    assert "unhealthy: 2 health probes failed" in crash.reason
    assert poll_until(sup, "h", READY, other_than=old.pid).restarts == 1
    wait_for(lambda: not running(old.pid), "the hung process to be stopped")  # type: ignore[arg-type]


def test_a_copy_that_always_exits_fails_after_max_crashes_and_stays_failed(supervisors: Callable[..., Supervisor]) -> None:
    sup = supervisors(max_crashes=3)
    spec = fake_spec("x", "--fault", "exit-on-start")
    sup.converge([spec])

    failed = poll_until(sup, "x", FAILED)

    assert "3 crashes within 300 s" in failed.reason and "last exit code 3" in failed.reason
    assert "boom: model-x cannot start" in failed.log_tail and failed.restarts == 2 and failed.pid is None
    assert failed.log_tail.count("\n") < 40
    assert sup.converge([spec])["x"].state == FAILED  # the same spec again: not retried
    for _ in range(5):
        assert sup.poll()["x"].state == FAILED
    assert supervisors().adopt()["x"].state == FAILED  # nor by the next agent
    fixed = ProcessSpec(key="x", argv=spec.argv[:-2], env={}, served_model=spec.served_model)
    assert sup.converge([fixed])["x"].state == STARTING  # a changed spec starts afresh
    assert poll_until(sup, "x", READY).restarts == 0


def test_a_copy_never_ready_fails_after_the_start_timeout(supervisors: Callable[..., Supervisor], tmp_path: Path) -> None:
    sup = supervisors(start_timeout_s=1.5)
    started = sup.converge([emulator_spec("n", "--fault", "never-ready")])["n"]

    failed = poll_until(sup, "n", FAILED)

    assert failed.reason == "not ready after 1.5 s" and "supervisor: starting n" in failed.log_tail and failed.pid is None
    pid = started.pid
    wait_for(lambda: (sup.poll(), not running(pid))[1], "the never-ready process to be stopped")
    assert sup.poll()["n"].state == FAILED


def test_stop_sends_sigterm_and_forgets_the_copy(supervisors: Callable[..., Supervisor], tmp_path: Path) -> None:
    sup = supervisors()
    sup.converge([fake_spec("s")])
    ready = poll_until(sup, "s", READY)

    stopped = sup.stop("s", reason="operator asked")

    assert (stopped.state, stopped.reason, stopped.pid, stopped.exit_code) == (STOPPED, "operator asked", None, 0)
    assert group_gone(ready.pid)  # type: ignore[arg-type]
    assert "SIGTERM received" in (tmp_path / "root" / "s.log").read_text()
    assert not (tmp_path / "root" / "s.json").exists() and "s" not in sup.statuses()


def test_a_process_ignoring_sigterm_is_killed_with_its_group_after_grace(supervisors: Callable[..., Supervisor], tmp_path: Path) -> None:
    sup = supervisors(grace_s=0.5)
    dump = tmp_path / "dump.json"
    sup.converge([fake_spec("stubborn", "--fault", "ignore-sigterm", "--child", "--dump", str(dump))])
    ready = poll_until(sup, "stubborn", READY)
    child = json.loads(dump.read_text())["child"]

    stopped = sup.stop("stubborn", reason="drain")

    assert stopped.state == STOPPED and "SIGTERM not honoured" in stopped.reason and stopped.exit_code == -9
    assert "SIGTERM ignored" in stopped.log_tail
    assert not running(child)
    # Its orphaned child is a zombie for a moment, until init reaps it; only then is the group empty.
    wait_for(lambda: group_gone(ready.pid), "the process group to be empty", timeout=5)  # type: ignore[arg-type]


def test_converge_dropping_two_copies_signals_both_then_returns_when_both_are_gone(supervisors: Callable[..., Supervisor],
                                                                                   tmp_path: Path) -> None:
    sup = supervisors(grace_s=3.0)
    specs = [fake_spec(k, "--fault", "ignore-sigterm") for k in ("d1", "d2")]
    sup.converge(specs)
    pids = [poll_until(sup, k, READY).pid for k in ("d1", "d2")]
    log = {k: tmp_path / "root" / f"{k}.log" for k in ("d1", "d2")}
    result: dict[str, ProcessStatus] = {}
    worker = threading.Thread(target=lambda: result.update(sup.converge([])))

    worker.start()
    # Both were asked to stop while both still run: the grace periods overlap, they do not add up.
    wait_for(lambda: all("SIGTERM ignored" in p.read_text() for p in log.values()), "both copies to get SIGTERM")
    both_alive = all(running(pid) for pid in pids)  # type: ignore[arg-type]
    during = sup.poll()  # supervision is not blocked by the converge waiting out the grace
    converging = worker.is_alive()
    worker.join(timeout=30)

    assert both_alive and converging and during == {} and not worker.is_alive()
    assert {k: s.state for k, s in result.items()} == {"d1": STOPPED, "d2": STOPPED}
    assert all(group_gone(pid) for pid in pids)  # type: ignore[arg-type]
    assert sup.statuses() == {} and list((tmp_path / "root").glob("*.json")) == []


def test_a_changed_spec_restarts_the_copy(supervisors: Callable[..., Supervisor], tmp_path: Path, events: list[ProcessStatus]) -> None:
    seen: list[dict[str, ProcessStatus]] = []

    def listener(status: ProcessStatus) -> None:
        events.append(status)
        seen.append(sup.statuses())  # called outside the supervisor's lock: calling back is fine

    sup = supervisors(on_change=listener)
    dump = tmp_path / "dump.json"
    served = f"changed-{os.getpid()}"
    sup.converge([fake_spec("c", "--dump", str(dump), served=served, env={"ROCR_VISIBLE_DEVICES": "0"})])
    old = poll_until(sup, "c", READY)

    new = sup.converge([fake_spec("c", "--dump", str(dump), served=served, env={"ROCR_VISIBLE_DEVICES": "1"})])["c"]

    assert new.state == STARTING and new.pid != old.pid and group_gone(old.pid)  # type: ignore[arg-type]
    assert poll_until(sup, "c", READY).pid == new.pid
    assert json.loads(dump.read_text())["env"]["ROCR_VISIBLE_DEVICES"] == "1"
    assert [e.state for e in events] == [STARTING, READY, RESTARTING, STARTING, READY] and len(seen) == 5
    assert sup.converge([fake_spec("c", "--dump", str(dump), served=served, env={"ROCR_VISIBLE_DEVICES": "1"})])["c"].pid == new.pid


def test_a_new_supervisor_adopts_running_copies_without_duplicates(supervisors: Callable[..., Supervisor], events: list[ProcessStatus]) -> None:
    marker = f"adopt-{os.getpid()}"
    specs = [emulator_spec("a1", served=f"{marker}-1"), emulator_spec("a2", served=f"{marker}-2")]
    first = supervisors()
    first.converge(specs)
    before = {k: poll_until(first, k, READY) for k in ("a1", "a2")}

    second = supervisors(on_change=events.append)  # the agent restarted: the first supervisor is simply abandoned
    adopted = second.adopt()

    assert {k: (s.state, s.pid, s.port) for k, s in adopted.items()} == {k: (READY, s.pid, s.port) for k, s in before.items()}
    again = second.converge(specs)
    assert {k: s.pid for k, s in again.items()} == {k: s.pid for k, s in before.items()}
    assert pids_with(marker) == {s.pid for s in before.values()}
    assert second.converge(specs + [fake_spec("a3")])["a3"].port not in {s.port for s in before.values()}

    os.kill(before["a1"].pid, signal.SIGKILL)  # type: ignore[arg-type]  # not the new supervisor's child

    restarted = poll_until(second, "a1", READY, other_than=before["a1"].pid)
    assert restarted.pid != before["a1"].pid and restarted.restarts == 1
    crash = next(e for e in events if e.key == "a1" and e.state == RESTARTING)
    assert "exit code unknown" in crash.reason and crash.exit_code is None
    assert pids_with(marker) == {restarted.pid, before["a2"].pid}


def test_copies_survive_the_agent_process_being_killed_and_are_adopted(supervisors: Callable[..., Supervisor], tmp_path: Path) -> None:
    root, out = tmp_path / "root", tmp_path / "agent.json"
    spec = fake_spec("survivor", served=f"survivor-{os.getpid()}")
    agent = subprocess.Popen([sys.executable, AGENT_SCRIPT, str(root), str(out), json.dumps(spec.to_json())],
                             env=os.environ | {"PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        copy = wait_for(lambda: out.exists() and json.loads(out.read_text()), "the agent's copy to be ready", timeout=30)
    finally:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()

    assert running(copy["pid"])
    adopted = supervisors().adopt()
    assert (adopted["survivor"].state, adopted["survivor"].pid, adopted["survivor"].port) == (READY, copy["pid"], copy["port"])


def test_adopt_removes_stale_pid_files_and_never_signals_a_reused_pid(supervisors: Callable[..., Supervisor], tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    silent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        wait_for(lambda: stat_fields(stranger.pid) and stat_fields(silent.pid), "the sleepers")

        def record(key: str, pid: int, ticks: int) -> None:
            spec = fake_spec(key)
            (root / f"{key}.json").write_text(json.dumps({"key": key, "state": READY, "pid": pid, "port": 1, "start_ticks": ticks,
                                                          "spec": spec.to_json(), "started_at": time.time()}))

        record("dead", dead.pid, 1)
        record("stranger", stranger.pid, int(stat_fields(stranger.pid)[19]) + 1)  # type: ignore[index]  # its pid, not its start
        record("silent", silent.pid, int(stat_fields(silent.pid)[19]))  # type: ignore[index]  # ours, but answers nothing

        assert supervisors().adopt() == {}

        assert list(root.glob("*.json")) == []
        assert stranger.poll() is None  # left alone
        assert silent.wait(timeout=10) == -signal.SIGTERM  # killed with its group
    finally:
        for proc in (stranger, silent):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("key", ["", "a/b", "..", ".", "a b", "ä", "x" * 129, "semi;colon"])
def test_a_spec_key_must_be_safe_for_a_file_name(key: str) -> None:
    with pytest.raises(ValueError, match="process key"):
        ProcessSpec(key=key, argv=("true",), env={}, served_model="m")


def test_a_spec_needs_a_command_and_a_served_name() -> None:
    with pytest.raises(ValueError, match="argv"):
        ProcessSpec(key="k", argv=(), env={}, served_model="m")
    with pytest.raises(ValueError, match="served_model"):
        ProcessSpec(key="k", argv=("true",), env={}, served_model="")
    assert ProcessSpec(key="k", argv=["a"], env={"A": "1"}, served_model="m").argv == ("a",)  # type: ignore[arg-type]


def test_a_command_that_cannot_be_executed_counts_as_a_crash(supervisors: Callable[..., Supervisor]) -> None:
    sup = supervisors(max_crashes=2)

    sup.converge([ProcessSpec(key="missing", argv=("/nonexistent/vllm", "--port", "{port}"), env={}, served_model="m")])

    failed = poll_until(sup, "missing", FAILED)
    assert "could not start" in failed.reason and "2 crashes" in failed.reason


def test_stop_recorded_stops_unwanted_copies_through_their_pid_files(supervisors: Callable[..., Supervisor], tmp_path: Path) -> None:
    sup = supervisors()
    sup.converge([fake_spec("keep"), fake_spec("drop", "--fault", "ignore-sigterm")])
    pids = {k: poll_until(sup, k, READY).pid for k in ("keep", "drop")}

    stopped = stop_recorded(tmp_path / "root", {"keep"}, grace_s=0.3)  # as another process would, without the supervisor

    assert stopped == ["drop"] and not running(pids["drop"]) and running(pids["keep"])  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "root").glob("*.json")) == ["keep.json"]
    crashed = poll_until(sup, "drop", RESTARTING)  # the owner notices, as a crash
    assert "SIGKILL" in crashed.reason


def test_polling_on_another_thread_while_converging_keeps_one_process_per_copy(supervisors: Callable[..., Supervisor]) -> None:
    marker = f"threads-{os.getpid()}"
    sup = supervisors(grace_s=0.5)
    done = threading.Event()
    errors: list[BaseException] = []

    def ticker() -> None:
        while not done.is_set():
            try:
                sup.poll()
            except BaseException as exc:  # noqa: BLE001 — reported by the test below
                errors.append(exc)
            time.sleep(0.01)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        sup.converge([fake_spec(k, served=f"{marker}-{k}") for k in ("t1", "t2", "t3")])
        wait_for(lambda: all(s.state == READY for s in sup.statuses().values()), "three copies ready")
        sup.converge([fake_spec("t1", served=f"{marker}-t1"), fake_spec("t2", "--start-delay", "0.1", served=f"{marker}-t2")])
        wait_for(lambda: all(s.state == READY for s in sup.statuses().values()), "two copies ready")
        sup.stop("t1", reason="test")
    finally:
        done.set()
        thread.join(timeout=10)

    final = sup.statuses()
    assert errors == [] and list(final) == ["t2"] and final["t2"].state == READY
    assert pids_with(marker) == {final["t2"].pid}

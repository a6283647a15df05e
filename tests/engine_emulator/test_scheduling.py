"""Queueing and batching over real HTTP: the running batch bound, priority order, and a client
disconnect taking its sequence out of the batch. Assertions are on orders, counts and metrics."""

from __future__ import annotations

import threading

import pytest

from .conftest import EngineProcess, Launcher, wait_until


def queue_lengths(engine: EngineProcess) -> tuple[float, float]:
    m = engine.metrics()
    return m["vllm:num_requests_running"], m["vllm:num_requests_waiting"]


@pytest.mark.parametrize("policy, priorities, expected", [
    ("priority", [5, 1, 3, -2, 1], ["-2", "1a", "1b", "3", "5"]),
    ("fcfs", [0, 0, 0], ["0a", "0b", "0c"]),
])
def test_waiting_requests_run_in_policy_order(start_engine: Launcher, policy, priorities, expected):
    engine = start_engine("--max-num-seqs", "1", "--scheduling-policy", policy, "--time-scale", "0.5")
    finished: list[str] = []
    lock = threading.Lock()

    def request(label: str, priority: int, max_tokens: int) -> None:
        with engine.client() as c:
            r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": max_tokens, "priority": priority})
            assert r.status_code == 200, r.text
        with lock:
            finished.append(label)

    # a long request holds the only slot (~1.5 s) while the others queue up one by one
    threads = [threading.Thread(target=request, args=("blocker", 0, 250))]
    threads[0].start()
    wait_until(lambda: queue_lengths(engine) == (1, 0))
    seen: dict[int, int] = {}
    for n, priority in enumerate(priorities, start=1):
        seen[priority] = seen.get(priority, 0) + 1
        label = str(priority) + ("abc"[seen[priority] - 1] if priorities.count(priority) > 1 else "")
        threads.append(threading.Thread(target=request, args=(label, priority, 5)))
        threads[-1].start()
        wait_until(lambda n=n: queue_lengths(engine) == (1, n))  # arrival order is fixed
    for t in threads:
        t.join(30)
    assert finished == ["blocker", *expected]


def test_running_batch_never_exceeds_max_num_seqs(start_engine: Launcher):
    engine = start_engine("--max-num-seqs", "2", "--time-scale", "0.5")
    done = threading.Event()
    samples: list[tuple[float, float]] = []

    def stream() -> None:
        with engine.client() as c, c.stream("POST", "/v1/completions",
                                            json={"prompt": "x", "max_tokens": 100, "stream": True}) as r:
            assert r.status_code == 200
            assert list(r.iter_lines())[-2] == "data: [DONE]"

    before = engine.metrics()["vllm:request_success_total:length"]
    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    watcher = threading.Thread(target=lambda: [t.join(30) for t in threads] and done.set())
    watcher.start()
    while not done.is_set():
        samples.append(queue_lengths(engine))
    watcher.join()
    assert max(running for running, _ in samples) == 2
    assert (2, 2) in samples  # two streams ran while two waited
    assert engine.metrics()["vllm:request_success_total:length"] - before == 4
    assert queue_lengths(engine) == (0, 0)


def test_a_disconnected_stream_leaves_the_batch(start_engine: Launcher):
    engine = start_engine()  # real time: 2000 tokens would take ~24 s
    with engine.client() as c, c.stream("POST", "/v1/completions",
                                        json={"prompt": "x", "max_tokens": 2000, "stream": True}) as r:
        lines = r.iter_lines()
        chunks = [line for line in (next(lines) for _ in range(6)) if line.startswith("data:")]
        assert len(chunks) == 3
        assert queue_lengths(engine) == (1, 0)
    # the client closed the connection
    wait_until(lambda: queue_lengths(engine) == (0, 0))
    m = engine.metrics()
    assert m["vllm:request_success_total:abort"] == 1
    assert m["vllm:request_success_total:length"] == 0
    assert m["vllm:generation_tokens_total"] < 2000
    assert m["vllm:kv_cache_usage_perc"] == 0


def test_a_queued_request_whose_client_left_never_runs(start_engine: Launcher):
    engine = start_engine("--max-num-seqs", "1")
    with engine.client() as c, c.stream("POST", "/v1/completions",
                                        json={"prompt": "x", "max_tokens": 2000, "stream": True}):
        with engine.client() as c2, c2.stream("POST", "/v1/completions",
                                              json={"prompt": "x", "max_tokens": 5, "stream": True}):
            wait_until(lambda: queue_lengths(engine) == (1, 1))
        wait_until(lambda: queue_lengths(engine) == (1, 0))
    wait_until(lambda: queue_lengths(engine) == (0, 0))
    assert engine.metrics()["vllm:request_success_total:abort"] == 2

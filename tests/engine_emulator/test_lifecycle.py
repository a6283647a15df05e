"""Process lifecycle as a supervisor sees it: model load, faults, graceful SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from .conftest import FAST, MODEL, REPO, Launcher, wait_healthy, wait_until


def health(url: str) -> int:
    return httpx.get(url + "/health", timeout=5).status_code


def test_health_is_503_while_the_model_loads_then_200(start_engine: Launcher):
    engine = start_engine("--start-delay", "1.5", ready=False)
    assert health(engine.url) == 503
    with engine.client() as c:
        r = c.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 503 and r.json()["code"] == 503
    wait_healthy(engine)
    assert "model loaded" in engine.output()


def test_start_delay_is_scaled_by_time_scale(start_engine: Launcher):
    # 1000 s of model load at 1/1000: ready in about a second
    engine = start_engine("--start-delay", "1000", "--time-scale", "0.001", ready=False)
    wait_healthy(engine)


def test_never_ready_answers_503_forever(start_engine: Launcher):
    engine = start_engine("--fault", "never-ready", ready=False)
    wait_until(lambda: "port=" in engine.output())
    assert [health(engine.url) for _ in range(5)] == [503] * 5
    assert engine.proc.poll() is None
    engine.signal(signal.SIGTERM)
    assert engine.wait() == 0


def test_exit_on_start_fails_after_the_start_delay(start_engine: Launcher):
    engine = start_engine("--fault", "exit-on-start", "--start-delay", "0.2", ready=False)
    assert engine.wait() == 1
    assert "ERROR: emulated engine failure at start" in engine.output()


def test_a_taken_port_exits_1(start_engine: Launcher):
    first = start_engine(*FAST)
    with open(first.log.parent / "second.log", "wb") as fh:
        res = subprocess.run([sys.executable, "-m", "engine_emulator", MODEL, "--port", str(first.port)],
                             stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, timeout=30)
    assert res.returncode == 1
    assert "cannot listen" in (first.log.parent / "second.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_running_streams_then_exits_0(start_engine: Launcher, sig):
    engine = start_engine()  # real time: 60 tokens take ~0.75 s
    with engine.client() as c, c.stream("POST", "/v1/completions",
                                        json={"prompt": "x", "max_tokens": 60, "stream": True}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        engine.signal(sig)
        wait_until(lambda: health(engine.url) == 503)
        with engine.client() as other:
            refused = other.post("/v1/completions", json={"prompt": "x"})
        assert refused.status_code == 503
        rest = list(lines)
    assert rest[-2] == "data: [DONE]"
    assert '"finish_reason": "length"' in rest[-4]
    assert engine.wait() == 0
    assert "stopped (exit 0)" in engine.output()


def test_streams_past_the_grace_period_are_aborted_and_end_cleanly(start_engine: Launcher):
    engine = start_engine("--shutdown-grace-s", "0.3")  # 2000 tokens would take ~24 s
    with engine.client() as c, c.stream("POST", "/v1/completions",
                                        json={"prompt": "x", "max_tokens": 2000, "stream": True}) as r:
        lines = r.iter_lines()
        next(lines)
        engine.signal(signal.SIGTERM)
        rest = list(lines)
    assert rest[-2] == "data: [DONE]"
    assert '"finish_reason": "abort"' in rest[-4]
    assert engine.wait() == 0

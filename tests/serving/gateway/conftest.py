"""Fixtures for the gateway: real engine-emulator processes as upstreams, Replica rows pointing
at them, and the gateway itself in a real uvicorn server on a free port.

The gateway runs in a thread of the test process (``start_gateway``): its database threads open
their own connections, so the tests use ``transactional_db`` (rows are committed, the test
database is a SQLite file: tests/processes.py) and reach into its state (``Gateway``) only to
wait for a refresh or a Redis tick instead of sleeping. ``test_command.py`` also runs
``manage.py run_gateway`` as a subprocess."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.processes import Process, free_port, wait_for

HF_ID = "meta-llama/Llama-3.1-8B-Instruct"
OTHER_HF_ID = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


@dataclass
class Engine:
    """One ``python -m engine_emulator`` process."""

    name: str
    port: int
    proc: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> dict[str, float]:
        """Sums of its Prometheus samples by metric name (labels dropped)."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    def served(self) -> int:
        """Requests it finished (stop, length or abort)."""
        return int(self.metrics().get("vllm:request_success_total", 0.0))

    def running(self) -> int:
        """Requests in the engine: running or waiting for a batch slot."""
        m = self.metrics()
        return int(m.get("vllm:num_requests_running", 0.0) + m.get("vllm:num_requests_waiting", 0.0))

    def prompt_tokens(self) -> int:
        return int(self.metrics().get("vllm:prompt_tokens_total", 0.0))

    def kill(self) -> None:
        self.proc.kill()


@pytest.fixture
def start_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Start an engine emulator serving ``name``; waits until its /health is 200."""
    started: list[Engine] = []

    def start(name: str, *, time_scale: float = 0.01, max_num_seqs: int = 64) -> Engine:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AMD_SMI")}
        env["PYTHONUNBUFFERED"] = "1"
        proc = Process([sys.executable, "-m", "engine_emulator", HF_ID, "--port", str(port), "--served-model-name", name,
                        "--time-scale", str(time_scale), "--max-num-seqs", str(max_num_seqs)],
                       env, tmp_path / f"engine-{name}-{port}.log")
        engine = Engine(name, port, proc)
        started.append(engine)

        def healthy() -> bool:
            assert proc.alive(), f"engine emulator exited:\n{proc.output()}"
            try:
                return httpx.get(engine.url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(healthy, 30, f"engine {name} on port {port}", interval=0.1)
        return engine

    yield start
    for engine in started:
        engine.proc.stop()


# --- rows -------------------------------------------------------------------------------------------

@pytest.fixture
def gw_db(transactional_db, catalog, redis_url):  # type: ignore[no-untyped-def]
    """Committed rows (the gateway reads them from its own threads) and the test Redis."""
    return redis_url


def make_node(name: str = "emu-gw", *, emulated: bool = True):  # type: ignore[no-untyped-def]
    from partitions.models import Node

    return Node.objects.get_or_create(name=name, defaults={"backend": Node.Backend.EMULATOR if emulated else Node.Backend.AMDSMI,
                                                           "emulated": emulated})[0]


def make_deployment(name: str, hf_id: str = HF_ID, *, state: str = "running"):  # type: ignore[no-untyped-def]
    from models.models import ModelProfile
    from serving.models import Deployment

    profile = ModelProfile.objects.filter(model__hf_id=hf_id).order_by("pk").first()
    assert profile is not None, hf_id
    return Deployment.objects.create(name=name, profile=profile, replicas=1, state=state)


def add_replica(deployment, endpoint: str, *, served_model: str = "", replica: int = 0, state: str = "ready",  # type: ignore[no-untyped-def]
                node=None):
    from serving.models import Replica

    node = node or make_node()
    index = Replica.objects.filter(deployment=deployment).count()
    return Replica.objects.create(deployment=deployment, replica=replica, node=node, key=f"{deployment.pk}-{replica}-{index}",
                                  runtime="process", state=state, endpoint=endpoint, served_model=served_model)


# --- tokens ------------------------------------------------------------------------------------------

def make_key(user, scopes: list[str]) -> str:  # type: ignore[no-untyped-def]
    """A token row holding ``scopes`` (written directly: the issuing service is not under test here)."""
    from aimconsole.models import ApiToken, hash_token

    key, prefix = ApiToken.new_key()
    ApiToken.objects.create(user=user, name="gw", prefix=prefix, key_hash=hash_token(key), scopes=scopes)
    return key


@pytest.fixture
def inference_key(gw_db, viewer) -> str:  # type: ignore[no-untyped-def]
    return make_key(viewer, ["inference"])


# --- the gateway -------------------------------------------------------------------------------------

@dataclass
class RunningGateway:
    app: object
    server: uvicorn.Server
    thread: threading.Thread
    port: int
    key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self):  # type: ignore[no-untyped-def]
        return self.app

    def client(self, key: str | None = "", **kwargs) -> httpx.Client:  # type: ignore[no-untyped-def]
        """An HTTP client with ``key`` (default: the inference key; None: no Authorization)."""
        key = self.key if key == "" else key
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(30.0), **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        if self.thread.is_alive():
            import sys
            import traceback

            stacks = "".join(traceback.format_stack(sys._current_frames()[self.thread.ident]))  # type: ignore[index]
            raise AssertionError(f"the gateway did not stop:\n{stacks}")


@pytest.fixture
def start_gateway(gw_db, inference_key) -> Iterator[Callable[..., RunningGateway]]:  # type: ignore[no-untyped-def]
    """Start a gateway (``GatewayConfig`` overrides as keywords) in a uvicorn server thread."""
    from serving.gateway.app import Gateway
    from serving.gateway.config import GatewayConfig

    running: list[RunningGateway] = []

    def start(**overrides) -> RunningGateway:  # type: ignore[no-untyped-def]
        overrides.setdefault("refresh_s", 0.5)
        app = Gateway(GatewayConfig.from_settings(**overrides))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning",
                                               access_log=False, http="h11", loop="asyncio",
                                               timeout_graceful_shutdown=5))
        thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
        thread.start()
        gw = RunningGateway(app, server, thread, port, inference_key)
        running.append(gw)
        wait_for(lambda: server.started or not thread.is_alive(), 30, "the gateway to start", interval=0.05)
        assert server.started, "the gateway did not start"
        return gw

    yield start
    for gw in running:
        gw.stop()


def chat(model: str, *, stream: bool = False, max_tokens: int = 8, **extra) -> dict:  # type: ignore[no-untyped-def]
    return {"model": model, "messages": [{"role": "user", "content": "Say something about GPUs."}],
            "max_tokens": max_tokens, "stream": stream, **extra}


def sse_events(lines: Iterator[str]) -> list[str]:
    """The ``data:`` payloads of an SSE stream, in order."""
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]

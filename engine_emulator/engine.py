"""The emulated engine core: a waiting queue, a running batch and the step loop (asyncio).

Requests (``Sequence``) enter the waiting queue; before every step the loop moves waiting
sequences into the running batch while it holds fewer than ``max_num_seqs``. Order: ``fcfs``
takes them by arrival; ``priority`` takes the lowest ``priority`` value first, ties by arrival,
as vLLM's priority policy does (no preemption of running sequences: vLLM preempts only when
the KV cache runs out, which this capacity never does). A step lasts ``timing.step_seconds``
for the batch it runs, so queueing and batching effects are real: a bigger batch makes every
token slower, a waiting request waits for a free slot.

Each step appends one token to every running sequence; a sequence finishes on ``max_tokens``
("length") or a stop string ("stop"). ``abort`` (client gone, shutdown) takes a sequence out of
the queue or the batch at once, finishing it with "abort".
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import timing, tokens
from .metrics import EngineMetrics


@dataclass(frozen=True)
class EngineConfig:
    """What the command line fixes for the life of the engine."""

    served_model_name: str
    max_model_len: int
    max_num_seqs: int = 16
    scheduling_policy: str = "fcfs"  # fcfs | priority
    params_b: float = 8.0
    compute_share: float = 1.0
    tensor_parallel_size: int = 1
    time_scale: float = 1.0

    @property
    def kv_capacity_tokens(self) -> int:
        return self.max_num_seqs * self.max_model_len


@dataclass(eq=False)
class Sequence:
    """One request in the engine. ``text`` grows as tokens come; ``changed`` is set after every
    token and at the finish, for the HTTP side to wake up and send what is new."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    stop: list[str] = field(default_factory=list)
    priority: int = 0
    arrival: float = field(default_factory=time.monotonic)
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None  # stop | length | abort
    scheduled_at: float | None = None
    last_token_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class Engine:
    """Queue, batch and step loop of one emulated model replica (see the module docstring)."""

    def __init__(self, config: EngineConfig, metrics: EngineMetrics,
                 on_change: Callable[[], None] | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.on_change = on_change  # called whenever running/waiting change (amd-smi driver)
        self.running: list[Sequence] = []
        self._waiting: list[tuple[int, int, Sequence]] = []  # heap of (rank, arrival order, seq)
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    # -- queues --------------------------------------------------------------------------
    @property
    def waiting(self) -> list[Sequence]:
        """Waiting sequences in the order they will be scheduled."""
        return [seq for _, _, seq in sorted(self._waiting)]

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def submit(self, seq: Sequence) -> None:
        rank = seq.priority if self.config.scheduling_policy == "priority" else 0
        heapq.heappush(self._waiting, (rank, next(self._order), seq))
        self.metrics.prompt_tokens.labels(self.config.served_model_name).inc(seq.prompt_tokens)
        self._idle.clear()
        self._wake.set()
        self._publish()

    def abort(self, seq: Sequence) -> None:
        """Take ``seq`` out of the queue or the batch now (a no-op once it finished)."""
        if seq.finished:
            return
        if seq in self.running:
            self.running.remove(seq)
        else:
            self._waiting = [entry for entry in self._waiting if entry[2] is not seq]
            heapq.heapify(self._waiting)
        self._finish(seq, "abort", time.monotonic())
        self._publish()

    def abort_all(self) -> None:
        for seq in [*self.running, *self.waiting]:
            self.abort(seq)

    async def wait_idle(self) -> None:
        """Return once nothing is running or waiting."""
        await self._idle.wait()

    # -- loop ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="engine-loop")

    async def stop(self) -> None:
        self.abort_all()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            if not self.running and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            admitted = self._admit()
            c = self.config
            step = timing.step_seconds(
                len(self.running), [s.prompt_tokens for s in admitted], params_b=c.params_b,
                compute_share=c.compute_share, tensor_parallel_size=c.tensor_parallel_size,
                time_scale=c.time_scale)
            await asyncio.sleep(step)
            self._emit_tokens()

    def _admit(self) -> list[Sequence]:
        admitted = []
        now = time.monotonic()
        while self._waiting and len(self.running) < self.config.max_num_seqs:
            _, _, seq = heapq.heappop(self._waiting)
            seq.scheduled_at = now
            self.metrics.queue_time.labels(self.config.served_model_name).observe(now - seq.arrival)
            self.running.append(seq)
            admitted.append(seq)
        if admitted:
            self._publish()
        return admitted

    def _emit_tokens(self) -> None:
        now = time.monotonic()
        name = self.config.served_model_name
        for seq in list(self.running):  # aborts during the step already left the batch
            seq.text, stopped = tokens.apply_stop(seq.text, tokens.piece(seq.completion_tokens), seq.stop)
            seq.completion_tokens += 1
            self.metrics.generation_tokens.labels(name).inc()
            if seq.last_token_at is None:
                self.metrics.ttft.labels(name).observe(now - seq.arrival)
            else:
                self.metrics.itl.labels(name).observe(now - seq.last_token_at)
            seq.last_token_at = now
            if stopped or seq.completion_tokens >= seq.max_tokens:
                self.running.remove(seq)
                self._finish(seq, "stop" if stopped else "length", now)
            else:
                seq.changed.set()
        self._publish()

    def _finish(self, seq: Sequence, reason: str, now: float) -> None:
        seq.finish_reason = reason
        name = self.config.served_model_name
        self.metrics.success.labels(name, reason).inc()
        self.metrics.e2e.labels(name).observe(now - seq.arrival)
        seq.changed.set()

    def _publish(self) -> None:
        held = sum(s.prompt_tokens + s.completion_tokens for s in self.running)
        self.metrics.set_queues(len(self.running), len(self._waiting),
                                min(1.0, held / self.config.kv_capacity_tokens))
        if not self.running and not self._waiting:
            self._idle.set()
        if self.on_change is not None:
            self.on_change()

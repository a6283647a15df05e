"""Prometheus metrics of the emulated engine, under vLLM V1's names and labels.

One ``CollectorRegistry`` per engine (never the global one), served at ``/metrics``. Every
metric carries ``model_name`` (the served name) as vLLM's do; the help texts end in
``(emulated)`` and ``aim_engine_emulator_info{emulated="true"}`` is 1, so a scrape can tell an
emulated engine from a real one. Times are observed wall-clock seconds, i.e. already scaled by
``--time-scale``.

``vllm:kv_cache_usage_perc`` (0..1) = tokens held by the running sequences (prompt + generated)
/ KV capacity, with capacity = max_num_seqs x max_model_len tokens: a full batch of sequences
at the context limit fills the cache exactly.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
FINISH_REASONS = ("stop", "length", "abort")

# vLLM V1's buckets (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class EngineMetrics:
    """The engine's metrics for one served model name."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_name = model_name
        r, labels = self.registry, ["model_name"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, f"{doc} (emulated)", labels, registry=r)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, f"{doc} (emulated)", labels, buckets=buckets, registry=r)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, f"{doc} (emulated)", [*labels, *extra], registry=r)

        info = Gauge("aim_engine_emulator_info", "1: this engine is the AIM engine emulator, not vLLM",
                     ["model_name", "emulated"], registry=r)
        info.labels(model_name, "true").set(1)
        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              TTFT_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             ITL_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", REQUEST_BUCKETS)
        self.queue_time = histogram("vllm:request_queue_time_seconds",
                                    "Histogram of time spent in WAITING phase for request.", REQUEST_BUCKETS)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.success = counter("vllm:request_success", "Count of successfully processed requests.",
                               ("finished_reason",))
        # Pre-create every child so a scrape shows zeros before the first request, as vLLM does.
        for metric in (self.running, self.waiting, self.kv_usage, self.ttft, self.itl, self.e2e,
                       self.queue_time, self.prompt_tokens, self.generation_tokens):
            metric.labels(model_name)
        for reason in FINISH_REASONS:
            self.success.labels(model_name, reason)

    def set_queues(self, running: int, waiting: int, kv_usage: float) -> None:
        self.running.labels(self.model_name).set(running)
        self.waiting.labels(self.model_name).set(waiting)
        self.kv_usage.labels(self.model_name).set(kv_usage)

    def render(self) -> bytes:
        return generate_latest(self.registry)

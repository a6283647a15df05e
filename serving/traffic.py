"""What the gateway measured for one model, for the deployment's page: requests by outcome,
time to first token, end-to-end latency, inter-token latency and tokens, read from the
requests hash the gateway flushes (aimconsole/counters.py) in one Redis round trip.

The counters are per catalog model (the metric labels are bounded), so the page says so: every
deployment of that model shares them. Quantiles are estimated from the histogram buckets by
linear interpolation inside the bucket, as PromQL's ``histogram_quantile`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis

from aimconsole import counters

log = logging.getLogger(__name__)


def bucket_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of a histogram with per-bucket (not cumulative) ``counts``, the last
    one for +Inf; None without observations. In the +Inf bucket, the highest finite bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - seen) / n
        seen += n
    return bounds[-1]


@dataclass(frozen=True)
class ModelTraffic:
    model: str
    emulated: bool
    results: dict[str, int]
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    e2e_p50_s: float | None
    e2e_p95_s: float | None
    itl_mean_s: float | None
    prompt_tokens: int
    generated_tokens: int

    @property
    def requests(self) -> int:
        return sum(self.results.values())


def model_traffic(model: str, client: redis.Redis | None = None) -> list[ModelTraffic]:
    """The model's counters (one entry per emulated flag that has any); [] when Redis is down."""
    sep = counters.SEP
    try:
        raw = cast(dict[bytes, bytes], (client or counters.redis_client()).hgetall(counters.requests_key()))
    except redis.RedisError as exc:
        log.info("traffic of %s unavailable: %s", model, exc)
        return []
    out = []
    for flag in ("false", "true"):
        base = f"{model[:counters.MAX_MODEL_LABEL]}{sep}{flag}"
        fields: dict[str, float] = {}
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else key
            kind, _, rest = name.partition(sep)
            if rest == base or rest.startswith(base + sep):
                fields[kind + rest[len(base):]] = float(value)
        if not fields:
            continue

        def buckets(kind: str, bounds: Sequence[float], fields: dict[str, float] = fields) -> list[int]:
            return [int(fields.get(f"{kind}{sep}{i}", 0)) for i in range(len(bounds) + 1)]

        itl = buckets("ib", counters.ITL_BUCKETS)
        out.append(ModelTraffic(
            model=model, emulated=flag == "true",
            results={r: int(fields.get(f"n{sep}{r}", 0)) for r in counters.REQUEST_RESULTS},
            ttft_p50_s=bucket_quantile(0.5, counters.TTFT_BUCKETS, buckets("fb", counters.TTFT_BUCKETS)),
            ttft_p95_s=bucket_quantile(0.95, counters.TTFT_BUCKETS, buckets("fb", counters.TTFT_BUCKETS)),
            e2e_p50_s=bucket_quantile(0.5, counters.REQUEST_BUCKETS, buckets("b", counters.REQUEST_BUCKETS)),
            e2e_p95_s=bucket_quantile(0.95, counters.REQUEST_BUCKETS, buckets("b", counters.REQUEST_BUCKETS)),
            itl_mean_s=(fields.get("is", 0.0) / sum(itl)) if sum(itl) else None,
            prompt_tokens=int(fields.get("p", 0)), generated_tokens=int(fields.get("t", 0)),
        ))
    return out

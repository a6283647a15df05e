"""The gateway's tunables, read once from Django settings (``GATEWAY_*``, defaults below)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from django.conf import settings

MIB = 2**20


@dataclass(frozen=True)
class GatewayConfig:
    """Seconds unless named otherwise. Each field ``x`` is ``settings.GATEWAY_<X>`` when set."""

    connect_timeout_s: float = 2.0        # TCP connect to a replica (then the next replica is tried)
    first_token_timeout_s: float = 60.0   # upstream silence before the first byte; also between chunks
    write_timeout_s: float = 10.0         # sending the request body upstream
    max_body_bytes: int = 1 * MIB         # larger request bodies: 413, read no further
    max_attempts: int = 3                 # replicas tried per request (retries only before the first byte)
    retry_after_s: int = 2                # Retry-After of the 503 "no ready replica"
    refresh_s: float = 5.0                # re-read the routable replicas from the database this often
    stale_after_s: float = 60.0           # /readyz is 503 when the last good database read is older
    share_interval_s: float = 0.25        # publish/read outstanding counts in Redis this often
    share_ttl_s: float = 2.0              # another process's counts are ignored when older
    flush_interval_s: float = 1.0         # flush request metrics to Redis this often
    redis_timeout_s: float = 0.5          # every Redis call (connect and reply)
    probe_interval_s: float = 2.0         # health probe of an ejected replica
    auth_ok_cache_s: float = 30.0         # an accepted key is re-checked after this
    auth_refused_cache_s: float = 3.0     # a refused key is re-checked after this
    auth_cache_size: int = 10_000         # verdicts kept (least recently used dropped)
    db_threads: int = 4                   # threads for database reads (token checks, replica list)
    max_connections: int = 1000           # pooled upstream connections per pool
    client_shards: int = 16               # connection pools per endpoint (see app.Gateway._client_for)
    redis_url: str = ""                   # default: settings.REDIS_URL

    @classmethod
    def from_settings(cls, **overrides: Any) -> GatewayConfig:
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"GATEWAY_{f.name.upper()}"
            if hasattr(settings, name):
                values[f.name] = getattr(settings, name)
        config = cls(**values)
        if not config.redis_url:
            config = replace(config, redis_url=settings.REDIS_URL)
        return replace(config, **overrides)

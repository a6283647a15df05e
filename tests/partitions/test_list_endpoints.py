"""Every list is paginated and needs a role, including the lists without a model behind them
(GPU specs from partitions/geometry.py, telemetry snapshots from Redis)."""

from __future__ import annotations

import json

import pytest
import redis

from partitions.geometry import SPECS
from partitions.telemetry_store import snapshot_key


@pytest.mark.django_db
def test_gpu_specs_are_paginated(api_client_for, viewer) -> None:
    client = api_client_for(viewer)
    first = client.get("/api/v1/gpu-specs/?limit=2").json()
    assert first["count"] == len(SPECS)
    assert len(first["results"]) == 2
    rest = client.get("/api/v1/gpu-specs/?limit=2&offset=2").json()["results"]
    names = [s["model"] for s in first["results"] + rest]
    assert len(set(names)) == len(names) == min(4, len(SPECS))


@pytest.mark.django_db
def test_gpu_specs_need_a_role(api_client_for, norole) -> None:
    assert api_client_for(norole).get("/api/v1/gpu-specs/").status_code == 403
    assert api_client_for(norole).get("/api/v1/gpu-specs/MI300X/").status_code == 403
    assert api_client_for().get("/api/v1/gpu-specs/").status_code in (401, 403)


@pytest.mark.django_db
@pytest.mark.redis
def test_telemetry_is_paginated(api_client_for, viewer, redis_url) -> None:
    from partitions.models import Node

    client = redis.Redis.from_url(redis_url)
    names = [f"pg-tel-{i}" for i in range(3)]
    for name in names:
        Node.objects.create(name=name, backend=Node.Backend.SIMULATED)
        client.set(snapshot_key(name), json.dumps({"node": name, "ts": 1.0, "emulated": True, "interval_s": 1.0, "gpus": []}), ex=30)
    try:
        page = api_client_for(viewer).get("/api/v1/telemetry/?limit=2").json()
        assert page["count"] == 3
        assert [s["node"] for s in page["results"]] == names[:2]
    finally:
        client.delete(*[snapshot_key(n) for n in names])

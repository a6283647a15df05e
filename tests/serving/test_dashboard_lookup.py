"""The serving provider's reads for the dashboard (serving/services.py): a URL per
deployment, not per partition it holds, and the largest holders from a grouped count."""

from __future__ import annotations

import pytest

from partitions import workloads
from partitions.models import Partition

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture
def fleet(redis_url, catalog):  # type: ignore[no-untyped-def]
    from serving.simulation import simulate_fleet

    return simulate_fleet(nodes=2, occupancy=0.25, replicas=2)  # 32 held partitions, 16 deployments of 2


def test_occupants_build_one_url_per_deployment(fleet, monkeypatch):
    import django.urls

    calls: list[tuple] = []
    real = django.urls.reverse
    monkeypatch.setattr(django.urls, "reverse", lambda *a, **k: calls.append(a) or real(*a, **k))
    held = workloads.occupants(partition_ids=list(Partition.objects.values_list("pk", flat=True)))
    assert len(held) == fleet.occupied_partitions == 32
    assert len(calls) == fleet.deployments == 16
    assert len({o.url for o in held.values()}) == 16


def test_largest_holders_count_in_the_database_and_read_the_slots_of_those_only(fleet, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        total, holders = workloads.largest_holders(limit=3)
    assert total == 16
    assert [h.name for h in holders] == ["sim-d00000", "sim-d00001", "sim-d00002"]  # ties: by name
    assert all(len(h.partitions) == 2 and h.url for h in holders)
    occupied = {(o_node, g, p) for h in holders for o_node, g, p in h.partitions}
    assert len(occupied) == 6

"""Requests per second of GET /api/v1/partitions/ (the DRF viewset: auth, permissions,
filters, pagination, serializer, orjson) vs a hand-written ``values()`` + orjson view of the
same data, measured in the same run through the same Django test client and middleware.

Target: the API at most 2.5x slower than the hand-written baseline. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _django

_django.setup()

import orjson  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import include, path  # noqa: E402

from partitions.backends.simulated import SimulatedFleet  # noqa: E402
from partitions.models import Node, Partition  # noqa: E402
from partitions.services import sync_inventory  # noqa: E402


def baseline(request):  # type: ignore[no-untyped-def]
    """The same page of partitions, hand-written: one query, no framework."""
    limit, offset = int(request.GET.get("limit", 50)), int(request.GET.get("offset", 0))
    rows = list(Partition.objects.order_by("gpu__node__name", "gpu__index", "index").values(
        "id", "gpu_id", "gpu__index", "gpu__node__name", "index", "logical_index", "xcds", "compute_units",
        "memory_gb", "reported_memory_mb", "render_node", "uuid", "bdf")[offset:offset + limit])
    return HttpResponse(orjson.dumps({"count": Partition.objects.count(), "results": rows}), content_type="application/json")


urlpatterns = [path("baseline/partitions/", baseline), path("", include("aimconsole.urls"))]


def measure(client: Client, url: str, seconds: float) -> tuple[float, float]:
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        response = client.get(url)
        latencies.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code, response.content[:200])
    return len(latencies) / sum(latencies), statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 10.0
    fleet = SimulatedFleet(nodes=25, gpu_count=8)
    for name in fleet.nodes:
        backend = fleet.backend(name)
        backend.set_compute_mode(list(range(8)), "CPX")
        sync_inventory(node=Node.objects.create(name=name, backend=Node.Backend.SIMULATED, emulated=True),
                       inventory=backend.inventory())
    user = get_user_model().objects.create_user("bench", password="x")
    user.groups.add(Group.objects.get(name="viewer"))
    results = {}
    with override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"]):
        client = Client()
        client.force_login(user)
        for page in (50, 200):
            client.get(f"/api/v1/partitions/?limit={page}")  # warm up
            api_rps, api_ms = measure(client, f"/api/v1/partitions/?limit={page}", seconds)
            base_rps, base_ms = measure(client, f"/baseline/partitions/?limit={page}", seconds)
            results[page] = {"api_rps": round(api_rps, 1), "baseline_rps": round(base_rps, 1),
                             "api_median_ms": round(api_ms, 2), "baseline_median_ms": round(base_ms, 2),
                             "slowdown": round(base_rps / api_rps, 2)}
            print(f"page {page}: API {api_rps:.0f} req/s ({api_ms:.1f} ms), values()+orjson {base_rps:.0f} req/s "
                  f"({base_ms:.1f} ms): API is {base_rps / api_rps:.2f}x slower (target <= 2.5x)")
    print(json.dumps({"benchmark": "api_partitions_list", "partitions": Partition.objects.count(),
                      "pages": results, "target_max_slowdown": 2.5, "quick": args.quick}))


if __name__ == "__main__":
    main()

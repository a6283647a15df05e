"""Every large list of /api/v1/ (nodes, GPUs, partitions, telemetry, deployments) vs a hand-written
``values()`` + orjson view producing the same JSON, measured in the same run through the same
Django test client and middleware.

Fleet: ``serving.simulation.simulate_fleet`` (the ``simulate_fleet`` command's function): 25
nodes (``--quick``) or 125 x 8 MI300X in CPX, a quarter of the partitions held by deployments,
a telemetry snapshot per node in a private Redis (the bundled redis-server).

- measured: the DRF viewset (session auth, role permission, filter backends, validated
  pagination with keyset ``next`` links, the list's read path, the orjson renderer);
- baseline: a plain Django view that reads the same page with ``values()`` (plus, for GPUs,
  one query for the page's partitions; for nodes, one for their GPU counts; for telemetry, one
  Redis MGET; for deployments, one each for slots, moves and copies, and the workloads from the
  function that computes them) and dumps it with orjson, after the same access check as the
  API (the model's view permission, or a role for telemetry); it skips validation and filters. Before timing, the baseline's results are checked equal
  to the API's (telemetry: but for ``age_s``, which moves), so neither side does less.

Requests alternate API and baseline one by one (the machine is shared); per request the
median latency.
Also: the GPU list's last page by cursor and by offset against its first page. Target: the GPU
list at most 2x the baseline. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from _django import start_redis

REDIS_PROC, REDIS_URL = start_redis()
os.environ["REDIS_URL"] = REDIS_URL

import _django  # noqa: E402

_django.setup()

import orjson  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.core.exceptions import PermissionDenied  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.utils import timezone  # noqa: E402

from aimconsole.roles import user_role  # noqa: E402
from models.services import load_catalog  # noqa: E402
from partitions.models import AGENT_STALE_AFTER, GPU, Node, Partition  # noqa: E402
from partitions.telemetry_store import read_snapshots_sync  # noqa: E402
from serving.simulation import simulate_fleet  # noqa: E402

TARGET = 2.0


def _page(request: HttpRequest, permission: str) -> tuple[int, int]:
    """The page asked for, once the user may read it: the same access check as the API's
    (``permission_required``; validation and filters are what the baseline leaves out)."""
    allowed = user_role(request.user) is not None if permission == "role" else request.user.has_perm(permission)
    if not allowed:
        raise PermissionDenied
    return int(request.GET.get("limit", 50)), int(request.GET.get("offset", 0))


def _dt(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _answer(count: int, results: list[dict[str, Any]]) -> HttpResponse:
    return HttpResponse(orjson.dumps({"count": count, "results": results}), content_type="application/json")


def baseline_partitions(request: HttpRequest) -> HttpResponse:
    limit, offset = _page(request, "partitions.view_partition")
    rows = Partition.objects.order_by("gpu__node__name", "gpu__index", "index").values(
        "id", "gpu__node__name", "gpu_id", "gpu__index", "index", "logical_index", "xcds", "compute_units",
        "memory_gb", "reported_memory_mb", "render_node", "uuid", "bdf")[offset:offset + limit]
    results = [{"id": r["id"], "node": r["gpu__node__name"], "gpu": r["gpu_id"], "gpu_index": r["gpu__index"],
                "index": r["index"], "logical_index": r["logical_index"], "xcds": r["xcds"], "compute_units": r["compute_units"],
                "memory_gb": r["memory_gb"], "reported_memory_mb": r["reported_memory_mb"], "render_node": r["render_node"],
                "uuid": r["uuid"], "bdf": r["bdf"]} for r in rows]
    return _answer(Partition.objects.count(), results)


GPU_COLUMNS = ("id", "node__name", "node__emulated", "index", "gpu_model", "market_name", "bdf", "uuid", "gfx_target",
               "compute_mode", "memory_mode", "memory_caps", "accelerator_profiles", "compute_units", "vram_mb", "health",
               "health_reason", "schedulable", "pending_memory_mode", "health_check_requested_at")


def baseline_gpus(request: HttpRequest) -> HttpResponse:
    limit, offset = _page(request, "partitions.view_gpu")
    rows = list(GPU.objects.order_by("node__name", "index").values(*GPU_COLUMNS)[offset:offset + limit])
    parts: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
    for p in Partition.objects.filter(gpu_id__in=list(parts)).order_by("gpu_id", "index").values(
            "gpu_id", "id", "index", "logical_index", "xcds", "compute_units", "memory_gb", "render_node"):
        parts[p.pop("gpu_id")].append(p)
    results = []
    for r in rows:
        row = {("node" if k == "node__name" else "emulated" if k == "node__emulated" else k): v for k, v in r.items()}
        row["health_check_requested_at"] = _dt(row["health_check_requested_at"])
        row["partition_count"] = len(parts[r["id"]])
        row["partitions"] = parts[r["id"]]
        results.append(row)
    return _answer(GPU.objects.count(), results)


NODE_COLUMNS = ("id", "name", "backend", "emulated", "amd_smi_version", "rocm_version", "memory_mode", "agent_heartbeat_at",
                "agent_lease_holder", "agent_lease_expires_at", "last_synced_at", "sync_error", "layout_problem",
                "reconciled_at", "reconcile_changes", "runtime")


def baseline_nodes(request: HttpRequest) -> HttpResponse:
    limit, offset = _page(request, "partitions.view_node")
    rows = list(Node.objects.order_by("name").values(*NODE_COLUMNS)[offset:offset + limit])
    counts = dict(GPU.objects.filter(node_id__in=[r["id"] for r in rows]).order_by().values("node_id")
                  .annotate(n=Count("id")).values_list("node_id", "n"))
    stale = timezone.now() - AGENT_STALE_AFTER
    results = []
    for r in rows:
        hb = r["agent_heartbeat_at"]
        results.append({
            "id": r["id"], "name": r["name"], "backend": r["backend"], "emulated": r["emulated"],
            "amd_smi_version": r["amd_smi_version"], "rocm_version": r["rocm_version"], "memory_mode": r["memory_mode"],
            "agent_heartbeat_at": _dt(hb), "agent_alive": hb is not None and hb > stale,
            "agent_lease_holder": r["agent_lease_holder"], "agent_lease_expires_at": _dt(r["agent_lease_expires_at"]),
            "last_synced_at": _dt(r["last_synced_at"]), "sync_error": r["sync_error"], "layout_problem": r["layout_problem"],
            "schedulable": not r["layout_problem"], "reconciled_at": _dt(r["reconciled_at"]),
            "reconcile_changes": r["reconcile_changes"], "gpu_count": counts.get(r["id"], 0), "runtime": r["runtime"],
            "serving_runtime": r["runtime"] or Node.DEFAULT_RUNTIMES.get(r["backend"], ""),
        })
    return _answer(Node.objects.count(), results)


def baseline_telemetry(request: HttpRequest) -> HttpResponse:
    limit, offset = _page(request, "role")
    nodes = list(Node.objects.order_by("name").values("name", "emulated")[offset:offset + limit])
    snapshots = read_snapshots_sync([n["name"] for n in nodes])
    now = time.time()
    results = []
    for n in nodes:
        snap = snapshots.get(n["name"])
        results.append({"node": n["name"], "emulated": n["emulated"], "live": False, "ts": None, "age_s": None,
                        "interval_s": None, "gpus": []} if snap is None else {**snap, "live": True, "age_s": round(now - snap["ts"], 2)})
    return _answer(Node.objects.count(), results)


def _by_deployment(rows: Any, rename: dict[str, str], dates: tuple[str, ...]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        row = {rename.get(k, k): v for k, v in r.items() if k != "deployment_id"}
        for name in dates:
            row[name] = _dt(row[name])
        out.setdefault(r["deployment_id"], []).append(row)
    return out


def baseline_deployments(request: HttpRequest) -> HttpResponse:
    """values() for the page, its slots, moves and copies; the workloads from the one function
    that computes them (serving.api.serializers.workloads: domain work any view must do)."""
    from models.sizing import replica_gb_per_gpu
    from serving.api.serializers import SlotView, workloads
    from serving.models import Deployment, DeploymentSlot, Replica, ReplicaMove

    limit, offset = _page(request, "serving.view_deployment")
    rows = list(Deployment.objects.order_by("-created_at", "-id").values(
        "id", "name", "state", "state_message", "profile_id", "profile__model__hf_id", "profile__precision__code",
        "profile__gpu_model", "profile__memory_required_gb", "profile__context_tokens", "profile__concurrent_sequences",
        "sizing_snapshot", "replicas", "priority", "spread", "pin_node__name", "pin_gpu_index", "plan_id", "planned_slots",
        "runtime", "created_at", "updated_at", "profile__model__context_length", "profile__gpus_needed",
        "profile__per_gpu_gb")[offset:offset + limit])
    ids = [r["id"] for r in rows]
    slot_rows = list(DeploymentSlot.objects.filter(deployment_id__in=ids).order_by("replica", "partition__logical_index").values(
        "deployment_id", "replica", "state", "partition__gpu__node__name", "partition__gpu__index", "partition__index",
        "partition__logical_index", "partition__render_node", "partition__memory_gb", "started_at",
        "partition__gpu_id", "partition__gpu__node__emulated"))
    views: dict[int, list[Any]] = {}
    slots: dict[int, list[dict[str, Any]]] = {}
    for v in slot_rows:
        views.setdefault(v["deployment_id"], []).append(SlotView(
            replica=v["replica"], state=v["state"], node=v["partition__gpu__node__name"], emulated=v["partition__gpu__node__emulated"],
            gpu_id=v["partition__gpu_id"], gpu_index=v["partition__gpu__index"], partition_index=v["partition__index"],
            logical_index=v["partition__logical_index"], render_node=v["partition__render_node"], memory_gb=v["partition__memory_gb"]))
        slots.setdefault(v["deployment_id"], []).append({
            "replica": v["replica"], "state": v["state"], "node": v["partition__gpu__node__name"], "gpu_index": v["partition__gpu__index"],
            "partition_index": v["partition__index"], "logical_index": v["partition__logical_index"],
            "render_node": v["partition__render_node"], "memory_gb": v["partition__memory_gb"], "started_at": _dt(v["started_at"])})
    moves = _by_deployment(ReplicaMove.objects.filter(deployment_id__in=ids).order_by("deployment", "replica", "-created_at").values(
        "deployment_id", "id", "replica", "plan_id", "strategy", "state", "source", "target", "message", "created_at",
        "started_at", "finished_at"), {"plan_id": "plan"}, ("created_at", "started_at", "finished_at"))
    copies = _by_deployment(Replica.objects.filter(deployment_id__in=ids).order_by("replica", "key").values(
        "deployment_id", "key", "replica", "node__name", "node__emulated", "runtime", "state", "endpoint", "served_model", "pid",
        "port", "restarts", "reason", "log_tail", "partitions", "started_at", "ready_at", "updated_at"),
        {"node__name": "node", "node__emulated": "emulated"}, ("started_at", "ready_at", "updated_at"))
    results = []
    for r in rows:
        mine = views.get(r["id"], [])
        results.append({
            "id": r["id"], "name": r["name"], "state": r["state"], "state_message": r["state_message"], "profile": r["profile_id"],
            "model": r["profile__model__hf_id"], "precision": r["profile__precision__code"], "gpu_model": r["profile__gpu_model"],
            "memory_required_gb": r["profile__memory_required_gb"], "context_tokens": r["profile__context_tokens"],
            "concurrent_sequences": r["profile__concurrent_sequences"], "sizing_snapshot": r["sizing_snapshot"],
            "emulated": any(v.emulated for v in mine), "replicas": r["replicas"], "priority": r["priority"], "spread": r["spread"],
            "pin_node": r["pin_node__name"], "pin_gpu_index": r["pin_gpu_index"], "plan": r["plan_id"],
            "planned_slots": r["planned_slots"], "slots": slots.get(r["id"], []), "moves": moves.get(r["id"], []),
            "copies": copies.get(r["id"], []), "runtime": r["runtime"],
            "workloads": workloads(
                name=r["name"], model_id=r["profile__model__hf_id"],
                memory_gb=replica_gb_per_gpu(r["profile__memory_required_gb"], r["profile__gpus_needed"], r["profile__per_gpu_gb"]),
                max_model_len=min(r["profile__context_tokens"], r["profile__model__context_length"]),
                max_num_seqs=r["profile__concurrent_sequences"] if r["profile__concurrent_sequences"] > 1 else None, slots=mine),
            "created_at": _dt(r["created_at"]), "updated_at": _dt(r["updated_at"]),
        })
    return _answer(Deployment.objects.count(), results)


def serializer_gpus(request: HttpRequest) -> HttpResponse:
    """For reference, not a baseline: the GPU list as it was built before its read path, with
    GPUSerializer over a prefetching queryset (what the issue measured at 3.3-4.9x)."""
    from partitions.api.serializers import GPUSerializer

    limit, offset = _page(request, "partitions.view_gpu")
    page = GPU.objects.select_related("node").prefetch_related("partitions").order_by("node__name", "index")[offset:offset + limit]
    return _answer(GPU.objects.count(), list(GPUSerializer(page, many=True).data))


BASELINES = {"nodes": baseline_nodes, "gpus": baseline_gpus, "partitions": baseline_partitions, "telemetry": baseline_telemetry,
             "deployments": baseline_deployments}
urlpatterns = [*(path(f"baseline/{name}/", view) for name, view in BASELINES.items()),
               path("reference/gpus-serializer/", serializer_gpus), path("", include("aimconsole.urls"))]


def _comparable(body: dict[str, Any], name: str) -> Any:
    results = body["results"]
    if name == "telemetry":
        results = [{k: v for k, v in r.items() if k != "age_s"} for r in results]
    return body["count"], results


def interleaved(client: Client, urls: list[str], seconds: float) -> list[list[float]]:
    """Latencies of each URL, requested in turn one by one: on a shared machine they all see
    the same load."""
    latencies: list[list[float]] = [[] for _ in urls]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for url, into in zip(urls, latencies):
            start = time.perf_counter()
            response = client.get(url)
            into.append(time.perf_counter() - start)
            assert response.status_code == 200, (url, response.status_code, response.content[:200])
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    nodes, seconds, rounds = (25, 0.5, 4) if args.quick else (125, 1.5, 6)
    load_catalog()
    fleet = simulate_fleet(nodes=nodes, occupancy=0.25)
    user = get_user_model().objects.create_user("bench", password="x")
    user.groups.add(Group.objects.get(name="viewer"))
    results: dict[str, Any] = {}
    with override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"]):
        client = Client()
        client.force_login(user)
        for name in BASELINES:
            for limit in (50, 200):
                api_url, base_url = f"/api/v1/{name}/?limit={limit}", f"/baseline/{name}/?limit={limit}"
                api_body, base_body = client.get(api_url).json(), client.get(base_url).json()
                assert _comparable(api_body, name) == _comparable(base_body, name), f"{name}: the baseline's JSON differs"
                api, base = interleaved(client, [api_url, base_url], seconds * rounds)
                api_ms, base_ms = statistics.median(api) * 1000, statistics.median(base) * 1000
                results[f"{name}?limit={limit}"] = {"api_median_ms": round(api_ms, 2), "baseline_median_ms": round(base_ms, 2),
                                                    "ratio": round(api_ms / base_ms, 2), "bytes": len(client.get(api_url).content)}
                print(f"{name:<10} limit {limit:>3}: API {api_ms:7.2f} ms, values()+orjson {base_ms:7.2f} ms: "
                      f"{api_ms / base_ms:.2f}x" + (f" (target <= {TARGET}x)" if name == "gpus" else ""))
        ref, base = interleaved(client, ["/reference/gpus-serializer/?limit=50", "/baseline/gpus/?limit=50"], seconds * rounds)
        reference = statistics.median(ref) / statistics.median(base)
        print(f"reference: GPUSerializer over a prefetching queryset (the list before its read path), limit 50: "
              f"{reference:.2f}x the baseline")
        # Deep pages of the GPU list: the last page by cursor and by offset against the first.
        count = client.get("/api/v1/gpus/?limit=1").json()["count"]
        cursor_url = client.get(f"/api/v1/gpus/?limit=1&offset={count - 51}").json()["next"].replace("limit=1", "limit=50")
        pages = {"first": "/api/v1/gpus/?limit=50", "last_by_cursor": cursor_url.split("testserver")[-1],
                 "last_by_offset": f"/api/v1/gpus/?limit=50&offset={count - 50}"}
        deep = {label: round(statistics.median(times) * 1000, 2)
                for label, times in zip(pages, interleaved(client, list(pages.values()), seconds * rounds))}
        print(f"GPU list pages of 50 of {count}: first {deep['first']} ms, last by cursor {deep['last_by_cursor']} ms, "
              f"last by offset {deep['last_by_offset']} ms (the work counted, not timed: tests/partitions/test_list_fast_paths.py)")
    gpus = results["gpus?limit=50"]["ratio"]
    print(json.dumps({"benchmark": "api_lists", "nodes": nodes, "gpus": fleet.gpus, "partitions": fleet.partitions,
                      "deployments": fleet.deployments, "lists": results, "gpu_pages": deep,
                      "gpu_serializer_reference_ratio": round(reference, 2),
                      "target_gpu_list_max_ratio": TARGET, "gpu_list_ratio": gpus, "met": gpus <= TARGET,
                      "quick": args.quick}))
    REDIS_PROC.terminate()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()

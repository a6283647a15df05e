"""Inventory API (nodes, GPUs, partitions, import) and the read-only GPU specs."""

from __future__ import annotations

from typing import Any

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Exists, OuterRef, Prefetch
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from aimconsole.api import ValuesRows, query_integer
from aimconsole.permissions import ReadOnlyForRole
from partitions.api.serializers import (
    GpuReconfigureSerializer,
    GPUSerializer,
    ImportAmdSmiSerializer,
    NodeComputeChangesSerializer,
    NodeReconfigureSerializer,
    NodeSerializer,
    PartitionSerializer,
    ReconfigurationSerializer,
)
from partitions.backends.errors import ParseError
from partitions.geometry import SPECS, GpuSpec, UnknownGpuModel, get_spec
from partitions.models import AGENT_STALE_AFTER, GPU, Node, Partition, Reconfiguration, ReconfigurationStep
from partitions.services import import_amdsmi_outputs
from partitions.services.health import request_health_check
from partitions.services.inventory import ImportRefused
from partitions.services.reconfiguration import OperationInProgress, request_node_reconfiguration, request_reconfiguration

RECONFIGURE_RESPONSES = {
    202: ReconfigurationSerializer,
    400: OpenApiResponse(description="Invalid target (the message names the valid choices); nothing queued"),
    403: OpenApiResponse(description="Operators and admins only"),
    409: OpenApiResponse(description="Another operation on this GPU/node is in progress (detail.operation names it)"),
}


def _conflict(request: Request, exc: OperationInProgress) -> Response:
    # Same error shape as every API error (aimconsole/api.py), with the blocking operation.
    return Response(
        {"code": "conflict", "message": str(exc),
         "detail": {"operation": exc.operation.pk, "state": exc.operation.state,
                    "url": reverse("reconfiguration-detail", args=[exc.operation.pk], request=request)}},
        status=status.HTTP_409_CONFLICT,
    )


def _django_validation(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages})


def _reconfigure(request: Request, *, node_request: bool = False, **target) -> Response:
    """Shared by the GPU and node actions: validate, store the intent, answer 202.

    A node request in the memory mode the node already runs becomes compute-mode changes per
    GPU (no NPS change, no driver reload): the answer lists them (200 when there is nothing
    to change)."""
    if not request.user.has_perm("partitions.add_reconfiguration"):
        raise PermissionDenied("Reconfiguring needs the operator or admin role.")
    context = {"request": request}
    try:
        if not node_request:
            op = request_reconfiguration(requested_by=request.user, **target)
        else:
            outcome = request_node_reconfiguration(requested_by=request.user, **target)
            if not outcome.memory_change:
                rows = Reconfiguration.objects.with_related().filter(pk__in=[o.pk for o in outcome.operations]).order_by("gpu_index")
                body = {"message": outcome.message,
                        "reconfigurations": ReconfigurationSerializer(rows, many=True, context=context).data}
                return Response(body, status=status.HTTP_202_ACCEPTED if outcome.operations else status.HTTP_200_OK)
            (op,) = outcome.operations
    except DjangoValidationError as exc:
        raise _django_validation(exc) from exc
    except OperationInProgress as exc:
        return _conflict(request, exc)
    op = Reconfiguration.objects.with_related().get(pk=op.pk)
    body = ReconfigurationSerializer(op, context=context).data
    return Response(body, status=status.HTTP_202_ACCEPTED)



class PartitionLayoutSerializer(serializers.Serializer):
    compute_mode = serializers.CharField()
    memory_mode = serializers.CharField()
    count = serializers.IntegerField(help_text="Partitions (logical devices) per GPU")
    xcds = serializers.IntegerField(help_text="XCDs per partition")
    cus = serializers.IntegerField(help_text="Compute units per partition")
    memory_gb = serializers.FloatField(help_text="Nominal memory per partition, GiB")
    estimated = serializers.BooleanField(help_text="Memory figure is nominal/inferred, not observed")
    note = serializers.CharField()


class GpuSpecSerializer(serializers.Serializer):
    model = serializers.CharField()
    memory_gb = serializers.IntegerField(help_text="HBM per GPU, GiB")
    memory_type = serializers.CharField()
    xcds = serializers.IntegerField()
    cus = serializers.IntegerField()
    gfx_target = serializers.CharField()
    pci_device_id = serializers.CharField()
    compute_modes = serializers.ListField(child=serializers.CharField())
    memory_modes = serializers.ListField(child=serializers.CharField())
    default_mode = serializers.SerializerMethodField()
    valid_pairs = serializers.SerializerMethodField()
    conditional_pairs = serializers.SerializerMethodField()
    layouts = serializers.SerializerMethodField()
    apu = serializers.BooleanField()
    memory_switchable = serializers.BooleanField()
    estimated_fields = serializers.ListField(child=serializers.CharField())
    notes = serializers.CharField()

    def get_default_mode(self, spec: GpuSpec) -> dict[str, str]:
        compute, memory = spec.default_pair
        return {"compute": compute, "memory": memory}

    def _status(self, spec: GpuSpec, compute: str, memory: str) -> dict[str, str]:
        status = spec.validation(compute, memory)
        assert status is not None  # every pair of the table has one
        return {"validation": status.value, "validation_label": status.label}

    def get_valid_pairs(self, spec: GpuSpec) -> list[dict[str, str]]:
        """Each pair with how far it is vouched for: validation is "validated" (AMD-validated),
        "driver_allowed" (the driver accepts it, AMD does not list it as validated) or
        "estimated" (inferred); validation_label says it in words."""
        return [{"compute": c, "memory": m, **self._status(spec, c, m)} for c, m in spec.valid_pairs]

    def get_conditional_pairs(self, spec: GpuSpec) -> list[dict[str, str]]:
        return [{"compute": c, "memory": m, "condition": why, **self._status(spec, c, m)}
                for (c, m), why in spec.conditional_pairs.items()]

    @extend_schema(responses=PartitionLayoutSerializer(many=True))
    def get_layouts(self, spec: GpuSpec) -> list[dict[str, Any]]:
        return list(PartitionLayoutSerializer(spec.layouts(), many=True).data)


class GpuSpecViewSet(viewsets.GenericViewSet):
    """GPU models the console knows, with their valid partition modes and layouts."""

    permission_classes = (ReadOnlyForRole,)
    serializer_class = GpuSpecSerializer
    lookup_field = "model"
    filter_backends = ()

    def list(self, request: Request) -> Response:
        # LimitOffsetPagination pages any sequence; the stubs only name querysets.
        page = self.paginate_queryset(list(SPECS.values()))  # type: ignore[arg-type, var-annotated]
        return self.get_paginated_response(GpuSpecSerializer(page, many=True).data)

    @extend_schema(responses=GpuSpecSerializer, parameters=[
        OpenApiParameter("model", str, OpenApiParameter.PATH, description="GPU model, e.g. MI300X")])
    def retrieve(self, request: Request, model: str | None = None) -> Response:
        try:
            spec = get_spec(model or "")
        except UnknownGpuModel as exc:
            raise NotFound(str(exc)) from None
        return Response(GpuSpecSerializer(spec).data)


class NodeFilter(django_filters.FilterSet):
    class Meta:
        model = Node
        fields = ("name", "backend", "emulated", "memory_mode")


class NodeViewSet(viewsets.ReadOnlyModelViewSet):
    """Nodes with their backend, versions, NPS mode and agent status (``emulated`` says
    whether the GPUs are emulated or simulated rather than real)."""

    queryset = Node.objects.prefetch_related("gpus")
    serializer_class = NodeSerializer
    filterset_class = NodeFilter
    lookup_field = "name"
    lookup_value_regex = r"[a-z0-9.-]+"
    ordering_fields = ("name", "last_synced_at")
    keyset_fields = ("name",)  # the unique index on name: deep pages cost the first page's

    # Hot read path (as the partitions list): one values() query for the page and one for
    # its GPU counts; NodeSerializer still renders the detail and documents both, and
    # tests/partitions/test_list_fast_paths.py pins the two to the same JSON.
    LIST = ValuesRows(NodeSerializer, {
        "id": "id", "name": "name", "backend": "backend", "emulated": "emulated", "amd_smi_version": "amd_smi_version",
        "rocm_version": "rocm_version", "memory_mode": "memory_mode", "agent_heartbeat_at": "agent_heartbeat_at",
        "agent_alive": "agent_heartbeat_at", "agent_lease_holder": "agent_lease_holder",
        "agent_lease_expires_at": "agent_lease_expires_at", "last_synced_at": "last_synced_at", "sync_error": "sync_error",
        "layout_problem": "layout_problem", "schedulable": "layout_problem", "reconciled_at": "reconciled_at",
        "reconcile_changes": "reconcile_changes", "gpu_count": "id", "runtime": "runtime", "serving_runtime": "runtime",
    })

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(Node.objects.order_by("name")).values(*self.LIST.paths, "backend")
        page = self.paginate_queryset(queryset)
        values = page if page is not None else list(queryset)
        gpu_counts = dict(GPU.objects.filter(node_id__in=[v["id"] for v in values]).order_by()
                          .values("node_id").annotate(n=Count("id")).values_list("node_id", "n"))
        stale_before = timezone.now() - AGENT_STALE_AFTER
        rows = self.LIST.rows(values)
        for row, value in zip(rows, values):
            # The rules of Node.agent_alive, .schedulable and .serving_runtime, on values.
            heartbeat = value["agent_heartbeat_at"]
            row["agent_alive"] = heartbeat is not None and heartbeat > stale_before
            row["schedulable"] = not value["layout_problem"]
            row["gpu_count"] = gpu_counts.get(value["id"], 0)
            row["serving_runtime"] = value["runtime"] or Node.DEFAULT_RUNTIMES.get(value["backend"], "")
        return self.get_paginated_response(rows) if page is not None else Response(rows)

    @extend_schema(
        request=ImportAmdSmiSerializer,
        responses={200: OpenApiResponse(description="What would be stored and removed (dry run)"),
                   201: OpenApiResponse(description="Parsed and stored inventory"),
                   400: OpenApiResponse(description="Not amd-smi output (unrecognised, malformed, too large or too deep)"),
                   409: OpenApiResponse(description="Refused: it would remove GPUs/partitions in use or overwrite a "
                                                    "node with a live agent (detail.would_remove); send force to import anyway")},
    )
    @action(detail=True, methods=["post"], url_path="import-amdsmi")
    def import_amdsmi(self, request: Request, name: str | None = None) -> Response:
        """Store captured amd-smi outputs as the node's inventory (created if new)."""
        if not request.user.has_perm("partitions.change_node"):
            self.permission_denied(request, message="Importing an inventory needs the operator or admin role.")
        payload = ImportAmdSmiSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        outputs = payload.validated_data["outputs"]
        files = [(f"outputs[{i}]", text) for i, text in enumerate(outputs)]
        try:
            result = import_amdsmi_outputs(node_name=name or "", files=files, dry_run=payload.validated_data["dry_run"],
                                           force=payload.validated_data["force"])
        except ImportRefused as exc:
            return Response({"code": "conflict", "message": f"{exc}; send \"force\": true to import anyway (audited)",
                             "detail": exc.detail}, status=status.HTTP_409_CONFLICT)
        except ParseError as exc:
            raise ValidationError({"outputs": [str(exc)]}, code="unparseable") from exc
        except DjangoValidationError as exc:
            raise ValidationError({"name": exc.messages}) from exc
        return Response(result.to_json(), status=status.HTTP_200_OK if result.dry_run else status.HTTP_201_CREATED)


    @extend_schema(request=NodeReconfigureSerializer, responses={
        **RECONFIGURE_RESPONSES,
        202: PolymorphicProxySerializer(
            component_name="NodeReconfigureAccepted", resource_type_field_name=None,
            serializers=[ReconfigurationSerializer, NodeComputeChangesSerializer],
            many=False,
        ),
        200: NodeComputeChangesSerializer,
    })
    @action(detail=True, methods=["post"])
    def reconfigure(self, request: Request, name: str | None = None) -> Response:
        """Change the node's memory (NPS) mode — reloads the driver for every GPU of the node —
        and optionally every GPU's compute mode afterwards (202 with the operation).

        In the memory mode the node already runs there is nothing for NPS to do: the request
        becomes one compute-mode change per GPU not yet in ``compute_mode``, with no driver
        reload (202 with ``reconfigurations``; 200 with an empty list when every GPU is there)."""
        node = self.get_object()
        payload = NodeReconfigureSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        return _reconfigure(request, node_request=True, node=node, memory_mode=data["memory_mode"],
                            compute_mode=data.get("compute_mode") or None, drain=data["drain"], reason=data["reason"])


class GPUFilter(django_filters.FilterSet):
    node = django_filters.CharFilter(field_name="node__name")

    class Meta:
        model = GPU
        fields = ("node", "index", "gpu_model", "compute_mode", "memory_mode", "health", "schedulable")


class GPUViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = GPU.objects.select_related("node").prefetch_related("partitions")
    serializer_class = GPUSerializer
    filterset_class = GPUFilter
    ordering_fields = ("node__name", "index")
    keyset_fields = ("node__name", "index")  # unique: node names are, and (node, index) is

    # Hot read path: one values() query for the page and one for its partitions (same JSON as
    # GPUSerializer, pinned by tests/partitions/test_list_fast_paths.py).
    LIST = ValuesRows(GPUSerializer, {
        "id": "id", "node": "node__name", "emulated": "node__emulated", "index": "index", "gpu_model": "gpu_model",
        "market_name": "market_name", "bdf": "bdf", "uuid": "uuid", "gfx_target": "gfx_target",
        "compute_mode": "compute_mode", "memory_mode": "memory_mode", "memory_caps": "memory_caps",
        "accelerator_profiles": "accelerator_profiles", "compute_units": "compute_units", "vram_mb": "vram_mb",
        "health": "health", "health_reason": "health_reason", "schedulable": "schedulable",
        "pending_memory_mode": "pending_memory_mode", "health_check_requested_at": "health_check_requested_at",
        "partition_count": "id", "partitions": "id",
    })
    PARTITION_FIELDS = ("id", "index", "logical_index", "xcds", "compute_units", "memory_gb", "render_node")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(GPU.objects.order_by("node__name", "index")).values(*self.LIST.paths)
        page = self.paginate_queryset(queryset)
        values = page if page is not None else list(queryset)
        partitions: dict[int, list[dict[str, Any]]] = {v["id"]: [] for v in values}
        for part in (Partition.objects.filter(gpu_id__in=list(partitions)).order_by("gpu_id", "index")
                     .values("gpu_id", *self.PARTITION_FIELDS)):
            partitions[part.pop("gpu_id")].append(part)
        rows = self.LIST.rows(values)
        for row in rows:
            row["partitions"] = partitions[row["id"]]
            row["partition_count"] = len(row["partitions"])
        return self.get_paginated_response(rows) if page is not None else Response(rows)

    @extend_schema(request=GpuReconfigureSerializer, responses=RECONFIGURE_RESPONSES)
    @action(detail=True, methods=["post"])
    def reconfigure(self, request: Request, pk: str | None = None) -> Response:
        """Change this GPU's compute mode (SPX/DPX/QPX/CPX); 409 while another operation runs."""
        gpu = self.get_object()
        payload = GpuReconfigureSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        return _reconfigure(request, gpu=gpu, compute_mode=data["compute_mode"], memory_mode=data.get("memory_mode") or None,
                            drain=data["drain"], reason=data["reason"])

    @extend_schema(request=None, responses={
        202: GPUSerializer,
        400: OpenApiResponse(description="The GPU is not unhealthy, or its node has no live backend"),
        403: OpenApiResponse(description="Operators and admins only"),
        409: OpenApiResponse(description="An operation on this GPU is in progress (detail.operation names it)"),
    })
    @action(detail=True, methods=["post"], url_path="mark-healthy")
    def mark_healthy(self, request: Request, pk: str | None = None) -> Response:
        """Mark an unhealthy GPU healthy after a check: the node's agent re-reads the hardware
        and clears the mark only if the GPU reads at its expected layout (the target of the
        last operation on it if that succeeded, else the layout before it). 202 at once;
        ``health_check_requested_at`` is unset once checked, ``health`` and ``health_reason``
        give the outcome (both audited)."""
        if not request.user.has_perm("partitions.change_gpu"):
            raise PermissionDenied("Marking a GPU healthy needs the operator or admin role.")
        gpu = self.get_object()
        try:
            request_health_check(gpu=gpu, requested_by=request.user)
        except DjangoValidationError as exc:
            raise _django_validation(exc) from exc
        except OperationInProgress as exc:
            return _conflict(request, exc)
        gpu = self.get_queryset().get(pk=gpu.pk)
        return Response(GPUSerializer(gpu, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class PartitionFilter(django_filters.FilterSet):
    node = django_filters.CharFilter(field_name="gpu__node__name")
    gpu_index = django_filters.NumberFilter(field_name="gpu__index")

    class Meta:
        model = Partition
        fields = ("node", "gpu", "gpu_index", "index", "logical_index")


class PartitionViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Partition.objects.select_related("gpu__node").order_by("gpu__node__name", "gpu__index", "index")
    serializer_class = PartitionSerializer
    filterset_class = PartitionFilter
    ordering_fields = ("logical_index", "memory_gb")
    keyset_fields = ("gpu__node__name", "gpu__index", "index")

    # Hot read path: the list is built from one values() query (the same fields and names as
    # PartitionSerializer, which still renders the detail and documents both), skipping
    # per-object serializer work — see benchmarks/api.py.
    LIST = ValuesRows(PartitionSerializer, {
        "id": "id", "node": "gpu__node__name", "gpu": "gpu_id", "gpu_index": "gpu__index", "index": "index",
        "logical_index": "logical_index", "xcds": "xcds", "compute_units": "compute_units", "memory_gb": "memory_gb",
        "reported_memory_mb": "reported_memory_mb", "render_node": "render_node", "uuid": "uuid", "bdf": "bdf",
    })

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset()).values(*self.LIST.paths)
        page = self.paginate_queryset(queryset)
        rows = self.LIST.rows(page if page is not None else list(queryset))
        return self.get_paginated_response(rows) if page is not None else Response(rows)


class ReconfigurationFilter(django_filters.FilterSet):
    node = django_filters.CharFilter(field_name="node__name")
    gpu = django_filters.NumberFilter(field_name="gpu_id")
    state = django_filters.MultipleChoiceFilter(choices=Reconfiguration.State.choices)

    class Meta:
        model = Reconfiguration
        fields = ("node", "gpu", "gpu_index", "state", "kind")


class ReconfigurationViewSet(viewsets.ReadOnlyModelViewSet):
    """Reconfiguration operations with their steps (poll the detail, or watch the WebSocket)."""

    queryset = Reconfiguration.objects.select_related("node", "requested_by").prefetch_related(
        Prefetch("steps", queryset=ReconfigurationStep.objects.order_by("seq"))
    )
    serializer_class = ReconfigurationSerializer
    filterset_class = ReconfigurationFilter
    ordering_fields = ("created_at", "finished_at", "state")


class TelemetrySnapshotSerializer(serializers.Serializer):
    node = serializers.CharField()
    emulated = serializers.BooleanField()
    live = serializers.BooleanField(help_text="Whether the node has a live sample; false: its agent is down or its data "
                                              "expired (ts, age_s and interval_s are null, gpus empty)")
    ts = serializers.FloatField(allow_null=True, help_text="Sample time, seconds since the epoch")
    age_s = serializers.FloatField(allow_null=True, help_text="Seconds since the sample")
    interval_s = serializers.FloatField(allow_null=True)
    gpus = serializers.ListField(child=serializers.DictField(), help_text="Per GPU: power_w, temperature_c, partitions[]")


class CharInFilter(django_filters.BaseInFilter, django_filters.CharFilter):
    pass


class TelemetryFilter(django_filters.FilterSet):
    node = CharInFilter(field_name="name", help_text="Only these nodes (comma-separated names)")
    node_prefix = django_filters.CharFilter(field_name="name", lookup_expr="startswith", help_text="Nodes whose name starts so")
    gpu_model = django_filters.CharFilter(method="filter_gpu_model", help_text="Nodes with a GPU of this model (MI300X...)")
    compute_mode = django_filters.CharFilter(method="filter_compute_mode", help_text="Nodes with a GPU in this compute mode")

    class Meta:
        model = Node
        fields = ("node", "node_prefix", "backend", "emulated", "memory_mode", "gpu_model", "compute_mode")

    # EXISTS, not a join: one row per node, and the name ordering keeps its index.
    def filter_gpu_model(self, queryset: Any, name: str, value: str) -> Any:
        return queryset.filter(Exists(GPU.objects.filter(node=OuterRef("pk"), gpu_model=value)))

    def filter_compute_mode(self, queryset: Any, name: str, value: str) -> Any:
        return queryset.filter(Exists(GPU.objects.filter(node=OuterRef("pk"), compute_mode=value)))


class TelemetryViewSet(viewsets.GenericViewSet):
    """Latest telemetry snapshot per node, a page of nodes at a time (ordered by name), from
    the telemetry store: the page's nodes are read from the database and only their snapshots
    from Redis, so a page costs the same for 10 nodes or 1,000. A node without a live sample
    (agent down, data expired) is listed with ``live: false``. Per-partition activity on
    partitioned GPUs is derived from per-XCP busy (``derived``); ``gpu_index`` keeps one GPU
    of each snapshot."""

    permission_classes = (ReadOnlyForRole,)
    serializer_class = TelemetrySnapshotSerializer
    queryset = Node.objects.order_by("name")
    filterset_class = TelemetryFilter
    ordering_fields: tuple[str, ...] = ()
    keyset_fields = ("name",)

    @extend_schema(parameters=[
        OpenApiParameter("gpu_index", int, OpenApiParameter.QUERY, description="Only this GPU of each node's snapshot")])
    def list(self, request: Request) -> Response:
        import time

        import redis as redis_lib

        from partitions.telemetry_store import read_snapshots_sync

        gpu_index = query_integer(request, "gpu_index", default=None, minimum=0, maximum=2**15 - 1)
        queryset = self.filter_queryset(self.get_queryset()).values("name", "emulated")
        page = self.paginate_queryset(queryset)
        nodes = page if page is not None else list(queryset)
        try:
            snapshots = read_snapshots_sync([n["name"] for n in nodes])
        except redis_lib.RedisError as exc:
            return Response({"code": "unavailable", "message": f"telemetry store unreachable: {exc}", "detail": None},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
        now = time.time()
        rows = []
        for node in nodes:
            snap = snapshots.get(node["name"])
            if snap is None:
                rows.append({"node": node["name"], "emulated": node["emulated"], "live": False, "ts": None, "age_s": None,
                             "interval_s": None, "gpus": []})
                continue
            row = {**snap, "live": True, "age_s": round(now - snap["ts"], 2)}
            if gpu_index is not None:
                row["gpus"] = [g for g in snap.get("gpus", []) if g.get("index") == gpu_index]
            rows.append(row)
        return self.get_paginated_response(rows) if page is not None else Response(rows)

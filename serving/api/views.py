"""Deployments API."""

from __future__ import annotations

from typing import Any

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from aimconsole.api import ValuesRows, validation_error
from models.sizing import replica_gb_per_gpu
from planning.api.views import plan_body
from planning.placement.reasons import count_reasons
from serving.api.serializers import (
    DeploymentCreateSerializer,
    DeploymentSerializer,
    DeploymentSlotSerializer,
    ReplicaMoveSerializer,
    ReplicaSerializer,
    SlotView,
    max_num_seqs_for,
    workloads,
)
from serving.models import Deployment, DeploymentSlot, Replica, ReplicaMove
from serving.services import PlacementConflict, create_deployment, stop_deployment


class DeploymentFilter(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=Deployment.State.choices)
    node = django_filters.CharFilter(field_name="slots__partition__gpu__node__name", distinct=True)
    model = django_filters.CharFilter(field_name="profile__model__hf_id")

    class Meta:
        model = Deployment
        fields = ("state", "node", "model", "name", "plan")


class DeploymentViewSet(mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Model deployments: a profile with N replicas bound to partitions. POST places it on the
    current layout (409 with the reasons and a suggested plan when it does not fit); DELETE
    stops it and frees its partitions."""

    queryset = Deployment.objects.with_related()
    serializer_class = DeploymentSerializer
    filterset_class = DeploymentFilter
    ordering_fields = ("created_at", "priority", "name")
    keyset_fields = ("-created_at", "-id")  # the default ordering, on its index (deployment_newest_first)

    # Hot read path: the page and its slots, moves and copies as values() rows (one query
    # each), workloads through the serializer's own function; the same JSON as
    # DeploymentSerializer, pinned by tests/serving/test_deployment_list_fast_path.py.
    LIST = ValuesRows(DeploymentSerializer, {
        "id": "id", "name": "name", "state": "state", "state_message": "state_message", "profile": "profile_id",
        "model": "profile__model__hf_id", "precision": "profile__precision__code", "gpu_model": "profile__gpu_model",
        "memory_required_gb": "profile__memory_required_gb", "context_tokens": "profile__context_tokens",
        "concurrent_sequences": "profile__concurrent_sequences", "sizing_snapshot": "sizing_snapshot", "emulated": "id",
        "replicas": "replicas", "priority": "priority", "spread": "spread", "pin_node": "pin_node__name",
        "pin_gpu_index": "pin_gpu_index", "plan": "plan_id", "planned_slots": "planned_slots", "slots": "id", "moves": "id",
        "copies": "id", "runtime": "runtime", "workloads": "id", "created_at": "created_at", "updated_at": "updated_at",
    })
    EXTRA = ("profile__model__context_length", "profile__gpus_needed", "profile__per_gpu_gb")
    SLOTS = ValuesRows(DeploymentSlotSerializer, {
        "replica": "replica", "state": "state", "node": "partition__gpu__node__name", "gpu_index": "partition__gpu__index",
        "partition_index": "partition__index", "logical_index": "partition__logical_index",
        "render_node": "partition__render_node", "memory_gb": "partition__memory_gb", "started_at": "started_at",
    })
    MOVES = ValuesRows(ReplicaMoveSerializer, {name: ("plan_id" if name == "plan" else name) for name in ReplicaMoveSerializer.Meta.fields})
    COPIES = ValuesRows(ReplicaSerializer, {
        name: {"node": "node__name", "emulated": "node__emulated"}.get(name, name) for name in ReplicaSerializer.Meta.fields})

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(Deployment.objects.all()).values(*self.LIST.paths, *self.EXTRA)
        page = self.paginate_queryset(queryset)
        values = page if page is not None else list(queryset)
        ids = [v["id"] for v in values]
        slot_values = list(DeploymentSlot.objects.filter(deployment_id__in=ids).order_by("replica", "partition__logical_index")
                           .values("deployment_id", "partition__gpu_id", "partition__gpu__node__emulated", *self.SLOTS.paths))
        slots, views = _group(slot_values, self.SLOTS), _slot_views(slot_values)
        moves = _group(ReplicaMove.objects.filter(deployment_id__in=ids).order_by("deployment", "replica", "-created_at")
                            .values("deployment_id", *self.MOVES.paths), self.MOVES)
        copies = _group(Replica.objects.filter(deployment_id__in=ids).order_by("replica", "key")
                             .values("deployment_id", *self.COPIES.paths), self.COPIES)
        rows = self.LIST.rows(values)
        for row, value in zip(rows, values):
            pk = value["id"]
            mine = views.get(pk, [])
            row["emulated"] = any(s.emulated for s in mine)
            row["slots"], row["moves"], row["copies"] = slots.get(pk, []), moves.get(pk, []), copies.get(pk, [])
            row["workloads"] = workloads(
                name=value["name"], model_id=value["profile__model__hf_id"],
                memory_gb=replica_gb_per_gpu(value["profile__memory_required_gb"], value["profile__gpus_needed"],
                                             value["profile__per_gpu_gb"]),
                max_model_len=min(value["profile__context_tokens"], value["profile__model__context_length"]),
                max_num_seqs=max_num_seqs_for(value["profile__concurrent_sequences"]), slots=mine)
        return self.get_paginated_response(rows) if page is not None else Response(rows)

    @extend_schema(request=DeploymentCreateSerializer, responses={
        201: DeploymentSerializer,
        400: OpenApiResponse(description="Invalid request"),
        409: OpenApiResponse(description="Does not fit the current layout: detail.reasons (one line per distinct "
                                         "reason, with its replica count), detail.reasons_summary (the same as "
                                         "{reason, replicas, of}) and detail.suggested_plan; or code "
                                         "'contended' (with Retry-After) when concurrent creates kept taking the "
                                         "partitions it chose: retry"),
    })
    def create(self, request: Request, *args, **kwargs) -> Response:
        payload = DeploymentCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            spec = payload.spec()
            deployment = create_deployment(spec=spec, requested_by=request.user)
        except DjangoValidationError as exc:
            raise validation_error(exc) from exc
        except PlacementConflict as exc:
            if exc.code == "contended":
                # It fits, but concurrent requests kept taking its partitions: worth retrying.
                return Response({"code": "contended", "message": str(exc), "detail": {"reasons": exc.reasons}},
                                status=status.HTTP_409_CONFLICT, headers={"Retry-After": "1"})
            # One line per distinct reason, counted ("8 of 8 replicas: needs ..."), never one
            # per replica: the body stays small however many replicas were asked for.
            counted = count_reasons(exc.reasons, of=spec.replicas)
            reasons = [str(r) for r in counted]
            return Response({
                "code": "unplaceable",
                "message": f"{spec.name} does not fit the current layout: {'; '.join(reasons)}",
                "detail": {"reasons": reasons,
                           "reasons_summary": [{"reason": r.reason, "replicas": r.replicas, "of": r.of} for r in counted],
                           "excluded": exc.excluded,
                           "suggested_plan": plan_body(exc.plan, request) if exc.plan else None},
            }, status=status.HTTP_409_CONFLICT)
        deployment = Deployment.objects.with_related().get(pk=deployment.pk)
        return Response(DeploymentSerializer(deployment, context={"request": request}).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        deployment = self.get_object()
        deployment = stop_deployment(deployment=deployment, reason=f"stopped by {request.user.get_username()}")
        deployment = Deployment.objects.with_related().get(pk=deployment.pk)
        return Response(DeploymentSerializer(deployment, context={"request": request}).data, status=status.HTTP_200_OK)


def _group(values: list[dict[str, Any]], shape: ValuesRows) -> dict[int, list[dict[str, Any]]]:
    """Nested rows (slots, moves, copies) shaped by their serializer's columns, by deployment."""
    out: dict[int, list[dict[str, Any]]] = {}
    for value, row in zip(values, shape.rows(values)):
        out.setdefault(value["deployment_id"], []).append(row)
    return out


def _slot_views(values: list[dict[str, Any]]) -> dict[int, list[SlotView]]:
    """What the workloads are computed from, by deployment."""
    out: dict[int, list[SlotView]] = {}
    for v in values:
        out.setdefault(v["deployment_id"], []).append(SlotView(
            replica=v["replica"], state=v["state"], node=v["partition__gpu__node__name"],
            emulated=v["partition__gpu__node__emulated"], gpu_id=v["partition__gpu_id"], gpu_index=v["partition__gpu__index"],
            partition_index=v["partition__index"], logical_index=v["partition__logical_index"],
            render_node=v["partition__render_node"], memory_gb=v["partition__memory_gb"]))
    return out

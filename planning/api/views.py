"""Plans API: what-if plans and applying them."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from aimconsole.api import validation_error
from partitions.api.serializers import ReconfigurationSerializer
from partitions.models import Reconfiguration
from partitions.services.reconfiguration import OperationInProgress
from planning import planner
from planning.api.serializers import PlanCreateSerializer, PlanSerializer, plan_inputs
from planning.models import Plan
from planning.services import StalePlan, apply_plan, replan, request_plan


def plan_body(plan: Plan, request: Request) -> dict:
    return PlanSerializer(plan, context={"request": request}).data


class PlanViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """What-if plans: POST target layouts and/or demands, read what would change (nothing
    changes); POST .../apply/ to turn the plan into operations."""

    queryset = Plan.objects.all()
    serializer_class = PlanSerializer

    @extend_schema(request=PlanCreateSerializer, responses={
        201: PlanSerializer,
        202: OpenApiResponse(PlanSerializer, description="A fleet of PLAN_ASYNC_MIN_GPUS GPUs or more: the plan in state "
                                                         "planning, which a worker fills in (poll its url until draft or "
                                                         "failed; result.error says why)"),
        400: OpenApiResponse(description="Invalid target or demand"),
    })
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        payload = PlanCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            plan = request_plan(**plan_inputs(data), requested_by=request.user)
        except planner.PlanError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        except DjangoValidationError as exc:
            raise validation_error(exc) from exc
        body = plan_body(plan, request)
        if plan.state == Plan.State.PLANNING:  # a large fleet: a worker fills it in
            return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={
        202: OpenApiResponse(description="Operations created: reconfigurations and deployments"),
        409: OpenApiResponse(description="The fleet changed since the plan was made, or an operation is in progress"),
    })
    @action(detail=True, methods=["post"])
    def apply(self, request: Request, pk: str | None = None) -> Response:
        plan = self.get_object()
        if not request.user.has_perm("planning.change_plan"):
            raise PermissionDenied("Applying a plan needs the operator or admin role.")
        try:
            applied = apply_plan(plan=plan, requested_by=request.user)
        except (StalePlan, OperationInProgress) as exc:
            return Response({"code": "conflict", "message": str(exc), "detail": {"plan": plan.pk}}, status=status.HTTP_409_CONFLICT)
        except DjangoValidationError as exc:
            raise validation_error(exc) from exc
        context = {"request": request}
        return Response({
            "plan": plan_body(applied.plan, request),
            "reconfigurations": ReconfigurationSerializer(
                Reconfiguration.objects.with_related().filter(pk__in=[r.pk for r in applied.reconfigurations]), many=True, context=context).data,
            "deployments": [{"id": d.pk, "name": d.name, "state": d.state,
                             "url": reverse("deployment-detail", args=[d.pk], request=request)} for d in applied.deployments],
        }, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={
        201: PlanSerializer, 202: OpenApiResponse(PlanSerializer, description="Planned by a worker (large fleets): see create"),
        400: OpenApiResponse(description="The plan's inputs are no longer valid")})
    @action(detail=True, methods=["post"])
    def replan(self, request: Request, pk: str | None = None) -> Response:
        """A new plan with this plan's inputs on the fleet as it is now; the old one, if a
        draft, becomes stale."""
        plan = self.get_object()
        if not request.user.has_perm("planning.add_plan"):
            raise PermissionDenied("Planning needs the operator or admin role.")
        try:
            new = replan(plan=plan, requested_by=request.user)
        except planner.PlanError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        except DjangoValidationError as exc:
            raise validation_error(exc) from exc
        return Response(plan_body(new, request),
                        status=status.HTTP_202_ACCEPTED if new.state == Plan.State.PLANNING else status.HTTP_201_CREATED)

"""Deployments API."""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from aimconsole.api import validation_error
from planning.api.views import plan_body
from planning.placement.reasons import count_reasons
from serving.api.serializers import DeploymentCreateSerializer, DeploymentSerializer
from serving.models import Deployment
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

    @extend_schema(request=DeploymentCreateSerializer, responses={
        201: DeploymentSerializer,
        400: OpenApiResponse(description="Invalid request"),
        409: OpenApiResponse(description="Does not fit the current layout: detail.reasons (one line per distinct "
                                         "reason, with its replica count), detail.reasons_summary (the same as "
                                         "{reason, replicas, of}) and detail.suggested_plan"),
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



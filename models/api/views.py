from __future__ import annotations

from typing import Any

import django_filters
from django.db import transaction
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from aimconsole import audit
from aimconsole.etags import ETagMixin
from models.api.serializers import InferenceModelSerializer, ModelProfileSerializer, PrecisionSerializer
from models.models import InferenceModel, ModelProfile, Precision


class PrecisionViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Precision.objects.all()
    serializer_class = PrecisionSerializer
    lookup_field = "code"


class InferenceModelFilter(django_filters.FilterSet):
    class Meta:
        model = InferenceModel
        fields = {
            "hf_id": ["exact"],
            "vendor": ["exact"],
            "family": ["exact"],
            "architecture": ["exact"],
            "modality": ["exact"],
        }


class SizingWarningsMixin:
    """PUT/PATCH answer with ``warnings``: one line when deployments running with the changed
    profiles no longer fit their partitions ("1 running deployment no longer fits: demo-chat
    (needs 96 GiB, its partitions have 24 GiB)"); they are marked degraded. Empty otherwise."""

    _sizing_warnings: list[str]

    def perform_update(self, serializer: Any) -> None:
        serializer.save()
        self._sizing_warnings = list(serializer.sizing_warnings)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self._sizing_warnings = []
        response = super().update(request, *args, **kwargs)  # type: ignore[misc]
        if isinstance(response.data, dict):
            response.data["warnings"] = self._sizing_warnings  # after the ETag: that is the resource's alone
        return response


class InferenceModelViewSet(SizingWarningsMixin, ETagMixin, viewsets.ModelViewSet):
    queryset = InferenceModel.objects.with_precisions()
    serializer_class = InferenceModelSerializer
    filterset_class = InferenceModelFilter
    search_fields = ("hf_id", "name", "vendor", "family")
    ordering_fields = ("hf_id", "vendor", "total_params_b", "updated_at")

    @transaction.atomic
    def perform_destroy(self, instance: InferenceModel) -> None:
        audit.record("catalog.model.delete", obj=instance, before=audit.snapshot(instance))
        instance.delete()


class ModelProfileFilter(django_filters.FilterSet):
    model = django_filters.CharFilter(field_name="model__hf_id", help_text="Hugging Face id")
    precision = django_filters.CharFilter(field_name="precision__code")
    gpu = django_filters.ChoiceFilter(field_name="gpu_model", choices=ModelProfile._meta.get_field("gpu_model").choices)
    smallest_partition = django_filters.CharFilter()

    class Meta:
        model = ModelProfile
        fields = ("model", "precision", "gpu", "smallest_partition", "context_tokens", "concurrent_sequences", "gpus_needed")


class ModelProfileViewSet(SizingWarningsMixin, ETagMixin, viewsets.ModelViewSet):
    queryset = ModelProfile.objects.with_related()
    serializer_class = ModelProfileSerializer
    filterset_class = ModelProfileFilter
    ordering_fields = ("memory_required_gb", "gpus_needed", "computed_at")

    @transaction.atomic
    def perform_destroy(self, instance: ModelProfile) -> None:
        audit.record("catalog.profile.delete", obj=instance, before=audit.snapshot(instance))
        instance.delete()

"""Read-only GPU specs from partitions.geometry (pure data, no database)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from aimconsole.permissions import ReadOnlyForSignedIn
from partitions.geometry import SPECS, GpuSpec, UnknownGpuModel, get_spec


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

    def get_valid_pairs(self, spec: GpuSpec) -> list[dict[str, str]]:
        return [{"compute": c, "memory": m} for c, m in spec.valid_pairs]

    def get_conditional_pairs(self, spec: GpuSpec) -> list[dict[str, str]]:
        return [{"compute": c, "memory": m, "condition": why} for (c, m), why in spec.conditional_pairs.items()]

    @extend_schema(responses=PartitionLayoutSerializer(many=True))
    def get_layouts(self, spec: GpuSpec) -> list[dict]:
        return PartitionLayoutSerializer(spec.layouts(), many=True).data


class GpuSpecViewSet(viewsets.ViewSet):
    """GPU models the console knows, with their valid partition modes and layouts."""

    permission_classes = (ReadOnlyForSignedIn,)
    serializer_class = GpuSpecSerializer
    lookup_field = "model"

    @extend_schema(responses=GpuSpecSerializer(many=True))
    def list(self, request: Request) -> Response:
        return Response(GpuSpecSerializer(list(SPECS.values()), many=True).data)

    @extend_schema(responses=GpuSpecSerializer)
    def retrieve(self, request: Request, model: str | None = None) -> Response:
        try:
            spec = get_spec(model or "")
        except UnknownGpuModel as exc:
            raise NotFound(str(exc)) from None
        return Response(GpuSpecSerializer(spec).data)

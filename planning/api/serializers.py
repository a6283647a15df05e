from __future__ import annotations

from rest_framework import serializers

from models.models import ModelProfile
from partitions.models import GPU, Node
from planning.models import Plan


class DemandSerializer(serializers.Serializer):
    """One deployment asked for: a catalog profile with N replicas, optionally pinned or spread."""

    name = serializers.SlugField(max_length=63)
    profile = serializers.PrimaryKeyRelatedField(queryset=ModelProfile.objects.select_related("model", "precision"))
    replicas = serializers.IntegerField(min_value=1, max_value=4096)
    priority = serializers.IntegerField(default=0, min_value=-1000, max_value=1000)
    spread = serializers.BooleanField(default=False)
    pin_node = serializers.SlugRelatedField(slug_field="name", queryset=Node.objects.all(), required=False, allow_null=True)
    pin_gpu_index = serializers.IntegerField(required=False, allow_null=True, min_value=0)


class GpuTargetSerializer(serializers.Serializer):
    gpu = serializers.PrimaryKeyRelatedField(queryset=GPU.objects.select_related("node"))
    compute_mode = serializers.CharField(max_length=8)


class NodeTargetSerializer(serializers.Serializer):
    node = serializers.SlugRelatedField(slug_field="name", queryset=Node.objects.all())
    memory_mode = serializers.CharField(max_length=8)
    compute_mode = serializers.CharField(max_length=8, required=False, allow_blank=True, allow_null=True)


class PlanCreateSerializer(serializers.Serializer):
    gpus = GpuTargetSerializer(many=True, required=False, default=list)
    nodes = NodeTargetSerializer(many=True, required=False, default=list)
    demands = DemandSerializer(many=True, required=False, default=list)

    def validate(self, attrs: dict) -> dict:
        if not (attrs["gpus"] or attrs["nodes"] or attrs["demands"]):
            raise serializers.ValidationError("give target layouts (gpus, nodes) and/or demands")
        return attrs


class PlanSerializer(serializers.ModelSerializer[Plan]):
    url = serializers.HyperlinkedIdentityField(view_name="plan-detail")

    class Meta:
        model = Plan
        fields = ("id", "url", "state", "request", "result", "fingerprint", "created_at", "applied_at")
        read_only_fields = fields

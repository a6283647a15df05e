from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from aimconsole.api import RejectUnknownFieldsMixin
from models.models import ModelProfile
from partitions.models import GPU, Node
from planning.models import Plan
from planning.services import MAX_PLAN_DEMANDS, MAX_PLAN_REPLICAS, MAX_REPLICAS_PER_DEMAND


class DemandSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """One deployment asked for: a catalog profile with N replicas, optionally pinned or spread."""

    name = serializers.SlugField(max_length=63)
    profile = serializers.PrimaryKeyRelatedField(queryset=ModelProfile.objects.select_related("model", "precision"))
    replicas = serializers.IntegerField(min_value=1, max_value=MAX_REPLICAS_PER_DEMAND)
    priority = serializers.IntegerField(default=0, min_value=-1000, max_value=1000)
    spread = serializers.BooleanField(default=False)
    pin_node = serializers.SlugRelatedField(slug_field="name", queryset=Node.objects.all(), required=False, allow_null=True)
    pin_gpu_index = serializers.IntegerField(required=False, allow_null=True, min_value=0)


class GpuTargetSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    gpu = serializers.PrimaryKeyRelatedField(queryset=GPU.objects.select_related("node"))
    compute_mode = serializers.CharField(max_length=8)


class NodeTargetSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    node = serializers.SlugRelatedField(slug_field="name", queryset=Node.objects.all())
    memory_mode = serializers.CharField(max_length=8)
    compute_mode = serializers.CharField(max_length=8, required=False, allow_blank=True, allow_null=True)


class PlanCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    gpus = GpuTargetSerializer(many=True, required=False, default=list)
    nodes = NodeTargetSerializer(many=True, required=False, default=list)
    # A ListField (not many=True) so that the schema states maxItems.
    demands = serializers.ListField(
        child=DemandSerializer(), required=False, default=list, max_length=MAX_PLAN_DEMANDS,
        help_text=f"At most {MAX_PLAN_DEMANDS} demands and {MAX_PLAN_REPLICAS} replicas in all "
                  f"({MAX_REPLICAS_PER_DEMAND} per demand).",
    )

    def validate(self, attrs: dict) -> dict:
        if not (attrs["gpus"] or attrs["nodes"] or attrs["demands"]):
            raise serializers.ValidationError("give target layouts (gpus, nodes) and/or demands")
        total = sum(d["replicas"] for d in attrs["demands"])
        if total > MAX_PLAN_REPLICAS:
            raise serializers.ValidationError({"demands": [f"at most {MAX_PLAN_REPLICAS} replicas per plan in all, got {total}"]})
        return attrs


class PlanSerializer(serializers.ModelSerializer[Plan]):
    url = serializers.HyperlinkedIdentityField(view_name="plan-detail")
    solver = serializers.SerializerMethodField(
        help_text="Which placement solver answered: exact (CP-SAT, see result.solver.optimal) or heuristic "
                  "(its fallback; result.solver.note says why); null for plans made before it was recorded.")

    class Meta:
        model = Plan
        fields = ("id", "url", "state", "request", "result", "solver", "fingerprint", "created_at", "applied_at")
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=["exact", "heuristic"], allow_null=True))
    def get_solver(self, plan: Plan) -> str | None:
        solver = (plan.result or {}).get("solver")
        return solver.get("name") if isinstance(solver, dict) else None

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from aimconsole.api import RejectUnknownFieldsMixin
from models.models import ModelProfile
from partitions.models import GPU, Node
from planning import planner
from planning.models import Plan
from planning.services import MAX_PLAN_DEMANDS, MAX_PLAN_REPLICAS, MAX_REPLICAS_PER_DEMAND, DemandSpec

SPREAD_MODES = ("none", "soft", "hard")


@extend_schema_field({"oneOf": [{"type": "string", "enum": list(SPREAD_MODES)}, {"type": "boolean"}]})
class SpreadField(serializers.Field):
    """How replicas spread over GPUs: "none"; "soft" (different GPUs, and nodes, while there are
    some, then sharing GPUs rather than staying unplaced); "hard" (one replica per GPU: a replica
    with no GPU of its own left is not placed). ``true``/``false`` are kept for compatibility
    (``true`` = "hard"). Read back as the mode."""

    default_error_messages = {"invalid": f"must be one of {', '.join(SPREAD_MODES)} (or true = hard, false = none)"}

    def to_internal_value(self, data: Any) -> str:
        if data is True or data is False:
            return "hard" if data else "none"
        if isinstance(data, str):
            value = data.strip().lower()
            if value in SPREAD_MODES:
                return value
            if value in ("true", "1", "on"):
                return "hard"
            if value in ("false", "0", "off", ""):
                return "none"
        self.fail("invalid")

    def to_representation(self, value: Any) -> str:
        return value if value in SPREAD_MODES else ("hard" if value else "none")


class DemandSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """One deployment asked for: a catalog profile with N replicas, optionally pinned or spread."""

    name = serializers.SlugField(max_length=63)
    profile = serializers.PrimaryKeyRelatedField(queryset=ModelProfile.objects.select_related("model", "precision"))
    replicas = serializers.IntegerField(min_value=1, max_value=MAX_REPLICAS_PER_DEMAND)
    priority = serializers.IntegerField(default=0, min_value=-1000, max_value=1000)
    spread = SpreadField(default="none", help_text=SpreadField.__doc__)
    pin_node = serializers.SlugRelatedField(slug_field="name", queryset=Node.objects.all(), required=False, allow_null=True)
    pin_gpu_index = serializers.IntegerField(required=False, allow_null=True, min_value=0)

    def validate(self, attrs: dict) -> dict:
        # DemandSpec's form: ``spread`` (bool, hard) for what stores a boolean, ``spread_mode`` the choice.
        mode = attrs.pop("spread", "none")
        attrs["spread"] = mode == "hard"
        attrs["spread_mode"] = mode
        return attrs


class GpuTargetSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """One GPU's target compute mode; the GPU by id (``gpu``) or by ``node`` and ``gpu_index``."""

    gpu = serializers.PrimaryKeyRelatedField(queryset=GPU.objects.select_related("node"), required=False)
    node = serializers.SlugRelatedField(slug_field="name", queryset=Node.objects.all(), required=False)
    gpu_index = serializers.IntegerField(required=False, min_value=0, max_value=1023)
    compute_mode = serializers.CharField(max_length=8)

    def validate(self, attrs: dict) -> dict:
        if "gpu" in attrs:
            if "node" in attrs or "gpu_index" in attrs:
                raise serializers.ValidationError({"gpu": ["give gpu, or node and gpu_index, not both"]})
            return attrs
        if "node" not in attrs or "gpu_index" not in attrs:
            raise serializers.ValidationError({"gpu": ["give gpu (its id), or node and gpu_index"]})
        node, index = attrs.pop("node"), attrs.pop("gpu_index")
        gpu = GPU.objects.select_related("node").filter(node=node, index=index).first()
        if gpu is None:
            indices = sorted(node.gpus.values_list("index", flat=True))
            raise serializers.ValidationError({"gpu_index": [f"{node.name} has no GPU {index}; GPUs: {indices}"]})
        attrs["gpu"] = gpu
        return attrs


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


def plan_inputs(data: dict) -> dict[str, Any]:
    """``create_plan``'s keyword arguments from PlanCreateSerializer's validated data (the API,
    the compose page and re-plan: one path)."""
    return {
        "gpu_targets": [planner.GpuTarget(t["gpu"].node.name, t["gpu"].index, t["compute_mode"].upper()) for t in data["gpus"]],
        "node_targets": [planner.NodeTarget(t["node"].name, t["memory_mode"].upper(), (t.get("compute_mode") or "").upper() or None)
                         for t in data["nodes"]],
        "demands": [DemandSpec(**d) for d in data["demands"]],
    }


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

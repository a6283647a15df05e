from __future__ import annotations

from rest_framework import serializers

from models.models import ModelProfile
from partitions.models import GPU, Deployment, DeploymentSlot, Node, Partition, Plan, Reconfiguration, ReconfigurationStep


class PartitionSerializer(serializers.ModelSerializer[Partition]):
    node = serializers.CharField(source="gpu.node.name", read_only=True)
    gpu_index = serializers.IntegerField(source="gpu.index", read_only=True)

    class Meta:
        model = Partition
        fields = (
            "id", "node", "gpu", "gpu_index", "index", "logical_index", "xcds", "compute_units",
            "memory_gb", "reported_memory_mb", "render_node", "uuid", "bdf",
        )
        read_only_fields = fields


class GPUPartitionSerializer(serializers.ModelSerializer[Partition]):
    class Meta:
        model = Partition
        fields = ("id", "index", "logical_index", "xcds", "compute_units", "memory_gb", "render_node")
        read_only_fields = fields


class GPUSerializer(serializers.ModelSerializer[GPU]):
    node = serializers.CharField(source="node.name", read_only=True)
    emulated = serializers.BooleanField(source="node.emulated", read_only=True)
    partition_count = serializers.SerializerMethodField()
    partitions = GPUPartitionSerializer(many=True, read_only=True)

    class Meta:
        model = GPU
        fields = (
            "id", "node", "emulated", "index", "gpu_model", "market_name", "bdf", "uuid", "gfx_target",
            "compute_mode", "memory_mode", "memory_caps", "accelerator_profiles", "compute_units",
            "vram_mb", "health", "health_reason", "schedulable", "partition_count", "partitions",
        )
        read_only_fields = fields

    def get_partition_count(self, gpu: GPU) -> int:
        return len(gpu.partitions.all())  # prefetched


class NodeSerializer(serializers.ModelSerializer[Node]):
    agent_alive = serializers.BooleanField(read_only=True)
    schedulable = serializers.BooleanField(read_only=True)
    gpu_count = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = (
            "id", "name", "backend", "emulated", "amd_smi_version", "rocm_version", "memory_mode",
            "agent_heartbeat_at", "agent_alive", "last_synced_at", "sync_error", "layout_problem",
            "schedulable", "gpu_count",
        )
        read_only_fields = fields

    def get_gpu_count(self, node: Node) -> int:
        return len(node.gpus.all())  # prefetched


class ImportAmdSmiSerializer(serializers.Serializer):
    outputs = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False, allow_blank=False, max_length=20_000_000),
        allow_empty=False, max_length=10,
        help_text="Raw outputs of amd-smi list, static, partition, metric and/or version (any order).",
    )
    dry_run = serializers.BooleanField(default=False)


class ReconfigurationStepSerializer(serializers.ModelSerializer[ReconfigurationStep]):
    class Meta:
        model = ReconfigurationStep
        fields = ("seq", "state", "action", "message", "output", "ok", "created_at")
        read_only_fields = fields


class ReconfigurationSerializer(serializers.ModelSerializer[Reconfiguration]):
    node = serializers.CharField(source="node.name", read_only=True)
    target = serializers.CharField(source="describe_target", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True, default=None)
    steps = ReconfigurationStepSerializer(many=True, read_only=True)
    duration_s = serializers.FloatField(read_only=True, allow_null=True)
    url = serializers.HyperlinkedIdentityField(view_name="reconfiguration-detail")
    websocket = serializers.SerializerMethodField(help_text="Path of the live-progress WebSocket")

    class Meta:
        model = Reconfiguration
        fields = (
            "id", "url", "websocket", "kind", "state", "node", "gpu", "gpu_index", "target",
            "target_compute_mode", "target_memory_mode", "previous_layout", "drain", "reason",
            "requested_by", "attempts", "error_code", "error_message", "created_at", "started_at",
            "finished_at", "duration_s", "steps",
        )
        read_only_fields = fields

    def get_websocket(self, op: Reconfiguration) -> str:
        return f"/ws/operations/{op.pk}/"


class GpuReconfigureSerializer(serializers.Serializer):
    compute_mode = serializers.CharField(max_length=8)
    memory_mode = serializers.CharField(max_length=8, required=False, allow_blank=True,
                                        help_text="Must equal the node's current memory mode (NPS is node-wide)")
    drain = serializers.BooleanField(default=False)
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class NodeReconfigureSerializer(serializers.Serializer):
    memory_mode = serializers.CharField(max_length=8)
    compute_mode = serializers.CharField(max_length=8, required=False, allow_blank=True,
                                         help_text="Compute mode for every GPU afterwards (default: keep each GPU's)")
    drain = serializers.BooleanField(default=False)
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class DeploymentSlotSerializer(serializers.ModelSerializer[DeploymentSlot]):
    node = serializers.CharField(source="partition.gpu.node.name", read_only=True)
    gpu_index = serializers.IntegerField(source="partition.gpu.index", read_only=True)
    partition_index = serializers.IntegerField(source="partition.index", read_only=True)
    logical_index = serializers.IntegerField(source="partition.logical_index", read_only=True)
    render_node = serializers.CharField(source="partition.render_node", read_only=True)
    memory_gb = serializers.FloatField(source="partition.memory_gb", read_only=True)

    class Meta:
        model = DeploymentSlot
        fields = ("replica", "node", "gpu_index", "partition_index", "logical_index", "render_node", "memory_gb", "started_at")
        read_only_fields = fields


class DeploymentSerializer(serializers.ModelSerializer[Deployment]):
    model = serializers.CharField(source="profile.model.hf_id", read_only=True)
    precision = serializers.CharField(source="profile.precision.code", read_only=True)
    gpu_model = serializers.CharField(source="profile.gpu_model", read_only=True)
    memory_required_gb = serializers.FloatField(source="profile.memory_required_gb", read_only=True)
    slots = DeploymentSlotSerializer(many=True, read_only=True)
    workloads = serializers.SerializerMethodField(help_text="Per replica: env, devices, vLLM args, container fragment")
    pin_node = serializers.CharField(source="pin_node.name", read_only=True, default=None)

    class Meta:
        model = Deployment
        fields = (
            "id", "name", "state", "state_message", "profile", "model", "precision", "gpu_model", "memory_required_gb",
            "replicas", "priority", "spread", "pin_node", "pin_gpu_index", "plan", "planned_slots", "slots", "workloads",
            "created_at", "updated_at",
        )
        read_only_fields = fields

    def get_workloads(self, deployment: Deployment) -> list[dict]:
        from partitions.isolation import DeviceBinding, IsolationError, workload_spec

        profile = deployment.profile
        need = profile.per_gpu_gb if profile.gpus_needed > 1 else profile.memory_required_gb
        by_replica: dict[int, list[DeploymentSlot]] = {}
        for slot in deployment.slots.all():
            by_replica.setdefault(slot.replica, []).append(slot)
        out = []
        for replica, slots in sorted(by_replica.items()):
            bindings = [
                DeviceBinding(node=s.partition.gpu.node.name, gpu_index=s.partition.gpu.index, partition_index=s.partition.index,
                              logical_index=s.partition.logical_index, render_node=s.partition.render_node or None,
                              memory_gb=s.partition.memory_gb or 0.0)
                for s in slots
            ]
            try:
                spec = workload_spec(bindings=bindings, model_id=profile.model.hf_id, memory_required_gb=need,
                                     max_model_len=min(profile.context_tokens, profile.model.context_length),
                                     served_model_name=deployment.name)
            except IsolationError as exc:
                out.append({"replica": replica, "error": str(exc)})
                continue
            out.append({"replica": replica, "env": spec.env, "alternative_env": spec.alternative_env,
                        "devices": list(spec.devices), "args": list(spec.args), "container": spec.container, "notes": list(spec.notes)})
        return out


class DeploymentCreateSerializer(serializers.Serializer):
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
    demands = DeploymentCreateSerializer(many=True, required=False, default=list)

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

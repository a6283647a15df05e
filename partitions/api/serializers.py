from __future__ import annotations

from rest_framework import serializers

from aimconsole.api import RejectUnknownFieldsMixin
from partitions.models import COMPUTE_CHOICES, GPU, MEMORY_CHOICES, Node, Partition, Reconfiguration, ReconfigurationStep


def _mode_field(choices: list[tuple[str, str]], help_text: str) -> serializers.ChoiceField:
    """A mode as the hardware reported it: empty ("") when the backend reported none."""
    return serializers.ChoiceField(choices=choices, allow_blank=True, read_only=True, help_text=help_text)


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
    compute_mode = _mode_field(COMPUTE_CHOICES, "Current compute mode; empty when the backend reported none.")
    memory_mode = _mode_field(MEMORY_CHOICES, "Current memory (NPS) mode; empty when the backend reported none.")
    pending_memory_mode = _mode_field(MEMORY_CHOICES, "NPS mode armed in the hardware, active after the next driver reload; "
                                                      "empty when none is (or the backend does not report it).")
    emulated = serializers.BooleanField(source="node.emulated", read_only=True)
    partition_count = serializers.SerializerMethodField()
    partitions = GPUPartitionSerializer(many=True, read_only=True)

    class Meta:
        model = GPU
        fields = (
            "id", "node", "emulated", "index", "gpu_model", "market_name", "bdf", "uuid", "gfx_target",
            "compute_mode", "memory_mode", "memory_caps", "accelerator_profiles", "compute_units",
            "vram_mb", "health", "health_reason", "schedulable", "pending_memory_mode", "health_check_requested_at",
            "partition_count", "partitions",
        )
        read_only_fields = fields

    def get_partition_count(self, gpu: GPU) -> int:
        return len(gpu.partitions.all())  # prefetched


class NodeSerializer(serializers.ModelSerializer[Node]):
    agent_alive = serializers.BooleanField(read_only=True)
    memory_mode = _mode_field(MEMORY_CHOICES, "Node-level NPS mode; empty when its GPUs disagree or none was reported.")
    schedulable = serializers.BooleanField(read_only=True)
    gpu_count = serializers.SerializerMethodField()
    runtime = _mode_field(Node.ServingRuntime.choices, "Its runtime setting; empty: the backend's default (serving_runtime).")
    serving_runtime = serializers.CharField(read_only=True, help_text="The runtime its replicas run on: its runtime setting, "
                                            "or the backend's default (blank: the console runs none there).")

    class Meta:
        model = Node
        fields = (
            "id", "name", "backend", "emulated", "amd_smi_version", "rocm_version", "memory_mode",
            "agent_heartbeat_at", "agent_alive", "agent_lease_holder", "agent_lease_expires_at", "last_synced_at",
            "sync_error", "layout_problem", "schedulable", "reconciled_at", "reconcile_changes", "gpu_count",
            "runtime", "serving_runtime",
        )
        read_only_fields = fields

    def get_gpu_count(self, node: Node) -> int:
        return len(node.gpus.all())  # prefetched


class ImportAmdSmiSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    outputs = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False, allow_blank=False, max_length=20_000_000),
        allow_empty=False, max_length=10,
        help_text="Raw outputs of amd-smi list, static, partition, metric and/or version (any order).",
    )
    dry_run = serializers.BooleanField(default=False)
    force = serializers.BooleanField(
        default=False,
        help_text="Import even onto a node with a live agent or over GPUs/partitions in use (audited); "
                  "without it such an import answers 409 naming what it would remove.")


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
    target_compute_mode = _mode_field(COMPUTE_CHOICES, "Compute mode asked for; empty for an NPS change that keeps each GPU's.")
    target_memory_mode = _mode_field(MEMORY_CHOICES, "NPS mode asked for; empty for a compute change.")

    class Meta:
        model = Reconfiguration
        fields = (
            "id", "url", "websocket", "kind", "state", "node", "gpu", "gpu_index", "target",
            "target_compute_mode", "target_memory_mode", "previous_layout", "drain", "reason",
            "requested_by", "attempts", "error_code", "error_message", "created_at", "enqueued_at", "started_at",
            "apply_deadline_at", "finished_at", "duration_s", "steps",
        )
        read_only_fields = fields

    def get_websocket(self, op: Reconfiguration) -> str:
        return f"/ws/operations/{op.pk}/"


class GpuReconfigureSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    compute_mode = serializers.CharField(max_length=8)
    memory_mode = serializers.CharField(max_length=8, required=False, allow_blank=True,
                                        help_text="Must equal the node's current memory mode (NPS is node-wide)")
    drain = serializers.BooleanField(default=False)
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class NodeReconfigureSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    memory_mode = serializers.CharField(max_length=8)
    compute_mode = serializers.CharField(max_length=8, required=False, allow_blank=True,
                                         help_text="Compute mode for every GPU afterwards (default: keep each GPU's)")
    drain = serializers.BooleanField(default=False)
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class NodeComputeChangesSerializer(serializers.Serializer):
    """A node request in the memory mode the node already runs: one compute-mode change per GPU
    not yet in the requested compute mode (none when every GPU is), no NPS change, no reload."""

    message = serializers.CharField()
    reconfigurations = ReconfigurationSerializer(many=True)

from __future__ import annotations

from rest_framework import serializers

from partitions.models import GPU, Node, Partition


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


class GPUSerializer(serializers.ModelSerializer[GPU]):
    node = serializers.CharField(source="node.name", read_only=True)
    emulated = serializers.BooleanField(source="node.emulated", read_only=True)
    partition_count = serializers.SerializerMethodField()

    class Meta:
        model = GPU
        fields = (
            "id", "node", "emulated", "index", "gpu_model", "market_name", "bdf", "uuid", "gfx_target",
            "compute_mode", "memory_mode", "memory_caps", "accelerator_profiles", "compute_units",
            "vram_mb", "health", "health_reason", "schedulable", "partition_count",
        )
        read_only_fields = fields

    def get_partition_count(self, gpu: GPU) -> int:
        return len(gpu.partitions.all())  # prefetched


class NodeSerializer(serializers.ModelSerializer[Node]):
    agent_alive = serializers.BooleanField(read_only=True)
    gpu_count = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = (
            "id", "name", "backend", "emulated", "amd_smi_version", "rocm_version", "memory_mode",
            "agent_heartbeat_at", "agent_alive", "last_synced_at", "sync_error", "gpu_count",
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

from __future__ import annotations

import shlex

from rest_framework import serializers

from partitions.models import Node
from planning.api.serializers import DemandSerializer
from serving.models import Deployment, DeploymentSlot, Replica, ReplicaMove


class DeploymentSlotSerializer(serializers.ModelSerializer[DeploymentSlot]):
    node = serializers.CharField(source="partition.gpu.node.name", read_only=True)
    gpu_index = serializers.IntegerField(source="partition.gpu.index", read_only=True)
    partition_index = serializers.IntegerField(source="partition.index", read_only=True)
    logical_index = serializers.IntegerField(source="partition.logical_index", read_only=True)
    render_node = serializers.CharField(source="partition.render_node", read_only=True)
    memory_gb = serializers.FloatField(source="partition.memory_gb", read_only=True)

    class Meta:
        model = DeploymentSlot
        fields = ("replica", "state", "node", "gpu_index", "partition_index", "logical_index", "render_node", "memory_gb",
                  "started_at")
        read_only_fields = fields


class ReplicaMoveSerializer(serializers.ModelSerializer[ReplicaMove]):
    """A replica moving because a plan repartitions its GPU: ``make_before_break`` (the new
    copy starts first) or ``stop_then_start``; ``source`` and ``target`` list its partitions."""

    class Meta:
        model = ReplicaMove
        fields = ("id", "replica", "plan", "strategy", "state", "source", "target", "message", "created_at", "started_at",
                  "finished_at")
        read_only_fields = fields


class ReplicaSerializer(serializers.ModelSerializer[Replica]):
    """One running copy of a replica as its node's runtime reports it: ``state`` (starting,
    ready, restarting, failed, stopped), ``endpoint`` (its server's base URL; blank for the
    emulated runtime, which has none), restarts, and on failure ``reason`` and ``log_tail``.
    ``emulated``: the copy runs on an emulated node (the engine emulator, or no process)."""

    node = serializers.CharField(source="node.name", read_only=True)
    emulated = serializers.BooleanField(source="node.emulated", read_only=True)

    class Meta:
        model = Replica
        fields = ("key", "replica", "node", "emulated", "runtime", "state", "endpoint", "served_model", "pid", "port",
                  "restarts", "reason", "log_tail", "partitions", "started_at", "ready_at", "updated_at")
        read_only_fields = fields


class DeploymentSerializer(serializers.ModelSerializer[Deployment]):
    model = serializers.CharField(source="profile.model.hf_id", read_only=True)
    precision = serializers.CharField(source="profile.precision.code", read_only=True)
    gpu_model = serializers.CharField(source="profile.gpu_model", read_only=True)
    memory_required_gb = serializers.FloatField(source="profile.memory_required_gb", read_only=True)
    slots = DeploymentSlotSerializer(many=True, read_only=True)
    moves = ReplicaMoveSerializer(many=True, read_only=True)
    runtime = serializers.ChoiceField(choices=Node.ServingRuntime.choices, allow_blank=True, read_only=True,
                                      help_text="The runtime its replicas run on (empty until a node's agent started one).")
    copies = ReplicaSerializer(many=True, read_only=True, help_text="The replicas' running copies, as their nodes' runtimes report them.")
    workloads = serializers.SerializerMethodField(help_text="Per replica: env, devices, vLLM args, container fragment")
    pin_node = serializers.CharField(source="pin_node.name", read_only=True, default=None)

    class Meta:
        model = Deployment
        fields = (
            "id", "name", "state", "state_message", "profile", "model", "precision", "gpu_model", "memory_required_gb",
            "replicas", "priority", "spread", "pin_node", "pin_gpu_index", "plan", "planned_slots", "slots", "moves", "copies", "runtime", "workloads",
            "created_at", "updated_at",
        )
        read_only_fields = fields

    def get_workloads(self, deployment: Deployment) -> list[dict]:
        from serving.isolation import DeviceBinding, IsolationError, workload_spec

        profile = deployment.profile
        need = profile.replica_memory_gb
        by_replica: dict[int, list[DeploymentSlot]] = {}
        for slot in deployment.slots.all():
            if slot.state == DeploymentSlot.State.RETIRING:
                continue  # the old copy of a moving replica: the spec is the new copy's
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
            command = shlex.join(("vllm", "serve", *spec.args))
            out.append({"replica": replica, "command": command, "env": spec.env, "alternative_env": spec.alternative_env,
                        "devices": list(spec.devices), "args": list(spec.args), "container": spec.container, "notes": list(spec.notes)})
        return out


class DeploymentCreateSerializer(DemandSerializer):
    """A deployment to place on the current layout (the same fields as a plan's demand)."""

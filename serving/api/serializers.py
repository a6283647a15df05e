from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from models.models import MAX_CONCURRENT_SEQUENCES, ModelProfile
from partitions.models import Node
from planning.api.serializers import DemandSerializer
from planning.services import DemandSpec
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
    context_tokens = serializers.IntegerField(source="profile.context_tokens", read_only=True)
    concurrent_sequences = serializers.IntegerField(source="profile.concurrent_sequences", read_only=True)
    emulated = serializers.SerializerMethodField(help_text="Whether a replica holds partitions of an emulated node "
                                                           "(the amd-smi emulator or a simulated fleet): not real hardware.")
    sizing_snapshot = serializers.JSONField(read_only=True, help_text=(
        "The profile's sizing when the deployment was placed (memory_required_gb, replica_memory_gb, gpus_needed, "
        "total_params_b, context_tokens, concurrent_sequences, precision, ...). When the catalog's sizing changes "
        "so that its partitions no longer hold a replica, the deployment is degraded and state_message says so."))

    class Meta:
        model = Deployment
        fields = (
            "id", "name", "state", "state_message", "profile", "model", "precision", "gpu_model", "memory_required_gb",
            "context_tokens", "concurrent_sequences", "sizing_snapshot", "emulated",
            "replicas", "priority", "spread", "pin_node", "pin_gpu_index", "plan", "planned_slots", "slots", "moves", "copies", "runtime", "workloads",
            "created_at", "updated_at",
        )
        read_only_fields = fields

    def get_emulated(self, deployment: Deployment) -> bool:
        return any(s.partition.gpu.node.emulated for s in deployment.slots.all())

    def get_workloads(self, deployment: Deployment) -> list[dict]:
        profile = deployment.profile
        slots = [
            SlotView(replica=s.replica, state=s.state, node=s.partition.gpu.node.name, emulated=s.partition.gpu.node.emulated,
                     gpu_id=s.partition.gpu_id, gpu_index=s.partition.gpu.index, partition_index=s.partition.index,
                     logical_index=s.partition.logical_index, render_node=s.partition.render_node, memory_gb=s.partition.memory_gb)
            for s in deployment.slots.all()
        ]
        return workloads(name=deployment.name, model_id=profile.model.hf_id, memory_gb=profile.replica_memory_gb,
                         max_model_len=min(profile.context_tokens, profile.model.context_length),
                         max_num_seqs=max_num_seqs(profile), slots=slots)


@dataclass(frozen=True)
class SlotView:
    """What a deployment's workloads are computed from, per slot (from rows or from values())."""

    replica: int
    state: str
    node: str
    emulated: bool
    gpu_id: int
    gpu_index: int
    partition_index: int
    logical_index: int
    render_node: str
    memory_gb: float | None


def workloads(*, name: str, model_id: str, memory_gb: float, max_model_len: int, max_num_seqs: int | None,
              slots: Sequence[SlotView]) -> list[dict[str, Any]]:
    """Per replica: env, devices, vLLM args and container fragment (``workloads`` in the
    deployment's JSON; the serializer and the list's read path both call this)."""
    from serving.isolation import DeviceBinding, IsolationError, workload_spec

    by_replica: dict[int, list[SlotView]] = {}
    for slot in slots:
        if slot.state == DeploymentSlot.State.RETIRING:
            continue  # the old copy of a moving replica: the spec is the new copy's
        by_replica.setdefault(slot.replica, []).append(slot)
    out: list[dict[str, Any]] = []
    for replica, group in sorted(by_replica.items()):
        bindings = [
            DeviceBinding(node=s.node, gpu_index=s.gpu_index, partition_index=s.partition_index,
                          logical_index=s.logical_index, render_node=s.render_node or None, memory_gb=s.memory_gb or 0.0)
            for s in group
        ]
        try:
            spec = workload_spec(bindings=bindings, model_id=model_id, memory_required_gb=memory_gb,
                                 max_model_len=max_model_len, max_num_seqs=max_num_seqs, served_model_name=name)
        except IsolationError as exc:
            out.append({"replica": replica, "error": str(exc)})
            continue
        command = shlex.join(("vllm", "serve", *spec.args))
        first = group[0]
        out.append({"replica": replica, "node": first.node, "emulated": first.emulated,
                    "partitions": [{"node": s.node, "gpu_index": s.gpu_index, "gpu_id": s.gpu_id, "partition_index": s.partition_index,
                                    "logical_index": s.logical_index, "memory_gb": s.memory_gb} for s in group],
                    "command": command, "env": spec.env, "alternative_env": spec.alternative_env,
                    "devices": list(spec.devices), "args": list(spec.args), "container": spec.container, "notes": list(spec.notes)})
    return out


def max_num_seqs(profile: ModelProfile) -> int | None:
    """``--max-num-seqs`` for a profile sized for several concurrent sequences (its KV cache
    holds that many full-length ones); None for a one-sequence profile, whose KV cache shorter
    sequences share up to the engine's own batch limit."""
    return max_num_seqs_for(profile.concurrent_sequences)


def max_num_seqs_for(concurrent_sequences: int) -> int | None:
    """``max_num_seqs`` from the profile's concurrent sequences alone."""
    return concurrent_sequences if concurrent_sequences > 1 else None


class DeploymentCreateSerializer(DemandSerializer):
    """A deployment to place on the current layout (the same fields as a plan's demand), and
    optionally a context length and a concurrency other than the profile's: the replicas are
    then sized (and their serving arguments set) for ``context_tokens`` tokens x
    ``concurrent_sequences`` sequences, through the catalog's profile of those inputs."""

    context_tokens = serializers.IntegerField(
        required=False, allow_null=True, min_value=1,
        help_text="Tokens per sequence to size the KV cache for (--max-model-len); at most the model's maximum "
                  "context. Default: the profile's.")
    concurrent_sequences = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_CONCURRENT_SEQUENCES,
        help_text="Sequences served at once at that context (--max-num-seqs). Default: the profile's.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        from models import services

        attrs = super().validate(attrs)
        profile: ModelProfile = attrs["profile"]
        context, sequences = attrs.get("context_tokens"), attrs.get("concurrent_sequences")
        if context is not None and context > profile.model.context_length:
            raise serializers.ValidationError({"context_tokens": [
                f"at most {profile.model.context_length} tokens, {profile.model.hf_id}'s maximum context"]})
        if context is None and sequences is None:
            return attrs
        candidate = ModelProfile(model=profile.model, precision=profile.precision, gpu_model=profile.gpu_model,
                                 context_tokens=context or profile.context_tokens,
                                 concurrent_sequences=sequences or profile.concurrent_sequences)
        try:
            services.compute_profile(candidate, save=False)  # sized in memory: nothing is written while validating
        except DjangoValidationError as exc:
            field = "context_tokens" if context is not None else "concurrent_sequences"
            raise serializers.ValidationError({field: [" ".join(exc.messages)]}) from exc
        return attrs

    def spec(self) -> DemandSpec:
        """The validated demand, on the catalog's profile at the asked context and concurrency
        (created and sized if it has none yet)."""
        from models import services

        data = dict(self.validated_data)
        context, sequences = data.pop("context_tokens", None), data.pop("concurrent_sequences", None)
        if context is not None or sequences is not None:
            data["profile"] = services.custom_profile(base=data["profile"], context_tokens=context,
                                                      concurrent_sequences=sequences)
        return DemandSpec(**data)

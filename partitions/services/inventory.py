"""State changes of the inventory. Views, tasks, the API and commands call these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from partitions.backends.types import GpuInfo, NodeInventory, PartitionInfo
from partitions.geometry import GeometryError, get_spec
from partitions.models import GPU, Node, Partition, node_name_validator


@dataclass
class SyncResult:
    """Rows created / updated / deleted / left untouched by one sync."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def _gpu_values(info: GpuInfo) -> dict[str, Any]:
    return {
        "gpu_model": info.gpu_model or "",
        "market_name": info.market_name or "",
        "bdf": info.bdf or "",
        "uuid": info.uuid or "",
        "gfx_target": info.gfx_target or "",
        "compute_mode": info.compute_mode or "",
        "memory_mode": info.memory_mode or "",
        "memory_caps": list(info.memory_caps),
        "accelerator_profiles": [
            {
                "profile_index": p.profile_index,
                "accelerator_type": p.accelerator_type,
                "memory_caps": list(p.memory_caps),
                "num_partitions": p.num_partitions,
                "active": p.active,
            }
            for p in info.profiles
        ],
        "compute_units": info.compute_units,
        "vram_mb": info.vram_mb,
    }


def _partition_values(gpu: GpuInfo, part: PartitionInfo) -> dict[str, Any]:
    """Nominal geometry where the GPU model and modes are known; otherwise what was reported."""
    xcds: int | None = None
    memory_gb = None if part.memory_mb is None else round(part.memory_mb / 1024, 2)
    if gpu.gpu_model and gpu.compute_mode and gpu.memory_mode:
        try:
            layout = get_spec(gpu.gpu_model).layout(gpu.compute_mode, gpu.memory_mode, caps=_caps(gpu))
        except GeometryError:
            layout = None
        if layout is not None:
            xcds, memory_gb = layout.xcds, layout.memory_gb
    return {
        "logical_index": part.logical_index,
        "xcds": xcds,
        "compute_units": part.compute_units,
        "memory_gb": memory_gb,
        "reported_memory_mb": part.memory_mb,
        "render_node": part.render_node or "",
        "uuid": part.uuid or "",
        "bdf": part.bdf or "",
    }


def _caps(gpu: GpuInfo) -> dict[str, list[str]] | None:
    """memory_partition_caps per compute mode, when the backend read the profiles."""
    if not gpu.profiles:
        return None
    return {p.accelerator_type: list(p.memory_caps) for p in gpu.profiles}


def _apply(row: Model, values: dict[str, Any], result: SyncResult) -> None:
    """Save ``row`` only if a value differs (unchanged rows are not written at all)."""
    changed = [name for name, value in values.items() if getattr(row, name) != value]
    if not changed:
        result.unchanged += 1
        return
    for name in changed:
        setattr(row, name, values[name])
    row.save(update_fields=changed)
    result.updated += 1


def layout_problem(inventory: NodeInventory) -> str:
    """Why the reported layout is not one the node can run ("" when it is valid).

    NPS is node-wide: GPUs in different memory modes (a partial NPS change) or a GPU in a pair
    its model cannot run make the node unschedulable until a sync finds it valid again."""
    by_memory: dict[str, list[int]] = {}
    for gpu in inventory.gpus:
        by_memory.setdefault(gpu.memory_mode or "unknown", []).append(gpu.index)
    if len(by_memory) > 1:
        parts = "; ".join(f"GPUs {indices} in {mode}" for mode, indices in sorted(by_memory.items()))
        return f"memory modes differ across the node ({parts})"
    invalid = []
    for gpu in inventory.gpus:
        if gpu.gpu_model and gpu.compute_mode and gpu.memory_mode:
            try:
                get_spec(gpu.gpu_model).layout(gpu.compute_mode, gpu.memory_mode, caps=_caps(gpu))
            except GeometryError:
                invalid.append(f"GPU {gpu.index} {gpu.compute_mode}+{gpu.memory_mode}")
    if invalid:
        return f"invalid modes: {', '.join(invalid)}"
    return ""


@transaction.atomic
def sync_inventory(*, node: Node, inventory: NodeInventory) -> SyncResult:
    """Reconcile ``node``'s GPUs and partitions with what a backend reports.

    Idempotent: a second sync with the same inventory writes no GPU or partition row.
    GPUs and partitions the backend no longer reports are deleted. Health and
    schedulability are not hardware facts and are left as they are.
    """
    node = Node.objects.select_for_update().get(pk=node.pk)
    result = SyncResult()
    existing_gpus = {gpu.index: gpu for gpu in node.gpus.prefetch_related("partitions")}
    seen_gpus = set()
    for info in inventory.gpus:
        seen_gpus.add(info.index)
        values = _gpu_values(info)
        gpu = existing_gpus.get(info.index)
        if gpu is None:
            gpu = GPU.objects.create(node=node, index=info.index, **values)
            result.created += 1
            existing_parts: dict[int, Partition] = {}
        else:
            _apply(gpu, values, result)
            existing_parts = {p.index: p for p in gpu.partitions.all()}
        seen_parts = set()
        for part in info.partitions:
            seen_parts.add(part.partition_id)
            part_values = _partition_values(info, part)
            row = existing_parts.get(part.partition_id)
            if row is None:
                Partition.objects.create(gpu=gpu, index=part.partition_id, **part_values)
                result.created += 1
            else:
                _apply(row, part_values, result)
        stale = [p.pk for index, p in existing_parts.items() if index not in seen_parts]
        if stale:
            result.deleted += Partition.objects.filter(pk__in=stale).delete()[1].get("partitions.Partition", 0)
        if not info.gpu_model:
            result.warnings.append(f"gpu{info.index}: unrecognised GPU model {info.market_name!r}")
    gone = [gpu.pk for index, gpu in existing_gpus.items() if index not in seen_gpus]
    if gone:
        result.deleted += GPU.objects.filter(pk__in=gone).delete()[1].get("partitions.GPU", 0)

    problem = layout_problem(inventory)
    if problem:
        result.warnings.append(problem)
    memory_modes = {g.memory_mode for g in inventory.gpus if g.memory_mode}
    node_values: dict[str, Any] = {
        "memory_mode": memory_modes.pop() if len(memory_modes) == 1 else "",
        "last_synced_at": timezone.now(),
        "sync_error": "",
        "layout_problem": problem,
    }
    if inventory.version is not None:
        node_values["amd_smi_version"] = inventory.version.tool
        node_values["rocm_version"] = inventory.version.rocm or ""
    for name, value in node_values.items():
        setattr(node, name, value)
    node.save(update_fields=list(node_values))
    return result


def record_sync_error(*, node: Node, message: str) -> None:
    """Keep the inventory as it was and make the failure visible on the node."""
    Node.objects.filter(pk=node.pk).update(sync_error=message[:4000])


@dataclass(frozen=True)
class ImportResult:
    node: str
    inventory: NodeInventory
    dry_run: bool
    sync: SyncResult | None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"node": self.node, "dry_run": self.dry_run, **self.inventory.to_json()}
        if self.sync is not None:
            body["changes"] = {
                "created": self.sync.created,
                "updated": self.sync.updated,
                "deleted": self.sync.deleted,
                "unchanged": self.sync.unchanged,
            }
            body["warnings"] = self.sync.warnings
        return body


def import_amdsmi_outputs(*, node_name: str, files: list[tuple[str, str]], dry_run: bool = False) -> ImportResult:
    """Parse captured amd-smi outputs and (unless ``dry_run``) store them as ``node_name``'s
    inventory, creating the node (backend "imported") if it does not exist.

    All or nothing: any ParseError leaves the database untouched.
    """
    from partitions.importing import parse_captures

    node_name_validator(node_name)
    inventory = parse_captures(files)
    if dry_run:
        return ImportResult(node=node_name, inventory=inventory, dry_run=True, sync=None)
    from aimconsole import audit

    with transaction.atomic():
        node, _ = Node.objects.get_or_create(name=node_name, defaults={"backend": Node.Backend.IMPORTED})
        result = sync_inventory(node=node, inventory=inventory)
        audit.record("node.import", obj=node, after={"gpus": len(inventory.gpus), "created": result.created,
                                                     "updated": result.updated, "deleted": result.deleted})
    return ImportResult(node=node_name, inventory=inventory, dry_run=False, sync=result)


def backend_for(node: Node):  # type: ignore[no-untyped-def]
    """The hardware backend that talks to ``node`` (amd-smi, its emulator, or simulated)."""
    from django.conf import settings

    from partitions.backends import get_backend

    options = dict(node.backend_options or {})
    if node.backend in (Node.Backend.AMDSMI, Node.Backend.EMULATOR):
        options.setdefault("timeout", settings.AMD_SMI_TIMEOUT_S)
        options.setdefault("reload_timeout", settings.AMD_SMI_RELOAD_TIMEOUT_S)
    if node.backend == Node.Backend.AMDSMI:
        options.setdefault("binary", settings.AMD_SMI_BIN)
    elif node.backend == Node.Backend.IMPORTED:
        raise ValueError(f"node {node.name} was imported from captured output; it has no live backend")
    return get_backend(node.backend, **options)


def sync_node(*, node: Node) -> SyncResult:
    """Read ``node``'s hardware through its backend and reconcile the inventory.

    A backend failure leaves the inventory as it was and records the error on the node.
    """
    from partitions.backends.errors import BackendError

    try:
        inventory = backend_for(node).inventory()
    except BackendError as exc:
        record_sync_error(node=node, message=f"{exc.code}: {exc}")
        raise
    return sync_inventory(node=node, inventory=inventory)

"""State changes of the inventory. Views, tasks, the API and commands call these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from aimconsole.text import storable
from partitions.backends.types import GpuInfo, NodeInventory, PartitionInfo
from partitions.geometry import GeometryError, Validation, get_spec, reported_caps
from partitions.models import GPU, Node, Partition, node_name_validator

if TYPE_CHECKING:
    from partitions.backends import Backend


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
            layout = get_spec(gpu.gpu_model).layout(gpu.compute_mode, gpu.memory_mode, caps=reported_caps(gpu.profiles))
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


def planned_rows(inventory: NodeInventory) -> list[tuple[GpuInfo, dict[str, Any], list[tuple[PartitionInfo, dict[str, Any]]]]]:
    """The GPU and partition row values a sync of ``inventory`` stores (one code path for the
    sync and for showing an import, dry run or not)."""
    return [(info, _gpu_values(info), [(part, _partition_values(info, part)) for part in info.partitions])
            for info in inventory.gpus]


def inventory_json(inventory: NodeInventory) -> dict[str, Any]:
    """What a sync of ``inventory`` stores, as JSON (unknown text fields are null)."""

    def text(value: Any) -> Any:
        return None if value == "" else value

    return {"gpus": [
        {"index": info.index,
         **{k: text(v) for k, v in values.items() if k != "accelerator_profiles"},
         "partitions": [{"partition_id": part.partition_id, **{k: text(v) for k, v in pvalues.items()}}
                        for part, pvalues in parts]}
        for info, values, parts in planned_rows(inventory)
    ]}


def inventory_warnings(inventory: NodeInventory) -> list[str]:
    """What an operator should know about ``inventory`` before or after storing it."""
    warnings = list(inventory.warnings)
    for gpu in inventory.gpus:
        if not gpu.gpu_model:
            warnings.append(f"gpu{gpu.index}: unrecognised GPU model {gpu.market_name!r}")
        elif gpu.compute_mode and gpu.memory_mode:
            try:
                layout = get_spec(gpu.gpu_model).layout(gpu.compute_mode, gpu.memory_mode, caps=reported_caps(gpu.profiles))
            except GeometryError:
                continue
            if layout.validation is Validation.REPORTED:
                warnings.append(f"gpu{gpu.index}: {layout.compute_mode}+{layout.memory_mode} is not in the geometry "
                                f"table for {gpu.gpu_model}; accepted as reported by hardware (memory_partition_caps)")
    problem = layout_problem(inventory)
    if problem:
        warnings.append(problem)
    return warnings


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
                get_spec(gpu.gpu_model).layout(gpu.compute_mode, gpu.memory_mode, caps=reported_caps(gpu.profiles))
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
    for info, values, parts in planned_rows(inventory):
        seen_gpus.add(info.index)
        gpu = existing_gpus.get(info.index)
        if gpu is None:
            gpu = GPU.objects.create(node=node, index=info.index, **values)
            result.created += 1
            existing_parts: dict[int, Partition] = {}
        else:
            _apply(gpu, values, result)
            existing_parts = {p.index: p for p in gpu.partitions.all()}
        seen_parts = set()
        for part, part_values in parts:
            seen_parts.add(part.partition_id)
            row = existing_parts.get(part.partition_id)
            if row is None:
                Partition.objects.create(gpu=gpu, index=part.partition_id, **part_values)
                result.created += 1
            else:
                _apply(row, part_values, result)
        stale = [p.pk for index, p in existing_parts.items() if index not in seen_parts]
        if stale:
            result.deleted += Partition.objects.filter(pk__in=stale).delete()[1].get("partitions.Partition", 0)
    gone = [gpu.pk for index, gpu in existing_gpus.items() if index not in seen_gpus]
    if gone:
        result.deleted += GPU.objects.filter(pk__in=gone).delete()[1].get("partitions.GPU", 0)

    problem = layout_problem(inventory)
    result.warnings.extend(inventory_warnings(inventory))
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
    node_changed = any(getattr(node, name) != node_values[name] for name in ("memory_mode", "layout_problem", "sync_error"))
    for name, value in node_values.items():
        setattr(node, name, value)
    node.save(update_fields=list(node_values))
    if result.changed or node_changed:
        from partitions import events

        events.publish_fleet_changed(node.name)  # after commit: the fleet page refetches the node's cards
    return result


def record_sync_error(*, node: Node, message: str) -> None:
    """Keep the inventory as it was and make the failure visible on the node."""
    Node.objects.filter(pk=node.pk).update(sync_error=storable(message)[:4000])
    from partitions import events

    events.publish_fleet_changed(node.name)


@dataclass(frozen=True)
class RemovalPlan:
    """What storing an inventory on an existing node would delete, and what runs there."""

    gpus: tuple[int, ...] = ()
    partitions: tuple[dict[str, Any], ...] = ()
    """{"gpu_index", "partition", "occupant" (name or None), "state"} per partition deleted."""

    @property
    def in_use(self) -> tuple[dict[str, Any], ...]:
        return tuple(p for p in self.partitions if p["occupant"])

    def to_json(self) -> dict[str, Any]:
        return {"gpus": list(self.gpus), "partitions": [dict(p) for p in self.partitions]}


class ImportRefused(Exception):
    """An import would remove partitions in use or overwrite a node with a live agent; it
    goes through only when forced. ``detail`` is JSON for the API."""

    def __init__(self, message: str, *, removal: RemovalPlan, agent_alive: bool) -> None:
        self.removal = removal
        self.agent_alive = agent_alive
        super().__init__(message)

    @property
    def detail(self) -> dict[str, Any]:
        return {"would_remove": self.removal.to_json(), "agent_alive": self.agent_alive}


def removal_plan(*, node: Node | None, inventory: NodeInventory) -> RemovalPlan:
    """GPUs and partitions of ``node`` a sync of ``inventory`` would delete, each with what
    occupies it (``partitions.workloads.occupants``: the port apps running workloads fill)."""
    if node is None:
        return RemovalPlan()
    from partitions import workloads

    kept = {info.index: {p.partition_id for p in info.partitions} for info in inventory.gpus}
    gpus = list(node.gpus.prefetch_related("partitions").order_by("index"))
    removed_gpus = tuple(g.index for g in gpus if g.index not in kept)
    doomed = [(g, p) for g in gpus for p in sorted(g.partitions.all(), key=lambda p: p.index)
              if g.index not in kept or p.index not in kept[g.index]]
    held = workloads.occupants(partition_ids=[p.pk for _, p in doomed]) if doomed else {}
    return RemovalPlan(gpus=removed_gpus, partitions=tuple(
        {"gpu_index": g.index, "partition": p.index,
         "occupant": held[p.pk].name if p.pk in held else None,
         "state": held[p.pk].state if p.pk in held else None}
        for g, p in doomed))


def _refusal(node: Node | None, removal: RemovalPlan) -> str:
    """Why an unforced import onto ``node`` is refused ("" when it is not)."""
    if node is None:
        return ""
    reasons = []
    if removal.in_use:
        what = []
        if removal.gpus:
            what.append(f"GPUs {', '.join(map(str, removal.gpus))}")
        what.append(f"{len(removal.partitions)} partition{'s' if len(removal.partitions) != 1 else ''}")
        used = ", ".join(f"gpu{p['gpu_index']}/p{p['partition']} ({p['occupant']}, {p['state']})" for p in removal.in_use)
        reasons.append(f"the import would remove {' and '.join(what)} of {node.name}, in use: {used}")
    if node.agent_alive:
        reasons.append(f"{node.name} has a live agent: its inventory comes from the hardware")
    return "; ".join(reasons)


@dataclass(frozen=True)
class ImportResult:
    node: str
    inventory: NodeInventory
    dry_run: bool
    sync: SyncResult | None
    removal: RemovalPlan = field(default_factory=RemovalPlan)
    refused: str = ""
    """Why the import is (for a dry run: would be) refused unless forced; "" when it is not."""
    forced: bool = False

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"node": self.node, "dry_run": self.dry_run, **inventory_json(self.inventory),
                                "would_remove" if self.dry_run else "removed": self.removal.to_json(),
                                "refused": self.refused or None, "forced": self.forced}
        if self.sync is not None:
            body["changes"] = {
                "created": self.sync.created,
                "updated": self.sync.updated,
                "deleted": self.sync.deleted,
                "unchanged": self.sync.unchanged,
            }
            body["warnings"] = self.sync.warnings
        else:
            body["warnings"] = inventory_warnings(self.inventory)
        return body


def import_amdsmi_outputs(*, node_name: str, files: list[tuple[str, str]], dry_run: bool = False,
                          force: bool = False) -> ImportResult:
    """Parse captured amd-smi outputs and (unless ``dry_run``) store them as ``node_name``'s
    inventory, creating the node (backend "imported") if it does not exist.

    All or nothing: any ParseError leaves the database untouched. An import that would delete
    GPUs or partitions in use, or that targets a node with a live agent, raises ImportRefused
    unless ``force`` (a forced import is audited with what it removed). A dry run never
    raises it: it shows what would be stored and removed, and why it would be refused.
    """
    from partitions.importing import parse_captures

    node_name_validator(node_name)
    inventory = parse_captures(files)
    if dry_run:
        node = Node.objects.filter(name=node_name).first()
        removal = removal_plan(node=node, inventory=inventory)
        return ImportResult(node=node_name, inventory=inventory, dry_run=True, sync=None, removal=removal,
                            refused="" if force else _refusal(node, removal), forced=force)
    from aimconsole import audit

    with transaction.atomic():
        node = Node.objects.select_for_update().filter(name=node_name).first()
        removal = removal_plan(node=node, inventory=inventory)
        refused = _refusal(node, removal)
        if refused and not force:
            raise ImportRefused(refused, removal=removal, agent_alive=bool(node and node.agent_alive))
        if node is None:
            node = Node.objects.create(name=node_name, backend=Node.Backend.IMPORTED)
        result = sync_inventory(node=node, inventory=inventory)
        audit.record("node.import", obj=node, after={
            "gpus": len(inventory.gpus), "created": result.created, "updated": result.updated,
            "deleted": result.deleted, "forced": bool(force), "refused_because": refused or None,
            "removed": removal.to_json()})
    return ImportResult(node=node_name, inventory=inventory, dry_run=False, sync=result, removal=removal,
                        refused=refused, forced=force)


def backend_for(node: Node) -> Backend:
    """The hardware backend that talks to ``node`` (amd-smi, its emulator, or simulated)."""
    from django.conf import settings

    from partitions.backends import configured_backend, get_backend

    options = dict(node.backend_options or {})
    if node.backend == Node.Backend.IMPORTED:
        raise ValueError(f"node {node.name} was imported from captured output; it has no live backend")
    if node.backend == Node.Backend.AMDSMI:
        # Real hardware: PARTITION_BACKEND says which implementation drives it (amd-smi unless
        # set otherwise); a bad value raises ImproperlyConfigured.
        if configured_backend() != "amdsmi":
            return get_backend(None, **options)
        options.setdefault("binary", settings.AMD_SMI_BIN)
    if node.backend in (Node.Backend.AMDSMI, Node.Backend.EMULATOR):
        options.setdefault("timeout", settings.AMD_SMI_TIMEOUT_S)
        options.setdefault("reload_timeout", settings.AMD_SMI_RELOAD_TIMEOUT_S)
        # Telemetry through the amdsmi Python library where it imports: the system one on real
        # nodes, only an explicitly configured one (the emulator's face) on emulated nodes.
        library = settings.AMD_SMI_LIBRARY if node.backend == Node.Backend.AMDSMI else settings.AMD_SMI_EMULATOR_LIBRARY
        options.setdefault("library", library or None)
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

"""``partitions_of`` and ``validate``: what a fleet offers and whether a placement obeys the rules."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from partitions.geometry import GeometryError, GpuSpec, get_spec
from planning.placement._state import SPX, _gib, _gpu_problem, _memory_mode, _spec
from planning.placement.types import REASON_CODES, Demand, Fleet, GpuState, ModeChange, NodeState, Placement, Slot


def _usable_spec(node: NodeState, gs: GpuState) -> GpuSpec | None:
    """The GPU's spec, or None when the engine leaves it out (bad node or GPU data)."""
    if _memory_mode(node.memory_mode) is None or _gpu_problem(gs) is not None:
        return None
    try:
        return get_spec(gs.gpu_model)
    except GeometryError:  # pragma: no cover - _gpu_problem() checked it
        return None

def partitions_of(fleet: Fleet, changes: Sequence[ModeChange] = ()) -> list[Slot]:
    """Every partition slot of the schedulable GPUs (on schedulable nodes) after ``changes``.

    GPUs whose mode after the changes is not allowed under their node's NPS have no slots.
    Occupied partitions are included. SPX GPUs show one slot with partition_index 0.
    """
    final = {(c.node, c.gpu_index): c.to_mode.upper() for c in changes}
    slots = []
    for node in fleet.nodes:
        for gs in node.gpus:
            spec = _usable_spec(node, gs)
            if not (node.schedulable and gs.schedulable) or spec is None:
                continue
            mode = final.get((node.name, gs.index), gs.compute_mode.upper())
            if (mode, node.memory_mode.upper()) not in {(str(c), str(m)) for c, m in spec.allowed_pairs(gs.caps)}:
                continue
            size = float(spec.smallest_partition_gb(mode))
            slots += [Slot(node.name, gs.index, i, mode, size) for i in range(spec.partition_count(mode))]
    return slots


def validate(fleet: Fleet, placement: Placement, demands: Sequence[Demand]) -> list[str]:
    """Rule violations of ``placement`` (empty list: valid). Does not judge optimality."""
    errors: list[str] = []
    nodes = {n.name: n for n in fleet.nodes}
    gpus = {(n.name, g.index): g for n in fleet.nodes for g in n.gpus}
    by_key = {d.key: d for d in demands}
    final = {k: g.compute_mode.upper() for k, g in gpus.items()}
    occupied_gpus = {(o.node, o.gpu_index) for o in fleet.occupants}
    seen_change: set[tuple[str, int]] = set()
    for c in placement.mode_changes:
        k, label = (c.node, c.gpu_index), f"mode change {c.node}/gpu{c.gpu_index}"
        if k not in gpus:
            errors.append(f"{label}: no such GPU")
            continue
        if k in seen_change:
            errors.append(f"{label}: GPU changed twice")
        seen_change.add(k)
        if c.from_mode.upper() != final[k]:
            errors.append(f"{label}: from {c.from_mode} but the GPU is in {final[k]}")
        if k in occupied_gpus:
            errors.append(f"{label}: the GPU holds a running replica")
        if not (gpus[k].schedulable and nodes[c.node].schedulable) or _usable_spec(nodes[c.node], gpus[k]) is None:
            errors.append(f"{label}: the GPU is not schedulable")
        final[k] = c.to_mode.upper()
    taken: dict[tuple[str, int], list[int | None]] = defaultdict(list)
    spread_gpus: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for o in fleet.occupants:
        taken[(o.node, o.gpu_index)].append(o.partition_index)
        spread_gpus[o.deployment].append((o.node, o.gpu_index))
    held = {(o.deployment, o.replica) for o in fleet.occupants}
    done: set[tuple[str, int]] = set()
    for a in placement.assignments:
        label, d = f"{a.deployment}#{a.replica}", by_key.get(a.deployment)
        if d is None:
            errors.append(f"{label}: unknown deployment")
            continue
        if (a.deployment, a.replica) in done or (a.deployment, a.replica) in held:
            errors.append(f"{label}: replica placed twice")
        done.add((a.deployment, a.replica))
        if not 0 <= a.replica < d.replicas:
            errors.append(f"{label}: replica number out of range")
        if len(a.slots) != d.tensor_parallel:
            errors.append(f"{label}: {len(a.slots)} slot(s) for tensor_parallel {d.tensor_parallel}")
        if d.tensor_parallel > 1:
            if len({s.node for s in a.slots}) > 1:
                errors.append(f"{label}: tensor-parallel replica spans several nodes")
            if len({(s.node, s.gpu_index) for s in a.slots}) != len(a.slots):
                errors.append(f"{label}: tensor-parallel replica uses a GPU twice")
        for s in a.slots:
            k, where = (s.node, s.gpu_index), f"{label} on {s.node}/gpu{s.gpu_index}"
            if k not in gpus:
                errors.append(f"{where}: no such GPU")
                continue
            gs, node = gpus[k], nodes[s.node]
            usable = _usable_spec(node, gs)
            if usable is None:
                errors.append(f"{where}: the GPU is excluded (bad node or GPU data)")
                continue
            spec = usable
            if not (gs.schedulable and node.schedulable):
                errors.append(f"{where}: GPU or node is not schedulable")
            if s.compute_mode.upper() != final[k]:
                errors.append(f"{where}: slot says {s.compute_mode} but the GPU ends in {final[k]}")
            pairs = {(str(c), str(m)) for c, m in spec.allowed_pairs(gs.caps)}
            if (final[k], node.memory_mode.upper()) not in pairs:
                errors.append(f"{where}: {final[k]}+{node.memory_mode} is not allowed on {spec.model}")
                continue
            size = float(spec.smallest_partition_gb(final[k]))
            if abs(s.memory_gb - size) > 1e-6:
                errors.append(f"{where}: slot memory {s.memory_gb} but the partition has {size}")
            if d.memory_gb > size + 1e-9:
                errors.append(f"{where}: needs {_gib(d.memory_gb)}, partition holds {_gib(size)} (over capacity)")
            if d.tensor_parallel > 1 and (final[k] != SPX or s.partition_index is not None):
                errors.append(f"{where}: tensor-parallel member must be a whole GPU in SPX")
            if d.tensor_parallel == 1 and (s.partition_index is None
                                          or not 0 <= s.partition_index < spec.partition_count(final[k])):
                errors.append(f"{where}: bad partition index {s.partition_index}")
            if d.gpu_models and spec.model not in {_spec(m).model for m in d.gpu_models}:
                errors.append(f"{where}: {spec.model} is not an allowed model")
            if d.pin_node is not None and (s.node != d.pin_node or (d.pin_gpu is not None and d.tensor_parallel == 1
                                                                    and s.gpu_index != d.pin_gpu)):
                errors.append(f"{where}: pinned to {d.pin_node}" + (f"/gpu{d.pin_gpu}" if d.pin_gpu is not None else ""))
            taken[k].append(s.partition_index)
            spread_gpus[d.key].append(k)
        if d.pin_gpu is not None and d.tensor_parallel > 1 and (d.pin_node, d.pin_gpu) not in {
                (s.node, s.gpu_index) for s in a.slots}:
            errors.append(f"{label}: pinned GPU {d.pin_node}/gpu{d.pin_gpu} not among its GPUs")
    for k, parts in taken.items():
        if len(parts) != len(set(parts)) or (None in parts and len(parts) > 1):
            errors.append(f"{k[0]}/gpu{k[1]}: a partition holds more than one replica")
    for name, on in spread_gpus.items():
        if name in by_key and by_key[name].spread and len(on) != len(set(on)):
            errors.append(f"{name}: spread replicas share a GPU")
    unplaced = set()
    for u in placement.unplaced:
        if not u.reason.strip():
            errors.append(f"{u.deployment}#{u.replica}: unplaced without a reason")
        if u.code not in REASON_CODES:
            errors.append(f"{u.deployment}#{u.replica}: unknown reason code {u.code!r}")
        if (u.deployment, u.replica) in done or (u.deployment, u.replica) in unplaced:
            errors.append(f"{u.deployment}#{u.replica}: both placed and unplaced, or listed twice")
        unplaced.add((u.deployment, u.replica))
    for d in demands:
        for r in range(d.replicas):
            if (d.key, r) not in held | done | unplaced:
                errors.append(f"{d.key}#{r}: neither placed nor reported unplaced")
    used = {(s.node, s.gpu_index) for a in placement.assignments for s in a.slots} | occupied_gpus
    if placement.gpus_used != len(used):
        errors.append(f"gpus_used is {placement.gpus_used}, the plan uses {len(used)}")
    changed_unused = [c for c in placement.mode_changes if (c.node, c.gpu_index) not in used]
    if changed_unused:
        errors.append(f"{len(changed_unused)} mode change(s) on GPUs the plan does not use")
    return errors


def spread_shared(p: Placement, fleet: Fleet, demands: Sequence[Demand], *, pinned: bool = True) -> int:
    """New replicas of spread deployments on a node that already holds one of theirs (occupants
    included); ``pinned=False`` leaves out deployments pinned to a node."""
    keys = {d.key for d in demands if d.spread and (pinned or d.pin_node is None)}
    nodes = Counter((a.deployment, a.slots[0].node) for a in p.assignments if a.deployment in keys)
    held = {(o.deployment, o.node) for o in fleet.occupants if o.deployment in keys}
    return sum(n - (key not in held) for key, n in nodes.items())


def quality(p: Placement, fleet: Fleet, demands: Sequence[Demand]) -> tuple[int, ...]:
    """Smaller is better, compared as a tuple (the exact solver's objective, in its order):
    replicas left unplaced per priority level (highest first), spread replicas sharing a node,
    GPUs used, mode changes."""
    priority = {d.key: d.priority for d in demands}
    levels = sorted(set(priority.values()), reverse=True)
    lost = Counter(priority[u.deployment] for u in p.unplaced)
    return (*(lost[lvl] for lvl in levels), spread_shared(p, fleet, demands), p.gpus_used, len(p.mode_changes))

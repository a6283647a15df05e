"""What-if planning: what a repartition (or new demand) would change, before anything happens.

Pure Python, no side effects. Input: the fleet (``planning.placement.Fleet``), target layouts
(GPU → compute mode, node → memory mode) and/or new demand. Output: the GPUs and nodes that
change, the running replicas that lose their partition and where each can go (or why it
cannot), capacity per partition size before/after, the blast radius, ordered steps, and an
ETA from measured step durations.

ETA model: nodes change in parallel (one agent each); on one node the steps run in order:
stop displaced replicas, the memory-mode change (driver reload), compute-mode changes (one per
GPU), then deployments start. Durations come from ``StepDurations`` — the median of past
operations of each kind when the caller has history, else the documented defaults below.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from partitions.geometry import GeometryError, get_spec
from planning import placement as pl
from planning.placement.reasons import count_reasons


class PlanError(ValueError):
    """A target or demand that cannot be planned; the message names the valid choices."""


class PlanTimeout(PlanError):
    """Planning ran past its deadline (``plan(deadline=...)``); nothing was planned."""


@dataclass(frozen=True)
class StepDurations:
    """Seconds per step. Defaults: a compute change is a single amd-smi call (~15 s with the
    read-back); an NPS change reloads the driver (amd-smi 6.4 waits up to 140 s; 180 s with the
    compute re-set); starting a model server loads weights (~60 s for a mid-size model)."""

    compute_change_s: float = 15.0
    memory_change_s: float = 180.0
    deploy_s: float = 60.0
    stop_s: float = 10.0
    source: str = "defaults"


@dataclass(frozen=True)
class GpuTarget:
    node: str
    gpu_index: int
    compute_mode: str


@dataclass(frozen=True)
class NodeTarget:
    node: str
    memory_mode: str
    # For every GPU afterwards; None = keep each GPU's if valid. In the memory mode the node
    # already runs, this is compute-mode changes only (no NPS change, no driver reload).
    compute_mode: str | None = None


@dataclass(frozen=True)
class GpuChange:
    node: str
    gpu_index: int
    from_compute: str
    to_compute: str
    from_memory: str
    to_memory: str
    reason: str  # "requested", "memory mode change", "placement"


@dataclass(frozen=True)
class NodeChange:
    node: str
    from_memory: str
    to_memory: str
    gpus_touched: tuple[int, ...]  # blast radius: the driver reloads for all of them
    # The compute mode every GPU of the node gets with it (a suggested change); None: as asked
    # in the request's node target, or each GPU's own.
    compute_mode: str | None = None


@dataclass(frozen=True)
class Displaced:
    deployment: str
    replica: int
    priority: int
    node: str
    gpu_index: int
    partition_index: int | None
    to: tuple[pl.Slot, ...] | None  # where it can go
    reason: str | None  # why it cannot (when ``to`` is None)
    # ``to`` exists and is free now: the new copy starts first, the old one stops once it runs
    # (else the old copy stops at the drain and the new one starts after the changes).
    make_before_break: bool = False


@dataclass(frozen=True)
class CapacityRow:
    memory_gb: float
    total_before: int
    free_before: int
    total_after: int
    free_after: int


@dataclass(frozen=True)
class PlanStep:
    order: int
    node: str
    kind: str  # "stop", "set-memory-mode", "set-compute-mode", "deploy"
    gpu_index: int | None
    detail: str
    duration_s: float
    starts_at_s: float  # offset from the start of the plan (nodes run in parallel)


@dataclass(frozen=True)
class PlanResult:
    gpu_changes: tuple[GpuChange, ...]
    node_changes: tuple[NodeChange, ...]
    displaced: tuple[Displaced, ...]
    assignments: tuple[pl.Assignment, ...]  # new demand
    unplaced: tuple[pl.Unplaced, ...]
    capacity: tuple[CapacityRow, ...]
    steps: tuple[PlanStep, ...]
    eta_s: float
    blast_radius: Mapping[str, tuple[int, ...]]  # node -> GPU indices whose partitions change
    durations: StepDurations
    warnings: tuple[str, ...] = field(default_factory=tuple)
    solver: pl.Solver = "heuristic"  # which placement solver answered (see placement.place)
    solver_optimal: bool = False
    solver_note: str = ""
    excluded: tuple[pl.Excluded, ...] = ()  # nodes/GPUs placement left out, with the reason
    # What would place the rest but needs someone first (e.g. a memory-mode change on a busy node).
    hints: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Everything asked for is placed and no displaced replica is left without a place."""
        return not self.unplaced and all(d.to is not None for d in self.displaced)


def _target_fleet(fleet: pl.Fleet, gpu_targets: Sequence[GpuTarget], node_targets: Sequence[NodeTarget]) -> tuple[pl.Fleet, list[GpuChange], list[NodeChange]]:
    nodes = {n.name: n for n in fleet.nodes}
    node_target = {t.node: t for t in node_targets}
    gpu_target = {(t.node, t.gpu_index): t for t in gpu_targets}
    for name in list(node_target) + [node for node, _ in gpu_target]:
        if name not in nodes:
            raise PlanError(f"no node {name!r}; nodes: {', '.join(sorted(nodes)) or 'none'}")
    changes: list[GpuChange] = []
    node_changes: list[NodeChange] = []
    new_nodes = []
    for node in fleet.nodes:
        target = node_target.get(node.name)
        memory = target.memory_mode.upper() if target else node.memory_mode
        gpus = []
        indices = {g.index for g in node.gpus}
        for (name, index) in gpu_target:
            if name == node.name and index not in indices:
                raise PlanError(f"{node.name} has no GPU {index}; GPUs: {sorted(indices)}")
        for gpu in node.gpus:
            if target is None and (node.name, gpu.index) not in gpu_target:
                gpus.append(gpu)  # untouched: placement uses it or leaves it out (bad data), never fails on it
                continue
            spec = get_spec(gpu.gpu_model)
            allowed = spec.allowed_pairs(gpu.caps)
            wanted = gpu.compute_mode
            reason = ""
            if target is not None and memory != node.memory_mode:
                reason = "memory mode change"
                wanted = (target.compute_mode or gpu.compute_mode).upper()
            elif target is not None and target.compute_mode:
                # The node already runs this memory mode: no NPS change and no driver reload,
                # only compute-mode changes on the GPUs not in it yet (as the request service does).
                reason = "requested"
                wanted = target.compute_mode.upper()
            if (node.name, gpu.index) in gpu_target:
                wanted = gpu_target[(node.name, gpu.index)].compute_mode.upper()
                reason = "requested"
            if not memory:
                raise PlanError(f"{node.name}/gpu{gpu.index} ({spec.model}) reports no memory mode: the node's GPUs disagree "
                                "or none was read; sync the node (or set its memory mode) before planning compute modes there")
            if (wanted, memory) not in {(str(c), str(m)) for c, m in allowed}:
                valid = ", ".join(str(c) for c, m in allowed if str(m) == memory)
                hint = f"compute modes valid under {memory}: {valid}" if valid else f"{spec.model} has no compute mode under {memory}"
                raise PlanError(f"{node.name}/gpu{gpu.index} ({spec.model}) cannot run {wanted} under {memory}; {hint}")
            if wanted != gpu.compute_mode or memory != node.memory_mode:
                changes.append(GpuChange(node.name, gpu.index, gpu.compute_mode, wanted, node.memory_mode, memory, reason or "requested"))
            gpus.append(replace(gpu, compute_mode=wanted))
        if memory != node.memory_mode:
            node_changes.append(NodeChange(node.name, node.memory_mode, memory, tuple(g.index for g in node.gpus)))
        new_nodes.append(replace(node, memory_mode=memory, gpus=tuple(gpus)))
    return replace(fleet, nodes=tuple(new_nodes)), changes, node_changes


def _moved_key(deployment: str, replica: int) -> str:
    return f"moved:{deployment}#{replica}"


def _display_name(key: str) -> str:
    return key.removeprefix("moved:").split("#")[0]


def _capacity(before: list[pl.Slot], after: list[pl.Slot], used_before: set[tuple[str, int, int | None]],
              used_after: set[tuple[str, int, int | None]]) -> tuple[CapacityRow, ...]:
    def key(slot: pl.Slot) -> tuple[str, int, int | None]:
        return (slot.node, slot.gpu_index, slot.partition_index)

    sizes = sorted({s.memory_gb for s in before} | {s.memory_gb for s in after}, reverse=True)
    tb, ta = Counter(s.memory_gb for s in before), Counter(s.memory_gb for s in after)
    fb = Counter(s.memory_gb for s in before if key(s) not in used_before)
    fa = Counter(s.memory_gb for s in after if key(s) not in used_after)
    return tuple(CapacityRow(size, tb[size], fb[size], ta[size], fa[size]) for size in sizes)


def plan(
    fleet: pl.Fleet,
    *,
    gpu_targets: Sequence[GpuTarget] = (),
    node_targets: Sequence[NodeTarget] = (),
    demands: Sequence[pl.Demand] = (),
    durations: StepDurations = StepDurations(),
    exact_time_budget_s: float | None = pl.DEFAULT_TIME_BUDGET_S,
    deadline: float | None = None,
) -> PlanResult:
    """Plan target layouts and/or new demand; see the module docstring. Placement runs the
    exact solver within ``exact_time_budget_s`` (``placement.place``); ``deadline`` (a
    ``time.monotonic()`` value) bounds the whole plan: PlanTimeout once it passes."""
    if not (gpu_targets or node_targets or demands):
        raise PlanError("give target layouts (gpus/nodes) or demands")
    try:
        target, changes, node_changes = _target_fleet(fleet, gpu_targets, node_targets)
    except GeometryError as exc:
        raise PlanError(str(exc)) from exc
    changed = {(c.node, c.gpu_index) for c in changes}

    # Replicas on GPUs whose partitions change lose them; the others stay where they are.
    replicas: dict[tuple[str, int], list[pl.Occupant]] = defaultdict(list)
    for occ in fleet.occupants:
        replicas[(occ.deployment, occ.replica)].append(occ)
    displaced_keys = [k for k, occs in replicas.items() if any((o.node, o.gpu_index) in changed for o in occs)]
    staying = tuple(o for k, occs in replicas.items() if k not in displaced_keys for o in occs)
    target = replace(target, occupants=staying)

    # Re-place displaced replicas (as one-replica demands keeping their priority) together with
    # the new demand. Explicit targets are final: placement may not repartition again then.
    moved_demands = []
    for deployment, replica in displaced_keys:
        occs = replicas[(deployment, replica)]
        moved_demands.append(pl.Demand(
            key=_moved_key(deployment, replica), memory_gb=max(o.memory_gb for o in occs), replicas=1,
            priority=occs[0].priority, tensor_parallel=len(occs) if occs[0].partition_index is None else 1,
        ))
    explicit = bool(gpu_targets or node_targets)
    result = _place(target, [*moved_demands, *demands], not explicit, exact_time_budget_s, deadline)
    hints: list[str] = []
    new_keys = {d.key for d in demands}
    if not explicit and any(u.deployment in new_keys for u in result.unplaced):
        # Placement never changes a node's memory mode; a plan may, on a node nothing runs on.
        chosen, hints = _memory_mode_search(target, list(demands), result, deadline)
        if chosen:
            target = _with_memory_modes(target, chosen)
            result = _place(target, [*moved_demands, *demands], True, exact_time_budget_s, deadline)
            for node_name, memory, compute in chosen:
                node = next(n for n in fleet.nodes if n.name == node_name)
                node_changes.append(NodeChange(node_name, node.memory_mode, memory, tuple(g.index for g in node.gpus), compute))
                changes.extend(GpuChange(node_name, g.index, g.compute_mode, compute, node.memory_mode, memory, "memory mode change")
                               for g in node.gpus)
            target = _unlocked(target, fleet)

    moved_keys = {_moved_key(d, r) for d, r in displaced_keys}
    moved_to = {a.deployment: a.slots for a in result.assignments if a.deployment in moved_keys}
    why = {u.deployment: u.reason for u in result.unplaced}
    displaced = []
    for deployment, replica in displaced_keys:
        key = _moved_key(deployment, replica)
        first = replicas[(deployment, replica)][0]
        displaced.append(Displaced(deployment, replica, first.priority, first.node, first.gpu_index, first.partition_index,
                                   moved_to.get(key), None if key in moved_to else why.get(key, "no partition left")))
    assignments = tuple(a for a in result.assignments if a.deployment in new_keys)
    unplaced = tuple(u for u in result.unplaced if u.deployment in new_keys)

    gpu_of = {(n.name, g.index): (g, n) for n in target.nodes for g in n.gpus}
    for mc in result.mode_changes:
        gpu, node = gpu_of[(mc.node, mc.gpu_index)]
        changes.append(GpuChange(mc.node, mc.gpu_index, mc.from_mode, mc.to_mode, node.memory_mode, node.memory_mode, "placement"))
    displaced = [replace(d, make_before_break=can_make_before_break(fleet, changes, d.to)) if d.to else d for d in displaced]

    before_slots = pl.partitions_of(fleet)
    after_slots = pl.partitions_of(target, result.mode_changes)
    used_before = {(o.node, o.gpu_index, o.partition_index) for o in fleet.occupants}
    used_after = {(o.node, o.gpu_index, o.partition_index) for o in staying}
    used_after |= {(s.node, s.gpu_index, s.partition_index) for a in result.assignments for s in a.slots}
    capacity = _capacity(before_slots, after_slots, used_before, used_after)

    blast: dict[str, set[int]] = defaultdict(set)
    for nc in node_changes:
        blast[nc.node].update(nc.gpus_touched)
    for c in changes:
        blast[c.node].add(c.gpu_index)

    steps = _steps(changes, node_changes, displaced, result.assignments, durations)
    eta = max((s.starts_at_s + s.duration_s for s in steps), default=0.0)
    warnings = []
    if node_changes:
        warnings.append("a memory-mode change reloads the driver for every GPU of the node: "
                        + ", ".join(f"{nc.node} ({len(nc.gpus_touched)} GPUs)" for nc in node_changes))
    suggested = [nc for nc in node_changes if nc.compute_mode]
    if suggested:
        warnings.append("no compute-mode change alone places it; this plan changes the memory mode of idle node(s): "
                        + ", ".join(f"{nc.node} ({nc.from_memory} → {nc.to_memory}, {nc.compute_mode})" for nc in suggested))
    lost = [d for d in displaced if d.to is None]
    if lost:
        warnings.append(f"{len(lost)} running replica(s) would have no partition afterwards")
    return PlanResult(
        gpu_changes=tuple(changes), node_changes=tuple(node_changes), displaced=tuple(displaced),
        assignments=assignments, unplaced=unplaced, capacity=capacity, steps=steps, eta_s=eta,
        blast_radius={node: tuple(sorted(indices)) for node, indices in sorted(blast.items())},
        durations=durations, warnings=tuple(warnings), solver=result.solver, solver_optimal=result.optimal,
        solver_note=result.solver_note, excluded=result.excluded, hints=tuple(hints),
    )


# A plan for new demand tries memory-mode changes on at most this many nodes, and names at most
# this many busy nodes whose change would help (each try is one heuristic placement).
MAX_SUGGESTED_NODE_CHANGES = 4
MAX_BUSY_HINTS = 3
MAX_BUSY_NODES_TRIED = 16


def _node_pairs(node: pl.NodeState) -> list[tuple[str, str]]:
    """(memory, compute) pairs other than the node's memory mode that every GPU of ``node`` can
    run ([] when the node cannot change its memory mode: unschedulable, mixed or unknown models,
    a model whose memory mode is fixed)."""
    if not node.schedulable or not node.gpus or not all(g.schedulable for g in node.gpus):
        return []
    models = {g.gpu_model for g in node.gpus}
    if len(models) != 1:
        return []
    try:
        spec = get_spec(models.pop())
    except GeometryError:
        return []
    if not spec.memory_switchable:
        return []
    common: set[tuple[str, str]] | None = None
    for g in node.gpus:
        pairs = {(str(m), str(c)) for c, m in spec.allowed_pairs(g.caps)}
        common = pairs if common is None else common & pairs
    order = {str(c): i for i, c in enumerate(spec.modes_by_partition_size())}
    return sorted((p for p in common or () if p[0] != node.memory_mode), key=lambda p: (p[0], order.get(p[1], 0)))


def _with_memory_modes(fleet: pl.Fleet, chosen: Sequence[tuple[str, str, str]]) -> pl.Fleet:
    """``fleet`` with these nodes in (memory, compute), their GPUs held to that compute mode (caps
    allow only it: the node's change sets it, placement may not change it again)."""
    by_name = {name: (memory, compute) for name, memory, compute in chosen}
    nodes = []
    for n in fleet.nodes:
        if n.name not in by_name:
            nodes.append(n)
            continue
        memory, compute = by_name[n.name]
        nodes.append(replace(n, memory_mode=memory, gpus=tuple(replace(g, compute_mode=compute, caps={compute: (memory,)})
                                                               for g in n.gpus)))
    return replace(fleet, nodes=tuple(nodes))


def _unlocked(fleet: pl.Fleet, original: pl.Fleet) -> pl.Fleet:
    """``fleet`` with each GPU's caps as in ``original`` (after ``_with_memory_modes``)."""
    caps = {(n.name, g.index): g.caps for n in original.nodes for g in n.gpus}
    return replace(fleet, nodes=tuple(replace(n, gpus=tuple(replace(g, caps=caps[(n.name, g.index)]) for g in n.gpus))
                                      for n in fleet.nodes))


def _placed(result: pl.Placement, keys: set[str]) -> int:
    return sum(1 for a in result.assignments if a.deployment in keys)


def _gpu_ranges(indices: Sequence[int]) -> str:
    """"0–3, 5" for [0, 1, 2, 3, 5]."""
    parts: list[str] = []
    run: list[int] = []
    for i in sorted(indices):
        if run and i != run[-1] + 1:
            parts.append(f"{run[0]}–{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        parts.append(f"{run[0]}–{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(parts)


def _memory_mode_search(fleet: pl.Fleet, demands: list[pl.Demand], base: pl.Placement,
                        deadline: float | None) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Memory-mode changes that place more of ``demands`` than ``base`` does: greedily, the
    (node, memory, compute) that places the most, on nodes nothing runs on (NPS is node-wide: the
    driver reloads for all its GPUs), at most MAX_SUGGESTED_NODE_CHANGES. Nodes that are alike
    (model, modes, GPUs, caps) are tried once. Then, if replicas are still left, the busy nodes
    whose change would place more, named with what runs there (hints). Heuristic placement only."""
    keys = {d.key for d in demands}
    asked = sum(d.replicas for d in demands)
    busy_on: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for o in fleet.occupants:
        busy_on[o.node][o.gpu_index].add(o.deployment)
    pairs = {n.name: _node_pairs(n) for n in fleet.nodes}
    chosen: list[tuple[str, str, str]] = []
    placed = _placed(base, keys)
    current = fleet

    def attempt(f: pl.Fleet) -> int:
        return _placed(_place(f, demands, True, 0, deadline), keys)

    while placed < asked and len(chosen) < MAX_SUGGESTED_NODE_CHANGES:
        taken = {c[0] for c in chosen}
        seen: set[Any] = set()
        best: tuple[int, tuple[str, str, str]] | None = None
        for n in current.nodes:
            if n.name in taken or n.name in busy_on or not pairs[n.name]:
                continue
            signature = (n.memory_mode, tuple((g.gpu_model, g.compute_mode, tuple(sorted((g.caps or {}).items()))) for g in n.gpus))
            if signature in seen:
                continue
            seen.add(signature)
            for memory, compute in pairs[n.name]:
                got = attempt(_with_memory_modes(current, [(n.name, memory, compute)]))
                if got > placed and (best is None or got > best[0]):
                    best = (got, (n.name, memory, compute))
        if best is None:
            break
        placed = best[0]
        chosen.append(best[1])
        current = _with_memory_modes(current, [best[1]])
    hints: list[str] = []
    if placed < asked:
        busy = sorted((n for n in current.nodes if n.name in busy_on and pairs[n.name]),
                      key=lambda n: (sum(len(d) for d in busy_on[n.name].values()), n.name))[:MAX_BUSY_NODES_TRIED]
        for n in busy:
            emptied = replace(current, occupants=tuple(o for o in current.occupants if o.node != n.name))
            for memory, compute in pairs[n.name]:
                got = attempt(_with_memory_modes(emptied, [(n.name, memory, compute)]))
                if got > placed:
                    names = sorted({d for ds in busy_on[n.name].values() for d in ds})
                    gpus = list(busy_on[n.name])
                    which = f"GPUs {_gpu_ranges(gpus)} are" if len(gpus) > 1 else f"GPU {gpus[0]} is"
                    hints.append(f"node {n.name} would fit {got - placed} more replica(s) in {compute}/{memory}, but {which} "
                                 f"busy: stop {', '.join(names)} first")
                    break
            if len(hints) >= MAX_BUSY_HINTS:
                break
    return chosen, hints


def _place(fleet: pl.Fleet, demands: Sequence[pl.Demand], allow_repartition: bool, exact_time_budget_s: float | None,
           deadline: float | None) -> pl.Placement:
    try:
        result = pl.place(fleet, demands, allow_repartition=allow_repartition, time_budget_s=exact_time_budget_s,
                          deadline=deadline)
    except pl.PlacementTimeout as exc:
        raise PlanTimeout("planning ran past its time budget; ask for fewer demands or replicas") from exc
    return result


def can_make_before_break(fleet: pl.Fleet, changes: Sequence[GpuChange], to: Sequence[pl.Slot]) -> bool:
    """Whether a displaced replica can start on ``to`` before it stops where it is: every
    target partition exists now (its GPU keeps its layout) and no replica holds it now."""
    changed = {(c.node, c.gpu_index) for c in changes}
    held = {(o.node, o.gpu_index, o.partition_index) for o in fleet.occupants}
    whole = {(o.node, o.gpu_index) for o in fleet.occupants}
    for s in to:
        if (s.node, s.gpu_index) in changed:
            return False
        if s.partition_index is None:
            if (s.node, s.gpu_index) in whole:
                return False
        elif (s.node, s.gpu_index, s.partition_index) in held or (s.node, s.gpu_index, None) in held:
            return False
    return True


def _steps(changes: Sequence[GpuChange], node_changes: Sequence[NodeChange], displaced: Sequence[Displaced],
           assignments: Sequence[pl.Assignment], d: StepDurations) -> tuple[PlanStep, ...]:
    per_node: dict[str, list[tuple[str, int | None, str, float]]] = defaultdict(list)
    moved = {_moved_key(x.deployment, x.replica): x for x in displaced}
    early = {_moved_key(x.deployment, x.replica) for x in displaced if x.make_before_break}
    first: dict[str, list[tuple[str, int | None, str, float]]] = defaultdict(list)
    for a in assignments:
        if a.deployment in early:
            x = moved[a.deployment]
            node = a.slots[0].node
            where = ", ".join(f"gpu{s.gpu_index}" + ("" if s.partition_index is None else f"/p{s.partition_index}") for s in a.slots)
            first[node].append(("deploy", a.slots[0].gpu_index,
                                f"start {x.deployment} replica {x.replica} on {node} {where} first (make-before-break)", d.deploy_s))
    for item in displaced:
        if item.make_before_break:
            # Once the new copy runs (deploy_s after the start, wherever it is).
            first[item.node].append(("stop", item.gpu_index, f"stop {item.deployment} replica {item.replica} once its new copy runs",
                                     d.stop_s))
        else:
            per_node[item.node].append(("stop", item.gpu_index, f"stop {item.deployment} replica {item.replica}"
                                        + (" (stop then start: its new partition is not free yet)" if item.to else ""), d.stop_s))
    memory_nodes = {nc.node for nc in node_changes}
    for nc in node_changes:
        what = f"{nc.from_memory} → {nc.to_memory} (driver reload, {len(nc.gpus_touched)} GPUs)"
        per_node[nc.node].append(("set-memory-mode", None, what, d.memory_change_s))
    for c in changes:
        if c.node in memory_nodes and c.reason == "memory mode change":
            continue  # re-set as part of the node's memory-mode change
        per_node[c.node].append(("set-compute-mode", c.gpu_index, f"GPU {c.gpu_index}: {c.from_compute} → {c.to_compute}", d.compute_change_s))
    for a in assignments:
        if a.deployment in early:
            continue
        node = a.slots[0].node
        where = ", ".join(f"gpu{s.gpu_index}" + ("" if s.partition_index is None else f"/p{s.partition_index}") for s in a.slots)
        replica = moved[a.deployment].replica if a.deployment in moved else a.replica
        per_node[node].append(("deploy", a.slots[0].gpu_index,
                               f"start {_display_name(a.deployment)} replica {replica} on {node} {where}", d.deploy_s))
    steps = []
    order = 0
    for node in sorted(set(per_node) | set(first)):
        clock = 0.0
        for kind, gpu, detail, seconds in first[node]:
            # Make-before-break: new copies start at once; old copies stop once those run.
            order += 1
            at = 0.0 if kind == "deploy" else max(clock, d.deploy_s)
            steps.append(PlanStep(order, node, kind, gpu, detail, seconds, at))
            if kind == "stop":
                clock = at + seconds
        deploys_at = None
        for kind, gpu, detail, seconds in per_node[node]:
            order += 1
            if kind == "deploy":
                # Replicas on one node start together once its partitions are ready.
                deploys_at = clock if deploys_at is None else deploys_at
                steps.append(PlanStep(order, node, kind, gpu, detail, seconds, deploys_at))
                continue
            steps.append(PlanStep(order, node, kind, gpu, detail, seconds, clock))
            clock += seconds
    return tuple(steps)


def summary(result: PlanResult) -> dict[str, Any]:
    """JSON-safe form of a plan for the API and pages (also what a page renders)."""
    def slot(s: pl.Slot) -> dict[str, Any]:
        return {"node": s.node, "gpu_index": s.gpu_index, "partition_index": s.partition_index,
                "compute_mode": s.compute_mode, "memory_gb": s.memory_gb}

    return {
        "ok": result.ok,
        "eta_s": round(result.eta_s, 1),
        "durations": {"compute_change_s": result.durations.compute_change_s, "memory_change_s": result.durations.memory_change_s,
                      "deploy_s": result.durations.deploy_s, "stop_s": result.durations.stop_s, "source": result.durations.source},
        "gpu_changes": [c.__dict__ for c in result.gpu_changes],
        "node_changes": [{**nc.__dict__, "gpus_touched": list(nc.gpus_touched)} for nc in result.node_changes],
        "blast_radius": {node: list(gpus) for node, gpus in result.blast_radius.items()},
        "displaced": [
            {"deployment": d.deployment, "replica": d.replica, "priority": d.priority, "node": d.node,
             "gpu_index": d.gpu_index, "partition_index": d.partition_index,
             "to": None if d.to is None else [slot(s) for s in d.to], "reason": d.reason,
             "move": None if d.to is None else ("make-before-break" if d.make_before_break else "stop-then-start")}
            for d in result.displaced
        ],
        "assignments": [{"deployment": a.deployment, "replica": a.replica, "slots": [slot(s) for s in a.slots]} for a in result.assignments],
        "unplaced": [{"deployment": u.deployment, "replica": u.replica, "reason": u.reason, "code": u.code}
                     for u in result.unplaced],
        "solver": {"name": result.solver, "optimal": result.solver_optimal, "note": result.solver_note},
        "excluded": [{"node": e.node, "gpu_index": e.gpu_index, "reason": e.reason} for e in result.excluded],
        "capacity": [c.__dict__ for c in result.capacity],
        "steps": [s.__dict__ for s in result.steps],
        "warnings": list(result.warnings),
        "hints": list(result.hints),
        "unplaced_summary": unplaced_summary(result),
    }


def unplaced_summary(result: PlanResult) -> list[dict[str, Any]]:
    """Per demand with replicas left unplaced: how many were asked, how many fit, and each
    distinct reason with its count ("3 of 8 fit; 5 of 8 replicas: needs 48 GiB…"), bounded."""
    placed = Counter(a.deployment for a in result.assignments)
    reasons: dict[str, list[str]] = defaultdict(list)
    for u in result.unplaced:
        reasons[u.deployment].append(u.reason)
    out = []
    for deployment, texts in reasons.items():
        asked = placed[deployment] + len(texts)
        out.append({"deployment": deployment, "asked": asked, "placed": placed[deployment],
                    "reasons": [{"reason": r.reason, "replicas": r.replicas} for r in count_reasons(texts, of=asked)]})
    return out

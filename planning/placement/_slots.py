"""From the exact model's counts to GPUs: spread replicas on distinct GPUs and nodes (internal)."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Protocol, TypeVar

from planning.placement._state import _Gpu, _State
from planning.placement.types import Assignment, Demand, Fleet, Placement, PlacementError, Slot


class _Items(Protocol):
    """A group of replicas (exact._Group): hashable, with its demand."""

    d: Demand

    def __hash__(self) -> int: ...


G = TypeVar("G", bound=_Items)


class _Unrealisable(PlacementError):
    """The relaxed model's counts could not be dealt out to GPUs (the full model decides)."""


def _fill(gpus: list[_Gpu], spread: Counter[G], others: list[G],
          nodes_of: dict[str, set[str]]) -> list[tuple[_Gpu, G]]:
    """Which GPU of ``gpus`` (free partitions each) each item takes: a spread deployment's items
    on distinct GPUs, on nodes it is not on yet where it can (then ``nodes_of`` grows). Tries
    node-first, then capacity-first choice (which always succeeds when the counts fit)."""
    for node_first in (True, False):
        room = {gpu: len(gpu.free) for gpu in gpus}
        out: list[tuple[_Gpu, G]] = []
        seen = {k: set(v) for k, v in nodes_of.items()}
        ok = True
        for g, count in sorted(spread.items(), key=lambda gc: -gc[1]):
            mine = seen.setdefault(g.d.key, set())
            free = [gpu for gpu in gpus if room[gpu] > 0]
            free.sort(key=lambda gpu: ((gpu.node in mine, -room[gpu]) if node_first else (-room[gpu], gpu.node in mine)))
            picked: list[_Gpu] = []
            for gpu in free:
                if len(picked) == count:
                    break
                if node_first and gpu.node in mine and any(x.node not in mine for x in free if x not in picked and x is not gpu):
                    continue
                picked.append(gpu)
                mine.add(gpu.node)
            if len(picked) < count:
                ok = False
                break
            for gpu in picked:
                room[gpu] -= 1
                out.append((gpu, g))
        if not ok:
            continue
        for g in others:
            target = next((x for x in gpus if room[x] > 0), None)
            if target is None:
                ok = False
                break
            room[target] -= 1
            out.append((target, g))
        if ok:
            for k, v in seen.items():
                nodes_of[k] = v
            return out
    raise _Unrealisable(f"{len(spread)} spread deployment(s) do not fit {len(gpus)} GPU(s) one replica per GPU")


def _interleave_nodes(slots: list[tuple[Slot, ...]]) -> list[tuple[Slot, ...]]:
    """Slots reordered so that the first ones are on different nodes (round-robin by node)."""
    by_node: dict[str, list[tuple[Slot, ...]]] = defaultdict(list)
    for s in slots:
        by_node[s[0].node].append(s)
    out: list[tuple[Slot, ...]] = []
    while any(by_node.values()):
        for node in list(by_node):
            if by_node[node]:
                out.append(by_node[node].pop(0))
    return out


def _move_spread_apart(st: _State, fleet: Fleet, p: Placement, demands: Sequence[Demand]) -> Placement:
    """Move replicas of unpinned spread deployments off nodes they share, to a free partition of
    a GPU in use on a node without one of theirs: the same GPUs and mode changes, so the
    relaxation's optimum stands. ``st`` is the state after ``p`` was expanded into it."""
    by_key = {d.key: d for d in demands}
    per_gpu: Counter[_Gpu] = Counter(st.by_key[(s.node, s.gpu_index)] for a in p.assignments for s in a.slots)
    occupied = defaultdict(set)
    for o in fleet.occupants:
        occupied[o.deployment].add(o.node)
    on: dict[str, Counter[str]] = defaultdict(Counter)
    for a in p.assignments:
        on[a.deployment][a.slots[0].node] += 1
    out = []
    for a in p.assignments:
        d, slot = by_key[a.deployment], a.slots[0]
        old = st.by_key[(slot.node, slot.gpu_index)]
        if (d.spread and d.pin_node is None and d.tensor_parallel == 1 and (per_gpu[old] > 1 or old.locked)
                and (slot.node in occupied[d.key] or on[d.key][slot.node] > 1)):
            taken = occupied[d.key] | {n for n, k in on[d.key].items() if k}
            new = next((g for g in st.gpus if g.ok and g.used and g.valid and g.free and g.size >= d.memory_gb
                        and g.node not in taken and st.model_ok(d, g) and g not in st.sib_gpus[d.key]), None)
            if new is not None:
                moved = st.take(new)
                assert slot.partition_index is not None
                old.free = sorted([*old.free, slot.partition_index])
                per_gpu[old] -= 1
                per_gpu[new] += 1
                on[d.key][slot.node] -= 1
                on[d.key][new.node] += 1
                st.sib_gpus[d.key].discard(old)
                st.sib_gpus[d.key].add(new)
                a = Assignment(a.deployment, a.replica, (moved,))
        out.append(a)
    return dataclasses.replace(p, assignments=tuple(out))

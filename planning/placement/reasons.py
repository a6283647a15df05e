"""Why a replica is unplaced: specific words for people and a bounded code for machines."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from planning.placement._state import SPX, _gib, _State
from planning.placement.types import Demand, ReasonCode

# At most this many distinct reasons are listed; the rest fold into one "other reasons" line.
# One demand's replicas share one reason, so this only bites for reasons from many demands.
MAX_LISTED_REASONS = 20


@dataclass(frozen=True)
class ReasonCount:
    """One distinct reason and how many of the demand's replicas it left unplaced."""

    reason: str
    replicas: int
    of: int
    """The replicas asked for; at least ``replicas``."""

    def __str__(self) -> str:
        return f"{self.replicas} of {self.of} replica{'' if self.of == 1 else 's'}: {self.reason}"


def count_reasons(reasons: Iterable[str], *, of: int, limit: int = MAX_LISTED_REASONS) -> tuple[ReasonCount, ...]:
    """Identical reasons grouped with their counts, most frequent first (ties keep first
    appearance): the bounded form of one-reason-per-replica lists for pages and API bodies.
    ``of`` is the number of replicas asked for (raised to the total counted when smaller). At
    most ``limit`` entries: beyond ``limit - 1`` distinct reasons the rest are counted together."""
    counts = Counter(reasons)
    total = max(of, sum(counts.values()))
    # Counter keeps insertion order and most_common's sort is stable: ties stay in order.
    ranked = counts.most_common()
    if len(ranked) > limit:
        rest = ranked[limit - 1:]
        ranked = [*ranked[:limit - 1], (f"{len(rest)} other reasons", sum(n for _, n in rest))]
    return tuple(ReasonCount(reason=r, replicas=n, of=total) for r, n in ranked)


def unplaced_reason(st: _State, d: Demand, allow_repartition: bool) -> tuple[ReasonCode, str]:
    """Why no replica of ``d`` fits the current (post-placement) state: (code, text)."""
    need, where = d.memory_gb, ""
    gpus = [g for g in st.gpus if st.model_ok(d, g)]
    if d.pin_node is not None:
        where = f"pinned to {d.pin_node}" + (f"/gpu{d.pin_gpu}" if d.pin_gpu is not None else "") + ": "
        if d.pin_node in st.bad_nodes:
            return "unschedulable", where + f"node {d.pin_node} is excluded: {st.bad_nodes[d.pin_node]}"
        if d.pin_gpu is not None and (d.pin_node, d.pin_gpu) in st.bad_gpus:
            return "unschedulable", where + f"the GPU is excluded: {st.bad_gpus[(d.pin_node, d.pin_gpu)]}"
        gpus = [g for g in gpus if g.node == d.pin_node and (d.pin_gpu is None or g.index == d.pin_gpu)]
        if d.pin_gpu is not None and not st.model_ok(d, st.by_key[(d.pin_node, d.pin_gpu)]):
            return "not_allowed_model", where + f"{st.by_key[(d.pin_node, d.pin_gpu)].spec.model} is not an allowed model"
    models = "/".join(sorted(st.allowed[d.key] or {"any"}))
    if not gpus:
        return "no_gpu_model", where + f"no GPU of model {models} in the fleet"
    ok = [g for g in gpus if g.ok]
    if not ok and d.pin_node is not None:
        if not st.node_ok[d.pin_node]:
            return "unschedulable", where + f"node {d.pin_node} is unschedulable"
        return "unschedulable", where + ("the GPU is unschedulable" if d.pin_gpu is not None
                                         else "every GPU of the node is unschedulable")
    if not ok:
        return "unschedulable", where + f"all {len(gpus)} GPU(s) of model {models} are unschedulable"
    biggest = max(ok, key=lambda g: g.spec.memory_gb)
    if need > biggest.spec.memory_gb:
        return "exceeds_gpu", where + (
            f"needs {_gib(need)}{' per GPU' if d.tensor_parallel > 1 else ''}, more than a "
            f"whole {biggest.spec.model} ({_gib(biggest.spec.memory_gb)})"
            + ("" if d.tensor_parallel > 1 else "; needs tensor parallelism"))
    if d.tensor_parallel > 1:
        t = d.tensor_parallel
        most = max(len(st.node_gpus[g.node]) for g in ok)
        if t > most:
            return "tensor_parallel", where + f"tensor parallel {t} needs {t} GPUs on one node; the largest node has {most}"
        count: dict[str, int] = defaultdict(int)
        no_spx = {g.node for g in ok if SPX not in g.modes}
        for g in ok:
            if (not g.used and SPX in g.modes and g.spec.memory_gb >= need
                    and (g.mode == SPX or allow_repartition)):
                count[g.node] += 1
        node, k = max(count.items(), key=lambda kv: kv[1], default=("", 0))
        text = f"tensor parallel {t} needs {t} free GPUs in SPX on one node; " + (
            f"best node {node} has {k}" if k else "no node has one")
        if no_spx:
            text += f" ({len(no_spx)} node(s) forbid SPX under {'/'.join(sorted({g.nps for g in ok if g.node in no_spx}))})"
        if not allow_repartition:
            text += "; repartitioning is disabled"
        return "tensor_parallel", where + text
    top = max(((s, m, g) for g in ok for m, (_, s) in g.modes.items()), key=lambda v: v[0], default=None)
    if top is None or need > top[0]:
        g = next(g for g in ok if g.spec.memory_gb >= need)
        fit = [str(m) for m in g.spec.modes_by_partition_size() if g.spec.smallest_partition_gb(m) >= need]
        text = (f"needs {_gib(need)}: only {'/'.join(fit)} partitions hold it, and memory mode "
                f"{'/'.join(sorted({g.nps for g in ok}))} does not allow {'them' if len(fit) > 1 else 'it'}")
        if top is not None:
            text += f"; largest allowed partition {_gib(top[0])} ({top[2].spec.model} {top[1]})"
        return "memory_mode", where + text
    excluded = st.sib_gpus[d.key] if d.spread else set()
    free = [(g.size, g) for g in ok if g not in excluded and g.valid and g.free]
    empty = [g for g in ok if not g.used and g not in excluded and g.modes]
    if free:
        size, g = max(free, key=lambda x: (x[0], -x[1].pos))
        text = f"needs {_gib(need)}, largest free partition {_gib(size)} ({g.name})"
    else:
        text = f"needs {_gib(need)}, no free partition on the {len(ok)} schedulable GPU(s) of model {models}"
    if empty and not allow_repartition:
        text += "; repartitioning is disabled"
    elif not empty:
        text += "; no empty GPU left to repartition"
    if d.spread and excluded:
        text += f"; spread excludes the {len(excluded)} GPU(s) already holding {d.key}"
    return "no_free_partition", where + text

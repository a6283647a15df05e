"""Model deployments: place, bind partitions, start/stop (through the node agent), move.

A deployment created directly is placed without repartitioning; when that is impossible the
caller gets the reasons and a suggested plan (``PlacementConflict``). Plans
(planning/services.py) repartition first; applying one calls ``DeploymentWorkloads.apply_plan``
here, which creates deployments that wait (``pending``) until their partitions exist, and
records a ``ReplicaMove`` for each displaced replica: the deployment keeps its name and replica
count, and only that replica moves (make-before-break when its new partitions are free now,
else stop then start). The node agents' reconciler (``reconcile_node``) binds, starts, moves
and stops replicas, and keeps each deployment's state truthful (``settle_deployments``).
"""

from __future__ import annotations

import fcntl
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Case, Count, Exists, Max, Min, OuterRef, Value, When
from django.utils import timezone

from aimconsole import audit, counters
from models.dependents import Misfit
from models.models import ModelProfile
from partitions.models import GPU, Node, Partition, Reconfiguration
from partitions.workloads import Holding, Occupant
from planning import occupancy, placement, planner
from planning.models import Plan
from planning.services import DemandSpec, create_plan, exact_time_budget_s, fleet_state, lock_gpus, validate_demands
from serving import events
from serving.models import Deployment, DeploymentSlot, Replica, ReplicaMove, describe_slots

log = logging.getLogger(__name__)

BOUND = Deployment.BOUND_STATES
ACTIVE_SLOT = DeploymentSlot.State.ACTIVE
RETIRING = DeploymentSlot.State.RETIRING
MBB = ReplicaMove.Strategy.MAKE_BEFORE_BREAK
STS = ReplicaMove.Strategy.STOP_THEN_START

# A direct placement that lost a race for a partition places again this many times, after a
# short random pause that grows with each attempt (seconds): concurrent creates that all chose
# the same best partition spread out instead of colliding again at once.
PLACE_ATTEMPTS = 6
PLACE_BACKOFF_S = 0.02
# A direct placement first looks at this many nodes that can take the demand now (setting
# DEPLOYMENT_CANDIDATE_NODES; at least one per replica); the whole fleet only when they cannot.
CANDIDATE_NODES = 8
CANDIDATE_WINDOW = 16  # nodes read per candidate query
# The advisory lock key of the turn contended creates take (``_placement_turn``): "AIMPLACE".
PLACEMENT_TURN_LOCK = 0x41494D504C414345
# How long a drain waits for a make-before-break move's new copy to start on another node
# before it stops the old copy anyway (bounded by half the operation's lease: the drain runs
# inside a claimed reconfiguration that nobody renews meanwhile). Seconds.
MOVE_START_WAIT_S = 20.0
MOVE_POLL_S = 0.5


class PlacementConflict(Exception):
    """The demand cannot be placed on the current layout; ``reasons`` per replica and a
    suggested plan (repartitioning) when one would place it. ``code``: "unplaceable", or
    "contended" when it would fit but other requests kept taking the partitions it chose
    (``PLACE_ATTEMPTS`` times): trying again later may succeed."""

    def __init__(self, reasons: list[str], plan: Plan | None = None, excluded: list[dict[str, Any]] | None = None,
                 *, code: str = "unplaceable") -> None:
        self.reasons = reasons
        self.plan = plan
        self.excluded = excluded or []  # nodes/GPUs placement left out, and why
        self.code = code
        super().__init__("; ".join(reasons))


class _FleetMoved(Exception):
    """What placement relied on changed before the binding transaction started."""


def check_transition(deployment: Deployment, target: str) -> None:
    if target not in Deployment.TRANSITIONS[deployment.state]:
        allowed = ", ".join(sorted(Deployment.TRANSITIONS[deployment.state])) or "none"
        raise ValidationError(f"deployment {deployment.name} cannot go from {deployment.state} to {target}; allowed: {allowed}")


def _transition(deployment: Deployment, target: str, message: str = "") -> None:
    check_transition(deployment, target)
    before = deployment.state
    deployment.state = target
    deployment.state_message = message[:2000]
    deployment.save(update_fields=["state", "state_message", "updated_at"])
    audit.record(f"deployment.{target}", obj=deployment, before={"state": before}, after={"state": target, "message": message[:500]})
    events.publish_deployment_state(deployment, before)


def _say(deployment: Deployment, message: str) -> None:
    if deployment.state_message != message[:2000]:
        deployment.state_message = message[:2000]
        deployment.save(update_fields=["state_message", "updated_at"])


def _partition(node: str, gpu_index: int, partition_index: int | None) -> Partition:
    return Partition.objects.select_related("gpu__node").get(
        gpu__node__name=node, gpu__index=gpu_index, index=partition_index or 0
    )


def _planned_partition(slot: dict[str, Any]) -> Partition:
    """The partition a plan put a replica on, only while its GPU runs the planned compute mode:
    the same index exists in other modes, with another size (CPX p0 is 24 GiB, SPX p0 192)."""
    part = _partition(slot["node"], slot["gpu_index"], slot["partition_index"])
    if part.gpu.compute_mode != slot["compute_mode"]:
        raise Partition.DoesNotExist(f"{part.gpu} is {part.gpu.compute_mode}, planned {slot['compute_mode']}")
    return part


def _user(requested_by: Any) -> Any:
    return requested_by if getattr(requested_by, "pk", None) else None


# One agent process runs a node's reconfigurations (Celery worker thread) and its sweeper
# (another thread), and both reconcile the node's replicas: serialize them per node, so one
# never writes the runtime state from slots the other has just changed (e.g. restart an old
# copy the drain had stopped, right before amd-smi changes its GPU).
_NODE_LOCKS: dict[str, threading.RLock] = {}
_NODE_LOCKS_GUARD = threading.Lock()


def _node_lock(node: Node) -> threading.RLock:
    with _NODE_LOCKS_GUARD:
        return _NODE_LOCKS.setdefault(node.name, threading.RLock())


def _move_wait_s() -> float:
    return min(float(getattr(settings, "SERVING_MOVE_START_WAIT_S", MOVE_START_WAIT_S)), settings.RECONFIGURATION_LEASE_S / 2)


# --- sizing ---------------------------------------------------------------------------------

# Marks the part of a deployment's state message that says its sizing no longer fits.
SIZING_MARK = "no longer fits its partitions"


def sizing_snapshot(profile: ModelProfile) -> dict[str, Any]:
    """The sizing a deployment is placed with (kept on the row: an admin's later edit of the
    model is compared with it, and its replicas stay counted by the GPUs it was placed on)."""
    model, precision = profile.model, profile.precision
    return {
        "model": model.hf_id, "precision": precision.code, "bytes_per_weight": float(precision.bytes_per_weight),
        "gpu_model": profile.gpu_model, "total_params_b": model.total_params_b, "num_layers": model.num_layers,
        "context_tokens": profile.context_tokens, "concurrent_sequences": profile.concurrent_sequences,
        "weights_gb": profile.weights_gb, "kv_cache_gb": profile.kv_cache_gb, "overhead_gb": profile.overhead_gb,
        "memory_required_gb": profile.memory_required_gb, "gpus_needed": profile.gpus_needed,
        "per_gpu_gb": profile.per_gpu_gb, "replica_memory_gb": profile.replica_memory_gb,
    }


def _placed_gpus(deployment: Deployment) -> int:
    """The GPUs (partitions) per replica the deployment was placed with: its snapshot's, else
    (rows older than snapshots) its profile's now."""
    return int((deployment.sizing_snapshot or {}).get("gpus_needed") or deployment.profile.gpus_needed or 1)


def _sizing_misfit(deployment: Deployment, partition_gb: dict[int, list[float]]) -> Misfit | None:
    """Whether the profile's sizing now fits the partitions its replicas hold (``partition_gb``:
    replica -> memory of each partition it holds): None, or what no longer fits."""
    profile = deployment.profile
    need = profile.replica_memory_gb
    gpus = profile.gpus_needed or 1
    smallest = [min(gbs) for gbs in partition_gb.values() if gbs and min(gbs) > 0]
    if not smallest:
        return None
    have = min(smallest)
    held = min(len(gbs) for gbs in partition_gb.values() if gbs)
    details = []
    if gpus > held:
        details.append(f"it now needs {gpus} GPUs per replica, its replicas have {held}")
    if need <= have + 1e-6 and not details:
        return None
    placed = (deployment.sizing_snapshot or {}).get("replica_memory_gb")
    if placed is not None:
        details.append(f"placed for {float(placed):.4g} GiB")
    return Misfit(name=deployment.name, need_gb=need, have_gb=have, detail="; ".join(details))


def _sizing_message(misfit: Misfit) -> str:
    return f"{SIZING_MARK} since its model's sizing changed: {misfit.describe().removeprefix(misfit.name + ' ')}"


def recheck_sizing(*, profile_ids: Sequence[int]) -> list[Misfit]:
    """After the catalog changed these profiles: mark the bound deployments that their current
    sizing no longer fits ``degraded`` (and the ones that fit again ``running``), in the
    caller's transaction; returns what no longer fits."""
    with transaction.atomic():
        deployments = list(Deployment.objects.filter(profile_id__in=profile_ids, state__in=BOUND)
                           .select_related("profile__model", "profile__precision").order_by("name"))
        if not deployments:
            return []
        memory = _slot_memory([d.pk for d in deployments])
        misfits = [m for d in deployments if (m := _sizing_misfit(d, memory.get(d.pk, {}))) is not None]
        settle_deployments(only=[d.pk for d in deployments])
    return misfits


def _slot_memory(ids: Sequence[int]) -> dict[int, dict[int, list[float]]]:
    """deployment -> replica -> memory (GiB) of each partition its active slots hold (its
    retiring ones while it has none: a replica moving make-before-break)."""
    active: dict[int, dict[int, list[float]]] = {}
    retiring: dict[int, dict[int, list[float]]] = {}
    for dep_id, replica, state, gb in DeploymentSlot.objects.filter(deployment_id__in=ids).values_list(
            "deployment_id", "replica", "state", "partition__memory_gb"):
        into = active if state == ACTIVE_SLOT else retiring
        into.setdefault(dep_id, {}).setdefault(replica, []).append(float(gb or 0.0))
    for dep_id, replicas in retiring.items():
        for replica, gbs in replicas.items():
            active.setdefault(dep_id, {}).setdefault(replica, gbs)
    return active


# --- direct creation -------------------------------------------------------------------------

def create_deployment(*, spec: DemandSpec, requested_by: Any = None) -> Deployment:
    """Place ``spec`` on the current layout (no repartition) and bind its partitions.

    Placement runs on a snapshot, outside any transaction and holding no lock: first on the
    nodes that can take the demand now (``_candidate_nodes``, a bounded number, so its cost does
    not grow with the fleet), on the whole fleet only when they cannot hold it all (the reasons
    and the suggested plan then come from the whole fleet). The commit (``_bind_placed``) is a
    short transaction that locks the chosen GPUs' rows only, checks that what placement saw
    there is unchanged (modes, health, operations, occupants), and inserts one slot per chosen
    partition: a partition holds at most one slot (a unique constraint), so a partition another
    request took in between fails the insert instead of being booked twice. Such a conflict
    places again on a fresh snapshot, after a short random pause and taking turns with the
    other creates that lost one (``_placement_turn``), at most ``PLACE_ATTEMPTS`` times; then
    PlacementConflict with ``code="contended"``. No Node row is ever locked, so the agents'
    heartbeats and inventory syncs never wait for a placement.

    Raises ValidationError for bad input and PlacementConflict (with a suggested plan when a
    repartition would help) when it does not fit. The node agents start it.
    """
    validate_demands([spec])
    demand = spec.demand()
    budget = exact_time_budget_s()
    moved = ""
    for attempt in range(PLACE_ATTEMPTS):
        if attempt:
            time.sleep(random.uniform(0, PLACE_BACKOFF_S * 2 ** attempt))  # noqa: S311 - jitter, not security
        try:
            with _placement_turn(contended=attempt > 0):
                fleet, result = _place_on_snapshot(demand, budget)
                if result.ok():
                    deployment = _bind_placed(spec, fleet, result.assignments, requested_by)
        except _FleetMoved as exc:
            counters.count_placement("deployment", conflict=True)
            moved = str(exc)
            continue
        if not result.ok():
            break
        counters.count_placement("deployment", result)
        return deployment
    else:
        raise PlacementConflict([f"other requests kept taking the partitions chosen for {spec.name} "
                                 f"({PLACE_ATTEMPTS} attempts; last: {moved}); try again"], code="contended")
    counters.count_placement("deployment", result)
    reasons = [u.reason for u in result.unplaced]
    suggestion = None
    try:
        suggestion = create_plan(demands=[spec], requested_by=requested_by)
        if not suggestion.result.get("ok"):
            suggestion.delete()
            suggestion = None
    except planner.PlanError:
        suggestion = None
    excluded = [{"node": e.node, "gpu_index": e.gpu_index, "reason": e.reason} for e in result.excluded]
    raise PlacementConflict(reasons, suggestion, excluded)


@contextmanager
def _placement_turn(*, contended: bool) -> Iterator[None]:
    """Around one placement attempt: nothing the first time. After a conflict, a turn among
    the creates that lost one, so concurrent creates that keep choosing the same best
    partitions go one after the other instead of colliding until they give up: on PostgreSQL a
    transaction-scoped advisory lock, on SQLite an exclusive lock on a file beside the database
    (every process using that file shares it; a transaction there would hold SQLite's one
    write lock across placement). Only contended creates take it: it is no row lock, and the
    agents' heartbeats and syncs, reads, and first attempts never wait for it."""
    if not contended:
        yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PLACEMENT_TURN_LOCK])
            yield
        return
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or not name or name == ":memory:" or name.startswith("file:"):
        with _TURN_IN_PROCESS:
            yield
        return
    with open(f"{name}.placement-turn", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


_TURN_IN_PROCESS = threading.Lock()  # an in-memory database: one process


def candidate_nodes_limit() -> int:
    """How many nodes a direct placement looks at first (setting DEPLOYMENT_CANDIDATE_NODES)."""
    value = getattr(settings, "DEPLOYMENT_CANDIDATE_NODES", CANDIDATE_NODES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"DEPLOYMENT_CANDIDATE_NODES must be a whole number >= 1, got {value!r}")
    return value


def _place_on_snapshot(demand: placement.Demand, budget: float) -> tuple[placement.Fleet, placement.Placement]:
    """Placement of ``demand`` on a fresh read of the fleet: on its candidate nodes when they
    hold every replica, else on the whole fleet."""
    candidates = _candidate_nodes(demand)
    if candidates:
        fleet = fleet_state(node_ids=candidates)
        result = placement.place(fleet, [demand], allow_repartition=False, time_budget_s=budget)
        if result.ok():
            return fleet, result
    fleet = fleet_state()
    return fleet, placement.place(fleet, [demand], allow_repartition=False, time_budget_s=budget)


def _candidate_nodes(demand: placement.Demand) -> list[int]:
    """Nodes that can take a replica of ``demand`` now, enough for placement to choose well
    (``candidate_nodes_limit()``, one per replica when it spreads, and free partitions for twice
    the replicas), read window by window in node order so the cost does not grow with the
    fleet; nothing is locked.

    A candidate has a free partition that holds a replica (with tensor parallelism ``t``: ``t``
    free SPX GPUs) on a usable GPU of an allowed model (healthy, schedulable, under no
    operation, on a node with a known memory mode and no layout problem); pins restrict it.
    Within a window, nodes with such a partition on a GPU already in use come first (placement
    fills GPUs in use before it opens empty ones), then the smallest such partition; windows go
    in node order (first fit by node: the fleet fills from one end, keeping empty nodes empty).
    A node without such a partition cannot hold a replica without a repartition, so leaving it
    out changes nothing but the cost; placement still checks everything on what it reads."""
    tp = max(1, demand.tensor_parallel)
    want_nodes = max(candidate_nodes_limit(), demand.replicas if demand.spread or demand.soft_spread else 1)
    want_free = 2 * demand.replicas * tp
    busy = Reconfiguration.objects.active()
    free = (Partition.objects.filter(slot__isnull=True, memory_gb__gte=demand.memory_gb - 1e-6, gpu__schedulable=True,
                                     gpu__node__layout_problem="")
            .exclude(gpu__health=GPU.Health.UNHEALTHY).exclude(gpu__gpu_model="").exclude(gpu__compute_mode="")
            .exclude(gpu__node__memory_mode="").exclude(gpu__node__backend=Node.Backend.IMPORTED)
            .exclude(gpu_id__in=busy.filter(gpu__isnull=False).values("gpu_id"))
            .exclude(gpu__node_id__in=busy.filter(kind=Reconfiguration.Kind.MEMORY).values("node_id")))
    if demand.gpu_models:
        free = free.filter(gpu__gpu_model__in=list(demand.gpu_models))
    nodes = Node.objects.order_by("pk")
    if demand.pin_node:
        nodes = nodes.filter(name=demand.pin_node)
        if demand.pin_gpu is not None and tp == 1:
            free = free.filter(gpu__index=demand.pin_gpu)
    if tp > 1:
        free = free.filter(gpu__compute_mode="SPX")
    in_use = DeploymentSlot.objects.filter(partition__gpu_id=OuterRef("gpu_id"))
    ranked = (free.annotate(gpu_in_use=Exists(in_use)).values("gpu__node_id")
              .annotate(free=Count("pk"), smallest=Min("memory_gb"),
                        in_use=Max(Case(When(gpu_in_use=True, then=Value(1)), default=Value(0))))
              .filter(free__gte=tp).order_by("-in_use", "smallest", "gpu__node_id"))
    found: list[int] = []
    free_found, after = 0, 0
    while len(found) < want_nodes or free_found < want_free:
        window = list(nodes.filter(pk__gt=after).values_list("pk", flat=True)[:CANDIDATE_WINDOW])
        if not window:
            break
        after = window[-1]
        for row in ranked.filter(gpu__node_id__in=window):
            found.append(row["gpu__node_id"])
            free_found += row["free"]
            if len(found) >= want_nodes and free_found >= want_free:
                break
    return found


def _same_ground(before: placement.Fleet, now: placement.Fleet, gpus: set[tuple[str, int]]) -> bool:
    """Whether the GPUs placement chose look the same now (node and GPU state, occupants)."""
    def view(fleet: placement.Fleet) -> tuple[dict[Any, Any], list[Any]]:
        states = {(n.name, g.index): (n.memory_mode, n.schedulable, g) for n in fleet.nodes for g in n.gpus
                  if (n.name, g.index) in gpus}
        occupants = sorted((o.node, o.gpu_index, o.partition_index, o.deployment, o.replica) for o in fleet.occupants
                           if (o.node, o.gpu_index) in gpus)
        return states, occupants

    return view(before) == view(now)


def _bind_placed(spec: DemandSpec, fleet: placement.Fleet, assignments: Sequence[placement.Assignment],
                 requested_by: Any) -> Deployment:
    """The conditional commit of a placement made on ``fleet`` (a snapshot): _FleetMoved when
    what it relied on changed, else the deployment with its partitions bound."""
    gpus = {(s.node, s.gpu_index) for a in assignments for s in a.slots}
    try:
        with transaction.atomic():
            # Short, and no placement in it. Lock the chosen GPUs' rows, in a fixed order (two
            # creates never deadlock), and never a Node row: agents' heartbeats and syncs write
            # those. A reconfiguration requested meanwhile on these GPUs waits for this commit
            # (its row references the GPU), or this check sees it.
            locked = lock_gpus(gpus)
            if len(locked) != len(gpus):
                raise _FleetMoved("a chosen GPU is missing from the inventory")
            errors = occupancy.check_names(names=[spec.name])
            if errors:
                raise ValidationError(errors)
            if not _same_ground(fleet, fleet_state(node_ids=sorted(set(locked))), gpus):
                raise _FleetMoved("other deployments or operations changed the chosen GPUs")
            try:
                with transaction.atomic():
                    deployment = Deployment.objects.create(
                        name=spec.name, profile=spec.profile, replicas=spec.replicas, priority=spec.priority,
                        spread=spec.spread, pin_node=spec.pin_node, pin_gpu_index=spec.pin_gpu_index,
                        state=Deployment.State.SCHEDULED,
                        state_message="partitions bound; waiting for the node agent to start it",
                        requested_by=_user(requested_by), sizing_snapshot=sizing_snapshot(spec.profile),
                    )
            except IntegrityError:
                # Another request created an active deployment of this name since the check.
                raise ValidationError({"name": f"an active deployment is already called {spec.name!r}"}) from None
            try:
                _bind(deployment, assignments)
            except IntegrityError:
                raise _FleetMoved("a chosen partition was taken concurrently") from None
            except Partition.DoesNotExist:
                raise _FleetMoved("a chosen partition is missing from the inventory") from None
            audit.record("deployment.create", obj=deployment, after={
                "profile": spec.profile.pk, "replicas": spec.replicas, "priority": spec.priority,
                "partitions": list(deployment.slots.values_list("partition_id", flat=True))})
    except OperationalError as exc:
        # PostgreSQL broke a lock cycle with an inventory sync, or SQLite's writer lock timed
        # out: nothing was written; place again.
        raise _FleetMoved(f"the database refused the commit ({exc})") from None
    return deployment


def _bind(deployment: Deployment, assignments: Sequence[placement.Assignment]) -> None:
    with transaction.atomic():
        for assignment in assignments:
            for slot in assignment.slots:
                DeploymentSlot.objects.create(
                    deployment=deployment, replica=assignment.replica,
                    partition=_partition(slot.node, slot.gpu_index, slot.partition_index),
                )
        events.publish_replicas_changed([deployment.pk])


def stop_deployment(*, deployment: Deployment, reason: str = "stopped by request") -> Deployment:
    """Free its partitions (the node agent stops the replicas) and cancel its moves."""
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if not deployment.is_active:
            return deployment
        _transition(deployment, Deployment.State.STOPPED, reason)
        _release(deployment, f"the deployment stopped: {reason}")
    return deployment


def _release(deployment: Deployment, why: str) -> None:
    deployment.slots.all().delete()
    deployment.moves.filter(state__in=ReplicaMove.ACTIVE_STATES).update(
        state=ReplicaMove.State.CANCELLED, message=why[:2000], finished_at=timezone.now())


# --- applying a plan ---------------------------------------------------------------------------

def apply_plan_deployments(*, plan: Plan, result: dict[str, Any], user: Any) -> list[Deployment]:
    """Inside planning's apply_plan transaction: the plan's new deployments, waiting for their
    partitions, and a move for each displaced replica (its deployment keeps its name and
    replica count). Returns the deployments created or changed."""
    deployments = []
    demands = {d["name"]: d for d in plan.request.get("demands", [])}
    by_key: dict[str, list[dict[str, Any]]] = {}
    for assignment in result["assignments"]:
        by_key.setdefault(assignment["deployment"], []).append(assignment)
    profiles = ModelProfile.objects.with_related().in_bulk([demands[name]["profile"] for name in by_key])
    for name, assignments in by_key.items():
        d = demands[name]
        deployments.append(Deployment.objects.create(
            sizing_snapshot=sizing_snapshot(profiles[d["profile"]]) if d["profile"] in profiles else {},
            # spread: a boolean in older plans, "none" | "soft" | "hard" since soft spread (hard is the stored flag)
            name=name, profile_id=d["profile"], replicas=d["replicas"], priority=d["priority"],
            spread=d["spread"] is True or d["spread"] == "hard",
            pin_node=Node.objects.filter(name=d["pin_node"]).first() if d["pin_node"] else None,
            pin_gpu_index=d["pin_gpu_index"], plan=plan, requested_by=user,
            planned_slots=[{"replica": a["replica"], "slots": a["slots"]} for a in assignments],
            state_message="waiting for the plan's reconfigurations",
        ))
    for moved in result["displaced"]:
        if not moved.get("to"):
            continue
        deployment = Deployment.objects.select_for_update().filter(name=moved["deployment"], state__in=BOUND).first()
        if deployment is None:
            continue
        _plan_move(deployment, moved, plan)
        if all(d.pk != deployment.pk for d in deployments):
            deployments.append(deployment)
    return deployments


def _plan_move(deployment: Deployment, moved: dict[str, Any], plan: Plan) -> ReplicaMove:
    from serving.runtime import runtime_for

    replica = moved["replica"]
    target = list(moved["to"])
    now = timezone.now()
    deployment.moves.filter(replica=replica, state__in=ReplicaMove.ACTIVE_STATES).update(
        state=ReplicaMove.State.CANCELLED, message=f"superseded by plan #{plan.pk}", finished_at=now)
    old = list(deployment.slots.filter(replica=replica).select_related("partition__gpu__node"))
    source = [{"node": s.partition.gpu.node.name, "gpu_index": s.partition.gpu.index, "partition_index": s.partition.index}
              for s in old]
    strategy, why = (MBB, "") if moved.get("move") == "make-before-break" else (STS, "")
    if strategy == MBB:
        nodes = {n.name: n for n in Node.objects.filter(name__in={s["node"] for s in target})}
        if not all(name in nodes and runtime_for(nodes[name]) is not None for name in {s["node"] for s in target}):
            strategy, why = STS, "; no serving runtime on the target node to confirm the new copy runs"
    if strategy == MBB:
        try:
            with transaction.atomic():
                for s in target:
                    DeploymentSlot.objects.create(deployment=deployment, replica=replica, partition=_planned_partition(s))
                DeploymentSlot.objects.filter(pk__in=[s.pk for s in old]).update(state=RETIRING)
        except (Partition.DoesNotExist, IntegrityError) as exc:
            strategy, why = STS, f"; its new partition is not free now ({exc})"
    move = ReplicaMove.objects.create(
        deployment=deployment, replica=replica, plan=plan, strategy=strategy,
        state=ReplicaMove.State.STARTING if strategy == MBB else ReplicaMove.State.WAITING,
        source=source, target=target, message=f"planned by plan #{plan.pk}{why}",
    )
    _say(deployment, _moves_message(deployment, [move]))
    audit.record("deployment.move", obj=deployment, after={
        "replica": replica, "plan": plan.pk, "strategy": strategy, "from": describe_slots(source), "to": describe_slots(target)})
    return move


def _move_phrase(move: ReplicaMove) -> str:
    where = describe_slots(move.target)
    plan = f"plan #{move.plan_id}" if move.plan_id else "a plan"
    if move.strategy == MBB:
        return (f"replica {move.replica} moving to {where} (make-before-break, {plan}): "
                "the new copy starts first, the old one stops once it runs")
    if move.state == ReplicaMove.State.WAITING:
        return (f"replica {move.replica} will move to {where} (stop then start, {plan}): its new partition is not free "
                "until the plan's reconfigurations, so it stops at the drain")
    if move.state == ReplicaMove.State.STOPPED:
        return f"replica {move.replica} stopped to move to {where} (stop then start, {plan}): waiting for the plan's reconfigurations"
    return f"replica {move.replica} starting on {where} ({plan})"


def _moves_message(deployment: Deployment, moves: Sequence[ReplicaMove], extra: Sequence[str] = ()) -> str:
    active = {m.replica: m for m in deployment.moves.filter(state__in=ReplicaMove.ACTIVE_STATES)}
    active.update({m.replica: m for m in moves if m.is_active})
    return "; ".join([_move_phrase(m) for _, m in sorted(active.items())] + list(extra))


# --- the node agent's reconciler ------------------------------------------------------------

def schedule_pending_deployments() -> list[Deployment]:
    """Bind pending deployments whose planned partitions now exist (after the plan's
    reconfigurations); fail those whose plan's reconfigurations failed. The same for
    stop-then-start moves (``_bind_moves``)."""
    scheduled = []
    for pk in list(Deployment.objects.filter(state=Deployment.State.PENDING).values_list("pk", flat=True)):
        with transaction.atomic():
            # Every agent runs this: lock the row and re-check, so one of them binds it.
            deployment = (Deployment.objects.select_for_update(of=("self",))
                          .filter(pk=pk, state=Deployment.State.PENDING).select_related("plan").first())
            if deployment is None:
                continue
            ops = list(deployment.plan.reconfigurations.all()) if deployment.plan else []
            broken = [op for op in ops if op.state in ("failed", "rolled_back")]
            if broken:
                _transition(deployment, Deployment.State.FAILED,
                            "; ".join(f"reconfiguration #{op.pk} {op.state}: {op.error_message}" for op in broken))
                continue
            if any(not op.is_terminal for op in ops):
                continue
            try:
                with transaction.atomic():
                    for entry in deployment.planned_slots:
                        for slot in entry["slots"]:
                            DeploymentSlot.objects.create(deployment=deployment, replica=entry["replica"],
                                                          partition=_planned_partition(slot))
            except (Partition.DoesNotExist, IntegrityError) as exc:
                _transition(deployment, Deployment.State.FAILED, f"planned partitions not available: {exc}")
                continue
            _transition(deployment, Deployment.State.SCHEDULED, "partitions bound; waiting for the node agent to start it")
            scheduled.append(deployment)
    _bind_moves()
    return scheduled


def _bind_moves() -> None:
    """Stop-then-start moves whose plan's reconfigurations finished: bind the new partitions
    (in the planned modes); cancel or fail the move when the reconfigurations failed."""
    waiting = (ReplicaMove.State.WAITING, ReplicaMove.State.STOPPED)
    for pk in list(ReplicaMove.objects.filter(strategy=STS, state__in=waiting).values_list("pk", flat=True)):
        with transaction.atomic():
            move = (ReplicaMove.objects.select_for_update(of=("self",)).filter(pk=pk, state__in=waiting)
                    .select_related("plan", "deployment").first())
            if move is None:
                continue
            now = timezone.now()
            ops = list(move.plan.reconfigurations.all()) if move.plan else []
            broken = [op for op in ops if op.state in ("failed", "rolled_back")]
            held = move.deployment.slots.filter(replica=move.replica).exists()
            if broken or move.deployment.state not in BOUND:
                why = "; ".join(f"reconfiguration #{op.pk} {op.state}: {op.error_message}" for op in broken) or "the deployment stopped"
                if held:
                    # Never drained: the old copy still serves where it is.
                    move.state, move.message = ReplicaMove.State.CANCELLED, f"{why}; replica {move.replica} stays where it is"
                elif move.deployment.state in BOUND and _rebind_source(move):
                    # Drained, then the change failed (rolled back): back where it was.
                    move.state, move.message = ReplicaMove.State.STARTING, f"{why}; replica {move.replica} restarts where it was"
                    move.target = move.source
                    move.save(update_fields=["state", "message", "target"])
                    continue
                else:
                    move.state, move.message = ReplicaMove.State.FAILED, f"{why}; replica {move.replica} has no partition"
                move.finished_at = now
                move.save(update_fields=["state", "message", "finished_at"])
                continue
            if any(not op.is_terminal for op in ops):
                continue
            try:
                with transaction.atomic():
                    # Not drained (its GPU was already at the target): the old copy goes now.
                    move.deployment.slots.filter(replica=move.replica).delete()
                    for slot in move.target:
                        DeploymentSlot.objects.create(deployment=move.deployment, replica=move.replica,
                                                      partition=_planned_partition(slot))
            except (Partition.DoesNotExist, IntegrityError) as exc:
                move.state, move.message, move.finished_at = ReplicaMove.State.FAILED, f"planned partitions not available: {exc}", now
                move.save(update_fields=["state", "message", "finished_at"])
                continue
            move.state = ReplicaMove.State.STARTING
            move.save(update_fields=["state"])


def _rebind_source(move: ReplicaMove) -> bool:
    """Bind a drained replica back to the partitions it had, if they still exist, are free
    and hold it; False (nothing bound) otherwise."""
    need = move.deployment.profile.replica_memory_gb
    try:
        with transaction.atomic():
            for slot in move.source:
                part = _partition(slot["node"], slot["gpu_index"], slot["partition_index"])
                if (part.memory_gb or 0.0) < need:
                    raise Partition.DoesNotExist(f"{part} is {part.memory_gb} GiB now")
                DeploymentSlot.objects.create(deployment=move.deployment, replica=move.replica, partition=part)
    except (Partition.DoesNotExist, IntegrityError):
        return False
    return True


def _node_slots(node: Node) -> list[DeploymentSlot]:
    return list(DeploymentSlot.objects.filter(partition__gpu__node=node, deployment__state__in=BOUND)
                .select_related("deployment__profile__model", "partition__gpu"))


def _run_node(node: Node) -> None:
    """Make the node run exactly its bound slots (start new ones, stop freed ones)."""
    from serving.runtime import runtime_for

    runtime = runtime_for(node)
    if runtime is not None:
        _apply_runtime(node, runtime)


def _apply_runtime(node: Node, runtime: Any, *, supervise: bool = False) -> bool:
    """Hand the node's bound slots to its runtime as copies and record what it says: the
    ``Replica`` rows, ``started_at`` of the slots whose copy is ready (cleared while it is
    failed), and a degraded deployment for a failed copy. Returns whether anything changed."""
    from serving.runtime.base import FAILED, READY, STOPPED

    slots = _node_slots(node)
    copies, bad = _copies(node, slots)
    statuses = dict((runtime.supervise if supervise else runtime.reconcile)(node, list(copies.values())))
    for key, reason in bad.items():
        statuses[key] = _failed_status(key, reason)
    now = timezone.now()
    existing = {r.key: r for r in Replica.objects.filter(node=node).exclude(state=STOPPED)}
    groups = {key: group for key, group in _group_copies(slots).items() if key in statuses}
    _prune_stopped_rows(node, now)
    if not _needs_writing(runtime.name, groups, statuses, existing):
        return False  # the usual tick: nothing to write, so no write transaction (SQLite has one writer)
    changed = False
    with transaction.atomic():
        for key, copy_slots in groups.items():
            status = statuses[key]
            row = existing.pop(key, None)
            changed |= _write_replica(node, runtime.name, row, copy_slots, status, now)
            ready_ids = [s.pk for s in copy_slots if s.started_at is None]
            if status.state == READY and ready_ids:
                DeploymentSlot.objects.filter(pk__in=ready_ids).update(started_at=now)
                changed = True
            elif status.state == FAILED and any(s.started_at is not None for s in copy_slots):
                DeploymentSlot.objects.filter(pk__in=[s.pk for s in copy_slots]).update(started_at=None)
                changed = True
            if status.state == FAILED:
                _degrade_for_failed_copy(copy_slots[0].deployment, copy_slots[0].replica, status.reason)
        for row in existing.values():  # copies whose slots are gone: stopped by the runtime above
            status = statuses.get(row.key)
            row.state, row.endpoint = STOPPED, ""
            row.reason = (status.reason if status and status.reason else "its partitions were freed")[:2000]
            row.save(update_fields=["state", "endpoint", "reason", "updated_at"])
            changed = True
        Deployment.objects.filter(pk__in={s.deployment_id for s in slots}, runtime="").update(runtime=runtime.name)
        if changed:

            events.publish_replicas_changed({s.deployment_id for s in slots} | {r.deployment_id for r in existing.values()})
    return changed


def _needs_writing(runtime: str, groups: dict[str, list[DeploymentSlot]], statuses: dict[str, Any],
                   existing: dict[str, Replica]) -> bool:
    """Whether recording the runtime's statuses would change any row (checked in memory)."""
    from serving.runtime.base import FAILED, READY

    if set(existing) - set(groups):
        return True  # a copy whose slots are gone: its row says stopped now
    for key, copy_slots in groups.items():
        status, row = statuses[key], existing.get(key)
        deployment = copy_slots[0].deployment
        if row is None or _changed_fields(row, _replica_values(runtime, status)):
            return True
        if not deployment.runtime:
            return True
        if status.state == READY and any(s.started_at is None for s in copy_slots):
            return True
        if status.state == FAILED and (any(s.started_at is not None for s in copy_slots)
                                       or f"replica {copy_slots[0].replica} failed" not in deployment.state_message):
            return True
    return False


_PRUNED_AT: dict[str, float] = {}


def _prune_stopped_rows(node: Node, now: Any) -> None:
    """Delete the node's stopped copies' rows older than REPLICA_ROW_KEEP, once a minute."""
    if time.monotonic() - _PRUNED_AT.get(node.name, -1e9) < 60:
        return
    _PRUNED_AT[node.name] = time.monotonic()
    Replica.objects.filter(node=node, state=Replica.State.STOPPED, updated_at__lt=now - REPLICA_ROW_KEEP).delete()


# Stopped copies' rows stay this long (their reason is what an operator reads), then go.
REPLICA_ROW_KEEP = timedelta(hours=1)


def _failed_status(key: str, reason: str) -> Any:
    from serving.runtime.base import FAILED, CopyStatus

    return CopyStatus(key=key, state=FAILED, reason=reason)


def _copy_key(deployment_id: int, replica: int, slots: Sequence[DeploymentSlot]) -> str:
    return f"d{deployment_id}-r{replica}-p{min(s.partition_id for s in slots)}"


def _group_copies(slots: Sequence[DeploymentSlot]) -> dict[str, list[DeploymentSlot]]:
    """Slots by copy: a replica's active slots are one copy, its retiring ones (the old copy of
    a make-before-break move) another."""
    groups: dict[tuple[int, int, str], list[DeploymentSlot]] = {}
    for slot in slots:
        groups.setdefault((slot.deployment_id, slot.replica, slot.state), []).append(slot)
    return {_copy_key(dep, replica, group): group for (dep, replica, _), group in groups.items()}


def _copies(node: Node, slots: Sequence[DeploymentSlot]) -> tuple[dict[str, Any], dict[str, str]]:
    """The copies the node's bound slots ask for, and the keys of those that cannot run (why)."""
    from serving.isolation import DeviceBinding, IsolationError, workload_spec
    from serving.runtime.base import CopySpec

    per_gpu = Counter(Partition.objects.filter(gpu__node=node).values_list("gpu_id", flat=True))
    copies: dict[str, Any] = {}
    bad: dict[str, str] = {}
    for key, group in _group_copies(slots).items():
        deployment = group[0].deployment
        profile = deployment.profile
        model = profile.model
        bindings = tuple(
            DeviceBinding(node=node.name, gpu_index=s.partition.gpu.index, partition_index=s.partition.index,
                          logical_index=s.partition.logical_index, render_node=s.partition.render_node or None,
                          memory_gb=s.partition.memory_gb or 0.0)
            for s in sorted(group, key=lambda s: s.partition.logical_index)
        )
        copy = CopySpec(
            key=key, deployment=deployment.name, replica=group[0].replica, model=model.hf_id, bindings=bindings,
            memory_gb=profile.replica_memory_gb, max_model_len=min(profile.context_tokens, model.context_length),
            params_b=model.active_params_b or model.total_params_b,
            compute_share=1.0 / max(1, per_gpu[group[0].partition.gpu_id]), command=profile.serving_command,
        )
        try:
            workload_spec(bindings=bindings, model_id=copy.model, memory_required_gb=copy.memory_gb,
                          max_model_len=copy.max_model_len, served_model_name=copy.deployment)
        except IsolationError as exc:
            bad[key] = f"cannot start on these partitions: {exc}"
            continue
        copies[key] = copy
    return copies, bad


def _replica_values(runtime: str, status: Any) -> dict[str, Any]:
    """A copy's row fields from its runtime status."""
    from datetime import UTC, datetime

    def when(epoch: float | None) -> Any:
        return datetime.fromtimestamp(epoch, tz=UTC) if epoch else None

    values = {
        "state": status.state, "endpoint": status.endpoint, "pid": status.pid, "port": status.port,
        "restarts": status.restarts, "reason": status.reason[:2000], "runtime": runtime,
        "started_at": when(status.started_at), "ready_at": when(status.ready_at),
    }
    if status.log_tail or status.state in ("failed", "restarting"):
        values["log_tail"] = status.log_tail[-8000:]
    return values


def _changed_fields(row: Replica, values: dict[str, Any]) -> list[str]:
    """The fields ``values`` would change. Times of a copy already recorded in the same state
    are kept (a runtime without memory of its own, the emulated one, reports "now" each time)."""
    kept = row.state == values["state"]
    return [f for f, v in values.items()
            if getattr(row, f) != v and not (kept and f in ("started_at", "ready_at") and getattr(row, f) is not None)]


def _write_replica(node: Node, runtime: str, row: Replica | None, slots: Sequence[DeploymentSlot], status: Any, now: Any) -> bool:
    """Create or update one copy's row from its status; True when something changed."""
    first = slots[0]
    values = _replica_values(runtime, status)
    if row is None:
        Replica.objects.update_or_create(key=_copy_key(first.deployment_id, first.replica, slots), defaults={
            **values, "deployment_id": first.deployment_id, "replica": first.replica, "node": node,
            "served_model": first.deployment.name,
            "partitions": [{"gpu_index": s.partition.gpu.index, "partition_index": s.partition.index,
                            "logical_index": s.partition.logical_index} for s in slots],
        })
        return True
    dirty = _changed_fields(row, values)
    if not dirty:
        return False
    for field in dirty:
        setattr(row, field, values[field])
    row.save(update_fields=[*dirty, "updated_at"])
    return True


def _degrade_for_failed_copy(deployment: Deployment, replica: int, reason: str) -> None:
    message = f"replica {replica} failed: {reason}"[:2000]
    current = Deployment.objects.select_for_update().filter(pk=deployment.pk, state__in=BOUND).first()
    if current is None or message in current.state_message:
        return
    if current.state in (Deployment.State.SCHEDULED, Deployment.State.RUNNING):
        _transition(current, Deployment.State.DEGRADED, message)
    else:
        _say(current, "; ".join(filter(None, [message, current.state_message]))[:2000])


def _new_copy_runs(deployment: Deployment, replica: int) -> bool:
    need = deployment.profile.gpus_needed or 1
    return DeploymentSlot.objects.filter(deployment=deployment, replica=replica, state=ACTIVE_SLOT,
                                         started_at__isnull=False).count() >= need


def _finish_moves(node: Node, *, run: bool) -> dict[int, list[str]]:
    """On ``node``'s agent, after its runtime matches the database: stop the old copies here
    whose replica's new copy runs (or which no longer move), and finish the moves whose new
    copy runs with no old copy left. Returns deployment id -> notes on the moves finished."""
    release = []
    for slot in DeploymentSlot.objects.filter(partition__gpu__node=node, state=RETIRING).select_related("deployment__profile"):
        moving = slot.deployment.moves.filter(replica=slot.replica, strategy=MBB, state__in=ReplicaMove.ACTIVE_STATES).exists()
        if not moving or _new_copy_runs(slot.deployment, slot.replica):
            release.append(slot.pk)
    if release:
        DeploymentSlot.objects.filter(pk__in=release).delete()
        if run:
            _run_node(node)  # the old copies stop here, now that their new copies serve
    notes: dict[int, list[str]] = {}
    now = timezone.now()
    for move in ReplicaMove.objects.filter(state=ReplicaMove.State.STARTING).select_related("deployment__profile"):
        if not _new_copy_runs(move.deployment, move.replica):
            continue
        if move.started_at is None:
            move.started_at = now
            move.save(update_fields=["started_at"])
        if move.deployment.slots.filter(replica=move.replica, state=RETIRING).exists():
            continue  # its old copy's node agent stops it next
        move.state, move.finished_at = ReplicaMove.State.DONE, now
        move.message = f"replica {move.replica} runs on {describe_slots(move.target)}; the old copy stopped"
        move.save(update_fields=["state", "finished_at", "message"])
        note = f"replica {move.replica} moved to {describe_slots(move.target)}" + (f" (plan #{move.plan_id})" if move.plan_id else "")
        notes.setdefault(move.deployment_id, []).append(note)
        if move.deployment.state == Deployment.State.RUNNING:
            rest = _moves_message(move.deployment, [])
            _say(move.deployment, "; ".join(filter(None, [rest or "all replicas started", note])))
        audit.record("deployment.moved", obj=move.deployment, after={"replica": move.replica, "to": describe_slots(move.target)})
    return notes


def reconcile_node(*, node: Node) -> None:
    """Make the node's running replicas match the database (on its agent): bind what waited
    for partitions, start bound replicas, stop freed ones, carry moves on (the new copy
    first, then the old one), and make every deployment's state say what runs."""
    with _node_lock(node):
        _reconcile_node(node)


def supervise_node(*, node: Node) -> None:
    """The agent's supervision tick (every SERVING_SUPERVISE_S, in the agent's loops process):
    converge the node's runtime on its bound slots, probe and restart its processes, and write
    what changed into the ``Replica`` rows (and the slots' ``started_at``, the deployments'
    states). A node whose runtime has no processes only records its copies."""
    from serving.runtime import runtime_for

    runtime = runtime_for(node)
    if runtime is None:
        return
    with _node_lock(node):
        changed = _apply_runtime(node, runtime, supervise=True)
        if changed:
            notes = _finish_moves(node, run=True)
            settle_deployments(notes=notes)


def _reconcile_node(node: Node) -> None:
    from serving.runtime import runtime_for

    schedule_pending_deployments()
    runtime = runtime_for(node)
    if runtime is not None:
        _apply_runtime(node, runtime)
    else:
        slots = _node_slots(node)
        Deployment.objects.filter(pk__in={s.deployment_id for s in slots}, state="scheduled").exclude(
            state_message__startswith="scheduled on a node without"
        ).update(state_message="scheduled on a node without a serving runtime: start the replicas with the workload spec")
    notes = _finish_moves(node, run=runtime is not None)
    settle_deployments(notes=notes)


def _covers(counts: Counter[tuple[int, str]], replica: int, need: int) -> bool:
    """Whether the replica's active slots, or its retiring ones, cover the GPUs it needs."""
    return counts[(replica, ACTIVE_SLOT)] >= need or counts[(replica, RETIRING)] >= need


def _serving_suffix(serving: int, replicas: int) -> str:
    return f"{serving} of {replicas} replicas serving"


def settle_deployments(*, notes: dict[int, list[str]] | None = None, only: Sequence[int] | None = None) -> None:
    """Make each bound deployment's state say what its slots say.

    A replica is held when its active slots (or, while it moves make-before-break, its old
    retiring ones) cover the GPUs it needs (``gpus_needed``), and serving when those started.
    ``running``: every replica serving. ``degraded``: some replica not held (drained, between
    the stop and the start of a move, or its partitions removed from the inventory, e.g. by an
    import), with which and why. ``failed``: no replica held and no move bringing one back;
    what is left of its slots is freed. ``scheduled`` stays until every replica started.
    Replicas are counted by the GPUs the deployment was placed with (its sizing snapshot); when
    its profile's sizing now needs more than its partitions have (an admin edited the model),
    it is ``degraded`` with the numbers (``SIZING_MARK``) until the sizing fits again.
    ``only``: settle these deployments (default: every bound one)."""
    notes = notes or {}
    bound = Deployment.objects.filter(state__in=BOUND).select_related("profile")
    if only is not None:
        bound = bound.filter(pk__in=only)
    deployments = list(bound)
    if not deployments:
        return
    ids = [d.pk for d in deployments]
    memory = _slot_memory(ids)
    held: dict[int, Counter[tuple[int, str]]] = {pk: Counter() for pk in ids}
    started: dict[int, Counter[tuple[int, str]]] = {pk: Counter() for pk in ids}
    for dep_id, replica, state, started_at in DeploymentSlot.objects.filter(deployment_id__in=ids).values_list(
            "deployment_id", "replica", "state", "started_at"):
        held[dep_id][(replica, state)] += 1
        if started_at is not None:
            started[dep_id][(replica, state)] += 1
    moving: dict[int, dict[int, ReplicaMove]] = {pk: {} for pk in ids}
    for move in ReplicaMove.objects.filter(deployment_id__in=ids, state__in=ReplicaMove.ACTIVE_STATES):
        moving[move.deployment_id][move.replica] = move
    failed: dict[int, list[str]] = {}
    for dep_id, replica, reason in Replica.objects.filter(deployment_id__in=ids, state=Replica.State.FAILED).values_list(
            "deployment_id", "replica", "reason"):
        failed.setdefault(dep_id, []).append(f"replica {replica} failed: {reason}")
    for deployment in deployments:
        need = _placed_gpus(deployment)
        h, s, moves = held[deployment.pk], started[deployment.pk], moving[deployment.pk]
        misfit = _sizing_misfit(deployment, memory.get(deployment.pk, {}))
        sizing_note = _sizing_message(misfit) if misfit else ""

        replicas = range(deployment.replicas)
        missing = [r for r in replicas if not _covers(h, r, need)]
        serving = sum(1 for r in replicas if _covers(s, r, need))
        target: str
        if missing and len(missing) == deployment.replicas and not moves:
            target = Deployment.State.FAILED
        elif missing:
            target = Deployment.State.DEGRADED
        elif serving == deployment.replicas:
            target = Deployment.State.RUNNING
        else:
            target = deployment.state  # bound, starting: scheduled stays scheduled, degraded until it runs
        lost = [r for r in missing if r not in moves]
        if (failed.get(deployment.pk) or misfit) and target != Deployment.State.FAILED:
            target = Deployment.State.DEGRADED
        sizing_said = (sizing_note in deployment.state_message) if misfit else (SIZING_MARK not in deployment.state_message)
        if target == deployment.state and not moves and not failed.get(deployment.pk) and sizing_said and (
                target != Deployment.State.DEGRADED or deployment.state_message.endswith(_serving_suffix(serving, deployment.replicas))):
            continue  # nothing new to say
        if target == Deployment.State.RUNNING:
            message = "; ".join(filter(None, [_moves_message(deployment, []) or "all replicas started", *notes.get(deployment.pk, [])]))
        else:
            extra = []
            if lost:
                gone = ("its partitions are gone from the inventory (removed by an import or a sync)"
                        if deployment.state != Deployment.State.DEGRADED else "it has no partition")
                extra.append(f"replica{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))}: {gone}")
            if target == Deployment.State.FAILED:
                message = "no replica holds its partitions: " + "; ".join(extra)
            else:
                message = "; ".join(filter(None, [sizing_note, _moves_message(deployment, []), *failed.get(deployment.pk, []),
                                                  *extra, _serving_suffix(serving, deployment.replicas)]))
        if target == deployment.state and message[:2000] == deployment.state_message:
            continue
        with transaction.atomic():
            current = Deployment.objects.select_for_update().filter(pk=deployment.pk, state=deployment.state).first()
            if current is None:
                continue  # changed meanwhile (another agent settled it, or it stopped)
            if target != current.state:
                _transition(current, target, message)
                if target == Deployment.State.FAILED:
                    _release(current, message)
            else:
                _say(current, message)


# --- draining (the reconfiguration's drain step, on the node's agent) -----------------------

def drain_replicas(*, node: Node, gpu_indices: list[int], reason: str) -> list[str]:
    """Stop the replicas that use partitions of these GPUs, not whole deployments; returns
    the names of the deployments whose replicas stopped here.

    A replica moving make-before-break has its new copy started first (on this node now; on
    another node its agent does it, waited for up to ``_move_wait_s``), then its old copy
    stops. Any other replica there stops (all of its slots: a replica is one unit); a
    stop-then-start move then waits for its new partitions. A deployment left with no replica
    and no move stops; one left with fewer replicas says ``degraded``. Runs before amd-smi
    changes the GPUs, so the replicas are stopped on the node when it returns."""
    with _node_lock(node):
        return _drain(node, gpu_indices, reason)


def _drain(node: Node, gpu_indices: list[int], reason: str) -> list[str]:
    def here() -> Any:
        return DeploymentSlot.objects.filter(partition__gpu__node=node, partition__gpu__index__in=gpu_indices,
                                             deployment__state__in=BOUND)

    names = sorted(set(here().values_list("deployment__name", flat=True)))
    if not names:
        return []
    if here().filter(state=RETIRING).exists():
        _run_node_if_possible(node)
        deadline = time.monotonic() + _move_wait_s()
        while here().filter(state=RETIRING).exists() and time.monotonic() < deadline:
            time.sleep(MOVE_POLL_S)
            _run_node_if_possible(node)
        for slot in here().filter(state=RETIRING).select_related("deployment"):
            slot.deployment.moves.filter(replica=slot.replica, state__in=ReplicaMove.ACTIVE_STATES).update(
                message=f"the new copy had not started after {_move_wait_s():.0f} s; the old copy stopped first ({reason})")
        here().filter(state=RETIRING).delete()  # the GPU change cannot wait longer: break before make
    stopped: dict[int, list[int]] = {}
    with transaction.atomic():
        for dep_id, replica in set(here().values_list("deployment_id", "replica")):
            stopped.setdefault(dep_id, []).append(replica)
            DeploymentSlot.objects.filter(deployment_id=dep_id, replica=replica, state=ACTIVE_SLOT).delete()
            move = ReplicaMove.objects.filter(deployment_id=dep_id, replica=replica, state__in=ReplicaMove.ACTIVE_STATES).first()
            if move is None:
                continue
            if move.strategy == STS and move.state == ReplicaMove.State.WAITING:
                move.state = ReplicaMove.State.STOPPED
                move.message = f"old copy stopped by the drain of {reason}"
                move.save(update_fields=["state", "message"])
            elif move.strategy == MBB:
                # It was the new copy that sat on a GPU being changed: the old one stays.
                DeploymentSlot.objects.filter(deployment_id=dep_id, replica=replica, state=RETIRING).update(state=ACTIVE_SLOT)
                move.state, move.finished_at = ReplicaMove.State.CANCELLED, timezone.now()
                move.message = f"its new partitions are drained by {reason}; replica {replica} stays where it was"
                move.save(update_fields=["state", "message", "finished_at"])
        for deployment in Deployment.objects.select_for_update().filter(pk__in=list(stopped), state__in=BOUND):
            left = deployment.slots.exists()
            moves = deployment.moves.filter(state__in=ReplicaMove.ACTIVE_STATES).exists()
            if not left and not moves:
                stop_deployment(deployment=deployment, reason=f"drained by {reason}")
                continue
            replicas = ", ".join(map(str, sorted(stopped[deployment.pk])))
            serving = deployment.replicas - len(_missing_replicas(deployment))
            message = "; ".join(filter(None, [_moves_message(deployment, []), f"replica {replicas} stopped: drained by {reason}",
                                              _serving_suffix(serving, deployment.replicas)]))
            if deployment.state != Deployment.State.DEGRADED and serving < deployment.replicas:
                _transition(deployment, Deployment.State.DEGRADED, message)
            else:
                _say(deployment, message)
    _run_node_if_possible(node)  # the replicas stop before amd-smi set runs
    return names


def _missing_replicas(deployment: Deployment) -> list[int]:
    need = deployment.profile.gpus_needed or 1
    counts = Counter(deployment.slots.values_list("replica", "state"))
    return [r for r in range(deployment.replicas) if counts[(r, ACTIVE_SLOT)] < need and counts[(r, RETIRING)] < need]


def _run_node_if_possible(node: Node) -> None:
    from serving.runtime import runtime_for

    with _node_lock(node):
        runtime = runtime_for(node)
        if runtime is not None:
            _apply_runtime(node, runtime)
        _finish_moves(node, run=runtime is not None)


# --- the ports serving implements (registered in serving/apps.py) -----------------------------

class DeploymentWorkloads:
    """Deployments as the workloads on partitions (partitions.workloads) and as the replicas
    placement works around and plans move (planning.occupancy)."""

    # partitions.workloads
    def workloads_on(self, *, node: Node, gpu_indices: list[int]) -> list[str]:
        return sorted(set(Deployment.objects.filter(
            state__in=BOUND, slots__partition__gpu__node=node, slots__partition__gpu__index__in=gpu_indices,
        ).values_list("name", flat=True)))

    def stop_workloads(self, *, node: Node, gpu_indices: list[int], reason: str) -> list[str]:
        """Drain, and say what stopped: each deployment, with the processes of its copies."""
        def copies() -> list[Replica]:
            return [r for r in Replica.objects.filter(node=node, state__in=Replica.LIVE_STATES).select_related("deployment")
                    if any(p.get("gpu_index") in gpu_indices for p in r.partitions)]

        before = copies()
        names = drain_replicas(node=node, gpu_indices=gpu_indices, reason=reason)
        settle_deployments()
        gone = {r.pk: r for r in Replica.objects.filter(pk__in=[r.pk for r in before], state=Replica.State.STOPPED)}
        described = []
        for name in names:
            stopped = [f"replica {r.replica}" + (f" process {r.pid}" if r.pid else "") for r in before
                       if r.deployment.name == name and r.pk in gone]
            described.append(f"{name} ({', '.join(stopped)} stopped)" if stopped else name)
        return described

    def occupants(self, *, partition_ids: list[int]) -> dict[int, Occupant]:
        from django.urls import reverse

        from models.sizing import replica_gb_per_gpu

        rows = DeploymentSlot.objects.filter(partition_id__in=partition_ids).values_list(
            "partition_id", "deployment_id", "deployment__name", "deployment__state",
            "deployment__profile__memory_required_gb", "deployment__profile__gpus_needed", "deployment__profile__per_gpu_gb",
            "deployment__profile__model__hf_id")
        urls: dict[int, str] = {}  # one URL per deployment, not per partition it holds (thousands on a large fleet)
        return {pid: Occupant(name=name, state=state,
                              url=urls.get(dep_id) or urls.setdefault(dep_id, reverse("serving:deployment-detail", args=[dep_id])),
                              memory_gb=replica_gb_per_gpu(required or 0.0, gpus or 1, per_gpu or 0.0), model=model)
                for pid, dep_id, name, state, required, gpus, per_gpu, model in rows}

    def largest_holders(self, *, limit: int) -> tuple[int, list[Holding]]:
        """Deployments holding partitions (any state, as ``occupants``), the ``limit``
        holding the most: a grouped count and the slots of those few."""
        from django.urls import reverse

        grouped = (DeploymentSlot.objects.filter(partition__isnull=False).order_by()
                   .values("deployment_id").annotate(n=Count("pk")))
        total = grouped.count()
        top = [row["deployment_id"] for row in grouped.order_by("-n", "deployment__name")[:limit]]
        held: dict[int, tuple[str, list[tuple[str, int, int]]]] = {}
        for dep_id, name, node, gpu, index in DeploymentSlot.objects.filter(
                deployment_id__in=top, partition__isnull=False).order_by().values_list(
                "deployment_id", "deployment__name", "partition__gpu__node__name", "partition__gpu__index", "partition__index"):
            held.setdefault(dep_id, (name, []))[1].append((node, gpu, index))
        return total, [Holding(name=name, url=reverse("serving:deployment-detail", args=[dep_id]), partitions=tuple(parts))
                       for dep_id, (name, parts) in held.items()]

    def held_partitions(self) -> Any:
        """Every partition a slot holds (any deployment state, as ``occupants`` counts them)."""
        return DeploymentSlot.objects.values("partition_id")

    def reconcile(self, *, node: Node) -> None:
        reconcile_node(node=node)

    def supervise(self, *, node: Node) -> None:
        supervise_node(node=node)

    def shut_down(self, *, node: Node, reason: str) -> None:
        """Stop the node's serving processes (their slots stay bound: the next agent restarts
        them) and record their copies stopped."""
        from serving.runtime import runtime_for

        runtime = runtime_for(node)
        if runtime is None or runtime.name != "process":
            return
        from django.conf import settings as conf

        from serving.runtime.process import root_for
        from serving.runtime.supervisor import stop_recorded

        stopped = stop_recorded(root_for(node.name), (), grace_s=conf.SERVING_STOP_GRACE_S)
        Replica.objects.filter(node=node, key__in=stopped).update(state=Replica.State.STOPPED, endpoint="", reason=reason[:2000])

    def after_sample(self, *, node: Node, interval_s: float) -> None:
        from serving.runtime.emulated import feed_emulated_serving

        feed_emulated_serving(node, interval_s=interval_s)

    # planning.occupancy
    def occupants_for_placement(self, *, node_ids: Sequence[int] | None) -> tuple[placement.Occupant, ...]:
        slots = DeploymentSlot.objects.filter(deployment__state__in=BOUND).select_related(
            "deployment__profile", "partition__gpu__node"
        )
        if node_ids is not None:
            slots = slots.filter(partition__gpu__node__in=list(node_ids))
        return tuple(
            placement.Occupant(
                deployment=slot.deployment.name, replica=slot.replica, priority=slot.deployment.priority,
                node=slot.partition.gpu.node.name, gpu_index=slot.partition.gpu.index,
                partition_index=slot.partition.index if slot.deployment.profile.gpus_needed == 1 else None,
                memory_gb=slot.deployment.profile.replica_memory_gb,
            )
            for slot in slots
        )

    def profiles_changed(self, *, profile_ids: Sequence[int]) -> list[Misfit]:
        return recheck_sizing(profile_ids=profile_ids)

    def check_names(self, *, names: Sequence[str]) -> dict[str, str]:
        taken = sorted(Deployment.objects.active().filter(name__in=list(names)).values_list("name", flat=True))
        return {"name": f"an active deployment is already called {taken[0]!r}"} if taken else {}

    def apply_plan(self, *, plan: Plan, result: dict[str, Any], user: Any) -> list[Deployment]:
        return apply_plan_deployments(plan=plan, result=result, user=user)


def running_replicas_by_model(node: Node) -> list[tuple[str, float, int]]:
    """(model HF id, GiB per replica, started partitions) of the deployments serving on a node."""
    rows = (Deployment.objects.filter(state__in=(Deployment.State.RUNNING, Deployment.State.DEGRADED),
                                      slots__partition__gpu__node=node, slots__started_at__isnull=False)
            .values_list("profile__model__hf_id", "profile__memory_required_gb")
            .annotate(partitions=Count("slots")).order_by())
    return [(model, memory_gb or 0.0, partitions) for model, memory_gb, partitions in rows]

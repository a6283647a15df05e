"""Replica changes, announced to whoever routes or shows replicas.

Two channels, both best-effort (the ``Replica`` rows stay the source of truth; a listener that
missed an event catches up on its next periodic read):

- Redis pub/sub channel ``<REDIS_KEY_PREFIX>serving:replicas`` (``replicas_channel()``): the
  inference gateway's processes listen and re-read the routable replicas at once. Message:
  JSON ``{"deployments": [ids], "at": epoch seconds}``.
- Channel-layer group ``serving.deployment.<id>`` per deployment: the WebSocket consumers of
  deployment pages (``/ws/deployments/<id>/``, serving/consumers.py), which re-read and send
  the deployment's copies. Event ``{"type": "replicas.changed", "deployment": id}``.
- The fleet page's group (partitions/events.py ``publish_fleet_changed``): the nodes these
  deployments are on, so their cards show the new occupants; and, for a deployment's state
  change (``publish_deployment_state``), a toast for the user who requested it.

Publishing never raises and never blocks for long: a broken Redis must not stop an agent from
supervising its replicas.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any, TypedDict

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)



def deployment_group(deployment_id: int) -> str:
    return f"serving.deployment.{deployment_id}"


class ReplicaPayload(TypedDict):
    key: str
    deployment: int
    deployment_name: str
    replica: int
    node: str
    runtime: str
    state: str
    endpoint: str
    restarts: int
    reason: str


def replicas_channel() -> str:
    return f"{settings.REDIS_KEY_PREFIX}serving:replicas"


def payload(replica: Any) -> ReplicaPayload:
    return ReplicaPayload(
        key=replica.key, deployment=replica.deployment_id, deployment_name=replica.deployment.name,
        replica=replica.replica, node=replica.node.name, runtime=replica.runtime, state=replica.state,
        endpoint=replica.endpoint, restarts=replica.restarts, reason=replica.reason[:500],
    )


def publish_replicas_changed(deployment_ids: Iterable[int]) -> None:
    """After the current transaction commits: tell the gateways and the pages that these
    deployments' replicas changed (state, endpoint, a copy added or gone)."""
    ids = sorted(set(deployment_ids))
    if not ids:
        return
    transaction.on_commit(lambda: _publish(ids))


def _publish(ids: list[int]) -> None:
    from aimconsole import counters

    message = json.dumps({"deployments": ids, "at": time.time()})
    try:
        counters.redis_client().publish(replicas_channel(), message)
    except Exception:  # noqa: BLE001 — best-effort: the gateways re-read periodically
        log.warning("could not publish replica changes to Redis", exc_info=True)
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is not None:
            for pk in ids:
                async_to_sync(layer.group_send)(deployment_group(pk), {"type": "replicas.changed", "deployment": pk})
    except Exception:  # noqa: BLE001 — best-effort, as above
        log.warning("could not publish replica changes to the channel layer", exc_info=True)
    _publish_fleet(ids)


def _nodes_of(ids: list[int]) -> set[str]:
    """The nodes where these deployments hold partitions or have copies (one query each)."""
    from serving.models import DeploymentSlot, Replica

    return (set(DeploymentSlot.objects.filter(deployment_id__in=ids).values_list("partition__gpu__node__name", flat=True))
            | set(Replica.objects.filter(deployment_id__in=ids).values_list("node__name", flat=True)))


def _publish_fleet(ids: list[int]) -> None:
    """The fleet page shows what occupies each partition: refresh the nodes these deployments
    are on (partitions' fleet group, partitions/events.py)."""
    from partitions import events as fleet_events

    try:
        names = _nodes_of(ids)
    except Exception:  # noqa: BLE001 — best-effort: the database may be busy; the page catches up on reload
        log.warning("could not find the nodes of deployments %s for the fleet", ids, exc_info=True)
        return
    for name in sorted(names):
        fleet_events.publish_fleet_changed(name)


# Deployment states announced to the user who requested the deployment (a toast).
NOTIFIED_STATES = ("running", "degraded", "failed", "stopped")


def publish_deployment_state(deployment: Any, before: str) -> None:
    """After commit: deployment went from ``before`` to its current state. The fleet refreshes
    its nodes (the occupant's state shows there) and the requester gets a toast when it
    reached running, degraded, failed or stopped. Never raises."""
    state, pk, user_id = deployment.state, deployment.pk, getattr(deployment, "requested_by_id", None)
    if state == before:
        return
    name, message = deployment.name, (deployment.state_message or "")[:300]

    def send() -> None:
        from django.urls import reverse

        from partitions import events as fleet_events

        _publish_fleet([pk])
        if state in NOTIFIED_STATES and user_id:
            said = {"running": "is running", "degraded": "is degraded", "failed": "failed", "stopped": "stopped"}[state]
            fleet_events.publish_user_notice(user_id, kind="deployment", state=state, title=f"Deployment {name} {said}",
                                             message=message, url=reverse("serving:deployment-detail", args=[pk]))

    try:
        transaction.on_commit(send)
    except Exception:  # noqa: BLE001 — best-effort, as above
        log.warning("could not announce deployment %s's state", pk, exc_info=True)

"""``python manage.py run_agent --node NAME`` — the node agent.

Syncs the node's inventory once, starts the heartbeat, telemetry sampler and sweeper loops,
then runs a Celery worker on queue ``node.<NAME>`` with one process, so operations on a node
never overlap.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from aimconsole.celery import app
from partitions.agent import Agent
from partitions.backends.errors import BackendError
from partitions.models import Node
from partitions.services import sync_node
from partitions.dispatch import node_queue


class Command(BaseCommand):
    help = "Run the node agent for one node (Celery worker + telemetry sampler)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--node", required=True)
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        name = options["node"]
        node = Node.objects.filter(name=name).first()
        if node is None:
            raise CommandError(f"no node {name!r}: register it first (sync_node {name} --create, or demo_fleet)")
        try:
            sync_node(node=node)
        except BackendError as exc:
            self.stderr.write(f"initial inventory sync failed (continuing): {exc}")
        agent = Agent(name)
        agent.start()
        try:
            app.worker_main([
                "worker", "--queues", node_queue(name), "--concurrency", "1", "--pool", "prefork",
                "--hostname", f"agent-{name}@%h", "--loglevel", options["loglevel"],
                "--without-gossip", "--without-mingle", "--prefetch-multiplier", "1",
            ])
        finally:
            agent.stop()

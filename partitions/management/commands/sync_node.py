"""``python manage.py sync_node NAME [--create]`` — read a node's GPUs through its backend.

On a real GPU node: ``sync_node $(hostname) --create`` registers the node with the amd-smi
backend (``AMD_SMI_BIN``) and stores what amd-smi reports.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from partitions.backends.amdsmi import detect
from partitions.backends.errors import BackendError
from partitions.models import Node, node_name_validator
from partitions.services import sync_node


class Command(BaseCommand):
    help = "Sync one node's inventory from its hardware backend."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--create", action="store_true", help="register the node (amd-smi backend) if new")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        try:
            node_name_validator(name)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        node = Node.objects.filter(name=name).first()
        if node is None:
            if not options["create"]:
                raise CommandError(f"no node {name!r}; pass --create to register it with the amd-smi backend")
            # Detection: register the real amd-smi only when it is there and answers `version`.
            if not detect(settings.AMD_SMI_BIN):
                raise CommandError(
                    f"amd-smi not found or not answering `{settings.AMD_SMI_BIN} version`: install ROCm, "
                    "or set AMD_SMI_BIN (for a demo without GPUs use `manage.py demo_fleet`)"
                )
            node = Node.objects.create(name=name, backend=Node.Backend.AMDSMI)
        try:
            result = sync_node(node=node)
        except (BackendError, ValueError) as exc:
            raise CommandError(f"{name}: sync failed, inventory unchanged: {exc}") from exc
        self.stdout.write(
            f"{name}: {result.created} created, {result.updated} updated, {result.deleted} deleted, {result.unchanged} unchanged"
        )
        for warning in result.warnings:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))

"""``python manage.py demo_fleet`` — emulated nodes for the demo and tests.

Each node gets an amd-smi emulator state file under ``var/emulator/`` and a Node row
(backend "emulator", labelled emulated); its inventory is then read through the real amd-smi
backend code path, running the emulator as a subprocess. Their replicas run as real processes
(the ``process`` runtime starting the engine emulator) unless ``--runtime emulated``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from amdsmi_emulator.state import EmulatorState
from partitions.backends.errors import BackendError
from partitions.geometry import GPU_MODELS
from partitions.models import Node
from partitions.services import sync_node


class Command(BaseCommand):
    help = "Create emulated GPU nodes (amd-smi emulator) and sync their inventory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--nodes", type=int, default=2)
        parser.add_argument("--gpus", type=int, default=8)
        parser.add_argument("--gpu-model", default="MI300X", choices=GPU_MODELS)
        parser.add_argument("--rocm", default="7.1", help="emulated ROCm version (6.1 … 7.13)")
        parser.add_argument("--prefix", default="emu-node-")
        parser.add_argument("--state-dir", default=None, help="default: var/emulator")
        parser.add_argument("--runtime", default="process", choices=[c for c in Node.ServingRuntime.values if c != "kubernetes"],
                            help="how replicas run: process (the engine emulator serves real HTTP; default) or emulated (simulated)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["nodes"] <= 64 or not 1 <= options["gpus"] <= 16:
            raise CommandError("--nodes must be 1..64 and --gpus 1..16")
        state_dir = Path(options["state_dir"] or Path(settings.VAR_DIR) / "emulator")
        state_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1, options["nodes"] + 1):
            name = f"{options['prefix']}{i}"
            state_file = state_dir / f"{name}.json"
            if not state_file.exists():
                EmulatorState.create(state_file, gpu_model=options["gpu_model"], count=options["gpus"], rocm=options["rocm"])
            node, created = Node.objects.update_or_create(
                name=name,
                defaults={"backend": Node.Backend.EMULATOR, "emulated": True,
                          "backend_options": {"state_file": str(state_file)}, "runtime": options["runtime"]},
            )
            try:
                result = sync_node(node=node)
            except BackendError as exc:
                raise CommandError(f"{name}: inventory sync failed: {exc}") from exc
            self.stdout.write(
                f"{name}: {'created' if created else 'updated'}, emulated {options['gpu_model']} x{options['gpus']} "
                f"(ROCm {options['rocm']}); sync: {result.created} created, {result.updated} updated, "
                f"{result.deleted} deleted, {result.unchanged} unchanged"
            )

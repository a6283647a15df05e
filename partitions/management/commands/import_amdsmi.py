"""``python manage.py import_amdsmi --node NAME [--dry-run] [--force] FILE...``

Reads captured outputs of ``amd-smi list/static/partition/metric/version`` (any supported ROCm
version, any order) and prints what would be stored (and removed) as JSON; without
``--dry-run`` it also stores it as the node's inventory (atomically). An import that would
remove GPUs or partitions in use, or that targets a node with a live agent, is refused unless
``--force`` (audited).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from partitions.backends.errors import ParseError
from partitions.services import import_amdsmi_outputs
from partitions.services.inventory import ImportRefused


class Command(BaseCommand):
    help = "Import a node's inventory from captured amd-smi outputs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--node", required=True, help="node name (created if it does not exist)")
        parser.add_argument("--dry-run", action="store_true", help="parse and print, change nothing")
        parser.add_argument("--force", action="store_true",
                            help="import even onto a node with a live agent or over partitions in use (audited)")
        parser.add_argument("files", nargs="+", help="files with amd-smi output")

    def handle(self, *args: Any, **options: Any) -> None:
        files = []
        for name in options["files"]:
            try:
                files.append((name, Path(name).read_text(encoding="utf-8", errors="replace")))
            except OSError as exc:
                raise CommandError(f"cannot read {name}: {exc.strerror}") from exc
        try:
            result = import_amdsmi_outputs(node_name=options["node"], files=files, dry_run=options["dry_run"],
                                           force=options["force"])
        except ImportRefused as exc:
            raise CommandError(f"nothing imported: {exc}; use --force to import anyway (audited)") from exc
        except ParseError as exc:
            raise CommandError(f"nothing imported: {exc}") from exc
        except ValidationError as exc:
            raise CommandError(f"nothing imported: {'; '.join(exc.messages)}") from exc
        self.stdout.write(json.dumps(result.to_json(), indent=2))

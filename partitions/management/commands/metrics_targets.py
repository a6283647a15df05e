"""``python manage.py metrics_targets [--output FILE]`` — the node agents' exporters as a
Prometheus file_sd targets file.

Lists the exporters the running agents advertise (partitions/exporter.py: ``run_agent
--metrics-port``), one target group per node labelled ``node`` and ``emulated``: the same JSON
the console serves at ``/metrics/agents`` for ``http_sd_configs``. With ``--output`` the file is
replaced atomically (Prometheus re-reads file_sd files when they change: run this from cron or
a systemd timer); without it the JSON goes to stdout.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from partitions.exporter import exporter_targets


class Command(BaseCommand):
    help = "Write the node agents' metrics exporters as a Prometheus file_sd targets file (JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", type=Path, default=None, help="file to write (atomically); default: stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
        try:
            groups = exporter_targets(client)
        except redis.RedisError as exc:
            raise CommandError(f"cannot read the agents' registrations from Redis ({exc}); the targets file is unchanged") from exc
        text = json.dumps(groups, indent=2) + "\n"
        output: Path | None = options["output"]
        if output is None:
            self.stdout.write(text, ending="")
            return
        if not output.parent.is_dir():
            raise CommandError(f"no directory {output.parent}")
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)  # Prometheus never reads a half-written file
        self.stderr.write(f"{len(groups)} agent exporter(s) written to {output}")

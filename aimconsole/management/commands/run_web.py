"""``python manage.py run_web [--host 127.0.0.1] [--port $AIM_PORT or 8000] [--workers $AIM_WEB_WORKERS]``:
the console (pages, API, WebSockets) under uvicorn, in several worker processes
(aimconsole/webserver.py)."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from aimconsole.webserver import ListenError, serve


class Command(BaseCommand):
    help = "Serve the console's ASGI application (HTTP and WebSockets) with several uvicorn workers."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=None, help="Default: $AIM_PORT, else 8000.")
        parser.add_argument("--workers", type=int, default=None, help="Worker processes. Default: AIM_WEB_WORKERS.")
        parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    def handle(self, *args, **options):
        port = options["port"]
        if port is None:
            raw = os.environ.get("AIM_PORT", "8000")
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise CommandError(f"AIM_PORT must be a port number, got {raw!r}")
            port = int(raw)
        workers = settings.WEB_WORKERS if options["workers"] is None else options["workers"]
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        try:
            serve(host=options["host"], port=port, workers=workers, log_level=options["log_level"])
        except ListenError as exc:
            raise CommandError(str(exc)) from None

"""``python manage.py run_gateway [--host 127.0.0.1] [--port $AIM_GATEWAY_PORT or 8001] [--workers N]``:
the OpenAI-compatible inference gateway (serving/gateway/) under uvicorn. Several workers (or
several hosts behind a load balancer) share their outstanding-request counts through Redis."""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from aimconsole.webserver import ListenError, listen


class Command(BaseCommand):
    help = "Serve the inference gateway (/v1/chat/completions, /v1/completions, /v1/models, /healthz, /readyz)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=None, help="Default: $AIM_GATEWAY_PORT, else 8001.")
        parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each its own gateway).")
        parser.add_argument("--log-level", default="info")

    def handle(self, *args, **options):
        import uvicorn

        port = options["port"]
        if port is None:
            raw = os.environ.get("AIM_GATEWAY_PORT", "8001")
            if not raw.isdigit():
                raise CommandError(f"AIM_GATEWAY_PORT must be a port number, got {raw!r}")
            port = int(raw)
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        config = uvicorn.Config("serving.gateway.asgi:application", host=options["host"], port=port,
                                workers=options["workers"], lifespan="on", log_level=options["log_level"],
                                access_log=False, timeout_keep_alive=75, proxy_headers=False)
        try:
            sock = listen(options["host"], port)  # the console's listener: TCP_NODELAY holds for SSE chunks
        except ListenError as exc:
            raise CommandError(str(exc)) from None
        server = uvicorn.Server(config)
        if options["workers"] == 1:
            server.run(sockets=[sock])
        else:
            from uvicorn.supervisors import Multiprocess

            # The workers import the application themselves and inherit DJANGO_SETTINGS_MODULE.
            Multiprocess(config, sockets=[sock]).run()

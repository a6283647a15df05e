"""``python manage.py run_gateway [--host 127.0.0.1] [--port $AIM_GATEWAY_PORT or 8001] [--workers N]``:
the OpenAI-compatible inference gateway (serving/gateway/) under uvicorn. Several workers (or
several hosts behind a load balancer) share their outstanding-request counts through Redis."""

from __future__ import annotations

import os
import socket

from django.core.management.base import BaseCommand, CommandError


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
        sock = _listen(options["host"], port)
        server = uvicorn.Server(config)
        if options["workers"] == 1:
            server.run(sockets=[sock])
        else:
            from uvicorn.supervisors import Multiprocess

            # The workers import the application themselves and inherit DJANGO_SETTINGS_MODULE.
            Multiprocess(config, sockets=[sock]).run()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, created with IPPROTO_TCP: asyncio sets TCP_NODELAY only on accepted
    sockets whose protocol says TCP, and uvicorn's own bind (``--workers``) leaves it 0. Without
    it Nagle holds each SSE chunk written after the headers until the client's (delayed) ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock

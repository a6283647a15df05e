"""The console's web server: the ASGI application (HTTP and WebSockets) under uvicorn, in
``workers`` processes sharing one listening socket (``manage.py run_web``, the Procfile's web).

One process serves one core's worth of Django: 32 API clients got p50 823 ms at 38 requests/s
from a single daphne. uvicorn's supervisor starts the workers, restarts one that dies and stops
them all on SIGTERM/SIGINT; the kernel spreads new connections over them. What workers share
goes through Redis (channel layer groups, telemetry snapshots, counters) or the database, so
a WebSocket on one worker hears what a request on another published.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn

APPLICATION = "aimconsole.asgi:application"


class ListenError(OSError):
    """The address could not be bound (in use, not ours)."""


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, inheritable by the worker processes. Created with IPPROTO_TCP:
    asyncio sets TCP_NODELAY only on accepted sockets whose protocol says TCP, and uvicorn's
    own bind leaves it 0, so Nagle would hold small writes (WebSocket frames) for the client's
    delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def config(*, host: str, port: int, workers: int, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's settings for the console. Client addresses stay the peer's (proxy_headers
    off): aimconsole/clientaddr.py alone decides whom to believe (AIM_TRUSTED_PROXIES).
    Channels' router has no lifespan protocol, so none is spoken. A stop waits at most 10 s
    for open requests; WebSockets are closed with 1012 (service restart) and pages reconnect.
    No per-message deflate: it would compress every frame once per client, undoing the
    telemetry hub's one encoding per group (the frames are small JSON, on a LAN)."""
    import uvicorn

    return uvicorn.Config(APPLICATION, host=host, port=port, workers=workers, lifespan="off", ws="websockets-sansio",
                          proxy_headers=False, server_header=False, access_log=False, log_level=log_level,
                          timeout_graceful_shutdown=10, ws_per_message_deflate=False)


def serve(*, host: str, port: int, workers: int, log_level: str = "info") -> None:
    """Serve until SIGTERM/SIGINT: in this process for one worker, else under uvicorn's
    supervisor (each worker imports the application itself and inherits DJANGO_SETTINGS_MODULE)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if workers < 1:
        raise ValueError("workers must be at least 1")
    settings = config(host=host, port=port, workers=workers, log_level=log_level)
    sock = listen(host, port)
    if workers == 1:
        uvicorn.Server(settings).run(sockets=[sock])
    else:
        Multiprocess(settings, sockets=[sock]).run()

"""Set up Django on a throw-away SQLite database for a benchmark script."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def setup() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("AIM_VAR_DIR", tempfile.mkdtemp(prefix="aim-bench-"))
    os.environ.pop("DATABASE_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "aimconsole.settings.local"
    os.environ["DJANGO_DEBUG"] = "False"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[object, str]:
    """A private Redis from the bundled binary on a free port (the benchmark stops it): (process, URL)."""
    import time

    import redis

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from aimconsole import embedded

    port = free_port()
    proc = embedded.start_redis(port, Path(tempfile.mkdtemp(prefix="aim-bench-redis-")))
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, url

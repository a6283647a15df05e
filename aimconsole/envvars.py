"""Checked reads of environment variables for the settings modules.

django-environ parses leniently: ``env.bool("DJANGO_DEBUG")`` turns ``maybe`` into False and
``env.float`` accepts ``nan``, ``-5`` or ``inf`` for a timeout. A typo in production must stop
the process at import with a message naming the variable, not start a console with a setting
nobody asked for. Every setting read from the environment goes through ``CheckedEnv``.

An empty value counts as unset for scalars (``VAR=`` in a compose file), so the default
applies; for lists an empty value means the empty list (``AIM_METRICS_ALLOWED_CIDRS=""``).
"""

from __future__ import annotations

import builtins
import ipaddress
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The project runs on these two database vendors only (see README "Configuration").
DATABASE_ENGINES = ("django.db.backends.postgresql", "django.db.backends.sqlite3")


class CheckedEnv:
    """Typed reads that raise ``ImproperlyConfigured`` naming the variable on a bad value."""

    def __init__(self, environ_: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ_ is None else environ_

    def _raw(self, name: builtins.str) -> builtins.str | None:
        value = self._environ.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    @staticmethod
    def _bad(name: builtins.str, raw: builtins.str, expected: builtins.str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"{name}={raw!r} is invalid: expected {expected}")

    def is_set(self, name: builtins.str) -> builtins.bool:
        return self._raw(name) is not None

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise self._bad(name, raw, "one of true/false, yes/no, on/off, 1/0")

    def str(self, name: builtins.str, default: builtins.str, *, choices: Iterable[builtins.str] | None = None,
            upper: builtins.bool = False) -> builtins.str:
        raw = self._raw(name)
        value = default if raw is None else raw
        if upper:
            value = value.upper()
        if choices is not None and value not in tuple(choices):
            raise self._bad(name, raw or value, "one of " + ", ".join(choices))
        return value

    def int(self, name: builtins.str, default: builtins.int, *, minimum: builtins.int | None = None,
            maximum: builtins.int | None = None) -> builtins.int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw, 10)
        except ValueError:
            raise self._bad(name, raw, "a whole number" + _range_text(minimum, maximum)) from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self._bad(name, raw, "a whole number" + _range_text(minimum, maximum))
        return value

    def float(self, name: builtins.str, default: builtins.float, *, minimum: builtins.float | None = None,
              above: builtins.float | None = None, below: builtins.float | None = None,
              maximum: builtins.float | None = None) -> builtins.float:
        """``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones."""
        raw = self._raw(name)
        if raw is None:
            return default
        expected = "a finite number" + _range_text(minimum, maximum, above, below)
        try:
            value = float(raw)
        except ValueError:
            raise self._bad(name, raw, expected) from None
        if (not math.isfinite(value) or (minimum is not None and value < minimum)
                or (above is not None and value <= above) or (below is not None and value >= below)
                or (maximum is not None and value > maximum)):
            raise self._bad(name, raw, expected)
        return value

    def list(self, name: builtins.str, default: builtins.list[builtins.str]) -> builtins.list[builtins.str]:
        """Comma-separated; blank items dropped. Set but empty: the empty list."""
        value = self._environ.get(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def hosts(self, name: builtins.str, default: builtins.list[builtins.str]) -> builtins.list[builtins.str]:
        """Host names for ALLOWED_HOSTS: no scheme, path or whitespace (``.example.com`` and
        ``*`` are Django patterns and allowed)."""
        hosts = self.list(name, default)
        for host in hosts:
            if "/" in host or any(c.isspace() for c in host):
                raise self._bad(name, host, "host names separated by commas (no scheme or path), e.g. console.example.com")
        return hosts

    def origins(self, name: builtins.str, default: builtins.list[builtins.str]) -> builtins.list[builtins.str]:
        """Full origins: ``https://console.example.com[:port]``."""
        origins = self.list(name, default)
        for origin in origins:
            scheme, sep, rest = origin.partition("://")
            if not sep or scheme not in ("http", "https") or not rest or "/" in rest.rstrip("/"):
                raise self._bad(name, origin, "origins separated by commas, e.g. https://console.example.com")
        return origins

    def networks(self, name: builtins.str, default: builtins.list[builtins.str]) -> builtins.list[builtins.str]:
        """IP networks in CIDR form (a bare address is a /32 or /128), normalised."""
        networks = []
        for item in self.list(name, default):
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError as exc:
                raise self._bad(name, item, f"IP networks separated by commas, e.g. 10.0.0.0/8 ({exc})") from None
        return networks

    def db_url(self, name: builtins.str, default: builtins.str) -> dict[builtins.str, Any]:
        raw = self._raw(name) or default
        config: dict[builtins.str, Any]
        try:
            config = environ.Env.db_url_config(raw)
        except (KeyError, ValueError):
            config = {}
        if config.get("ENGINE") not in DATABASE_ENGINES:
            shown = raw.split("@")[-1] if "@" in raw else raw  # never echo a password
            raise self._bad(name, shown, "a postgres://USER@HOST:PORT/NAME or sqlite:///PATH URL")
        return config


def _range_text(minimum: float | None, maximum: float | None, above: float | None = None,
                below: float | None = None) -> str:
    bounds = ((">=", minimum), (">", above), ("<", below), ("<=", maximum))
    parts = [f"{op} {value:g}" if isinstance(value, float) else f"{op} {value}" for op, value in bounds if value is not None]
    return f" ({' and '.join(parts)})" if parts else ""

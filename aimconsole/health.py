"""``/healthz`` (the process answers) and ``/readyz`` (database and Redis reachable)."""

from __future__ import annotations

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
@login_not_required
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_redis() -> str | None:
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@require_GET
@login_not_required
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when both the database and Redis answer; otherwise 503 naming what failed."""
    problems = {name: error for name, error in (("database", _check_database()), ("redis", _check_redis())) if error}
    body = {
        "status": "unavailable" if problems else "ok",
        "checks": {name: problems.get(name, "ok") for name in ("database", "redis")},
    }
    if problems:
        body["reason"] = "; ".join(f"{name}: {error}" for name, error in problems.items())
    return JsonResponse(body, status=503 if problems else 200)

"""Shared fixtures: users per role, API clients, the loaded catalog, a real Redis server."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from aimconsole import embedded

pytest_plugins = ["tests.processes", "tests.emulated_nodes"]  # agents and web servers; emulated nodes

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The project's copies of real tool captures (tests/fixtures/, provenance in each README)."""
    return FIXTURES_DIR


def _wait_for_redis(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: the one REDIS_URL names (CI), else the bundled server on a free port.

    Fails loudly when the server cannot be reached: tests that need Redis never skip.
    """
    process = None
    if os.environ.get("AIM_TEST_EMBEDDED_REDIS"):
        process = embedded.start_redis(embedded.redis_port(), tmp_path_factory.mktemp("redis"))
    try:
        _wait_for_redis(settings.REDIS_URL)
        yield settings.REDIS_URL
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)


@pytest.fixture(autouse=True)
def redis_key_prefix(request, settings, monkeypatch) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Each test's own prefix for the console's Redis keys (settings.REDIS_KEY_PREFIX, and
    AIM_REDIS_KEY_PREFIX for the processes it starts): tests sharing one Redis never read
    one another's telemetry snapshots or counters. A test that used Redis leaves no key."""
    prefix = f"aim:test-{uuid.uuid4().hex[:12]}:"
    settings.REDIS_KEY_PREFIX = prefix
    monkeypatch.setenv("AIM_REDIS_KEY_PREFIX", prefix)
    yield prefix
    if "redis_url" in request.fixturenames:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"), socket_timeout=2)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):  # type: ignore[no-untyped-def]
    """Load the bundled catalog once into the test database."""
    from models.services import load_catalog

    with django_db_blocker.unblock():
        load_catalog()


@pytest.fixture
def catalog(db):  # type: ignore[no-untyped-def]
    """The bundled catalog (reloaded if a transactional test flushed it)."""
    from models.models import InferenceModel
    from models.services import load_catalog

    if not InferenceModel.objects.exists():
        load_catalog()


def _user_with_role(django_user_model, username: str, role: str | None, **extra):  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username=username, password="pw-" + username, **extra)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def viewer(db, django_user_model):  # type: ignore[no-untyped-def]
    return _user_with_role(django_user_model, "vera", "viewer")


@pytest.fixture
def operator(db, django_user_model):  # type: ignore[no-untyped-def]
    return _user_with_role(django_user_model, "otto", "operator")


@pytest.fixture
def admin_user(db, django_user_model):  # type: ignore[no-untyped-def]
    return _user_with_role(django_user_model, "ada", "admin", is_staff=True)


@pytest.fixture
def norole(db, django_user_model):  # type: ignore[no-untyped-def]
    return _user_with_role(django_user_model, "nora", None)


@pytest.fixture
def api_client_for():  # type: ignore[no-untyped-def]
    def make(user=None) -> APIClient:  # type: ignore[no-untyped-def]
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Browser tests last: Playwright's sync API keeps an event loop running in the main
    thread for the rest of the session, which asyncio-based tests cannot share."""
    items.sort(key=lambda item: "/tests/browser/" in str(item.fspath))

"""Browser tests: Playwright driving Debian's Chromium (/usr/bin/chromium, installed by
`make test` when missing). No downloaded browsers; a missing Chromium fails loudly."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("AIM_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture(scope="session", autouse=True)
def _allow_sync_orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API runs an event loop in this thread from the first browser test to
    the end of the session, and Django's async-safety guard would then refuse the test's own
    ORM calls, which are synchronous and safe. Set only while the browser tests run (they run
    last): everywhere else the guard stays on and catches sync ORM calls in consumers."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="session")
def browser(_allow_sync_orm_beside_playwright: None) -> Iterator:
    from playwright.sync_api import sync_playwright

    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make test` (installs Debian's chromium) or set AIM_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


class Console:
    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env


@pytest.fixture
def console(process_env, tmp_path) -> Iterator[Console]:  # type: ignore[no-untyped-def]
    """The real ASGI console (daphne) as a subprocess on the test database and Redis, with
    the channels_redis layer, so pages get live WebSocket updates from agents."""
    import sys
    import urllib.request

    from tests.processes import Process, free_port, wait_for

    env = {**process_env, "AIM_CHANNEL_LAYER": "redis"}
    port = free_port()
    proc = Process([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aimconsole.asgi:application"],
                   env, tmp_path / "daphne.log")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.alive(), proc.output()
        try:
            return urllib.request.urlopen(f"{url}/healthz", timeout=1).status == 200
        except OSError:
            return False

    wait_for(up, 60, "daphne to answer")
    yield Console(url, env)
    proc.stop()


def sign_in(page, console: Console, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{console.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.url}/fleet/")


@pytest.fixture
def signed_in_operator(page, live_server, operator):  # type: ignore[no-untyped-def]
    """Signed in to the live server as an operator; script errors and CSP refusals collected on
    ``page.errors`` (the live server is WSGI, so the pages' WebSocket connections fail: not counted)."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "otto")
    page.fill("#id_password", "pw-otto")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/fleet/")
    page.errors = errors
    return page


@pytest.fixture
def redis_layer(settings, redis_url):  # type: ignore[no-untyped-def]
    """This process publishes through the real Redis layer, which daphne's consumers read (the
    test settings' in-memory layer would not reach daphne)."""
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": redis_url, "socket_connect_timeout": 1}], "prefix": "aim"},
        }
    }
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}

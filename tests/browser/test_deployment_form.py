"""The deployment form's client-side checks in a real browser: Chromium compiles ``pattern``
with the ``v`` flag, so an invalid pattern is dropped (with a console error) and every name
passes the browser's check."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def deployment_form(page, live_server, operator):  # type: ignore[no-untyped-def]
    """The form, signed in as an operator; the console messages it logged are on ``page.logged``."""
    logged: list[str] = []
    page.on("console", lambda message: logged.append(f"{message.type}: {message.text}"))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "otto")
    page.fill("#id_password", "pw-otto")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/fleet/")
    page.goto(f"{live_server.url}/deployments/new/")
    page.logged = logged
    return page


def name_mismatches(page, name: str) -> bool:  # type: ignore[no-untyped-def]
    field = page.locator("#deployment-form input[name=name]")
    field.fill(name)
    return bool(field.evaluate("el => el.validity.patternMismatch"))


@pytest.mark.parametrize("name", ["llama 8", "<script>", "llama-\N{ROCKET}", "llama\N{RIGHT-TO-LEFT OVERRIDE}8b", "a.b"])
def test_the_browser_flags_a_bad_name_before_submitting(deployment_form, name):
    assert name_mismatches(deployment_form, name)
    assert not deployment_form.locator("#deployment-form").evaluate("form => form.checkValidity()")


@pytest.mark.parametrize("name", ["llama8", "llama-3_1-8b", "-x-", "Qwen_7B"])
def test_the_browser_accepts_a_name_the_api_accepts(deployment_form, name):
    assert not name_mismatches(deployment_form, name)


def test_the_name_pattern_compiles_without_a_console_error(deployment_form):
    name_mismatches(deployment_form, "llama 8")
    assert not [m for m in deployment_form.logged if "pattern" in m.lower() or "regular expression" in m.lower()]


def test_the_browser_caps_replicas_at_the_apis_limit(deployment_form):
    from planning.services import MAX_REPLICAS_PER_DEMAND

    field = deployment_form.locator("#deployment-form input[name=replicas]")
    field.fill(str(MAX_REPLICAS_PER_DEMAND + 1))
    assert field.evaluate("el => el.validity.rangeOverflow")
    field.fill(str(MAX_REPLICAS_PER_DEMAND))
    assert not field.evaluate("el => el.validity.rangeOverflow")

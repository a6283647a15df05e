"""Polish (issue 13 §7) in a real browser, under the console's CSP: at phone width the
navigation collapses behind a Menu button and opens; "Skip to content" is the first stop in
the tab order and moves focus to <main>; the theme toggle switches data-theme, and the choice
survives a reload (saved with the account, mirrored in localStorage)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot

pytestmark = pytest.mark.django_db(transaction=True)


def test_at_phone_width_the_navigation_collapses_and_opens(signed_in_operator, live_server):
    page = signed_in_operator
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/preferences/")
    toggle = page.locator(".navtoggle")
    fleet_link = page.locator("#mainnav a", has_text="Fleet")
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(fleet_link).to_be_hidden()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(fleet_link).to_be_visible()
    screenshot(page, "nav-phone-open")
    page.keyboard.press("Escape")
    expect(fleet_link).to_be_hidden()
    assert page.errors == []


def test_the_navigation_is_not_collapsed_on_a_wide_screen(signed_in_operator, live_server):
    page = signed_in_operator
    page.goto(f"{live_server.url}/preferences/")
    expect(page.locator(".navtoggle")).to_be_hidden()
    expect(page.locator("#mainnav a", has_text="Fleet")).to_be_visible()


def test_the_skip_link_is_first_in_tab_order_and_moves_focus_to_main(signed_in_operator, live_server):
    page = signed_in_operator
    page.goto(f"{live_server.url}/preferences/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    expect(page.locator(".skip-link")).to_be_in_viewport()
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement && document.activeElement.id === 'content'")
    assert page.errors == []


def test_the_theme_toggle_switches_and_persists_over_reload(signed_in_operator, live_server, operator):
    from aimconsole.models import UserPreference

    page = signed_in_operator
    page.emulate_media(color_scheme="light")
    page.goto(f"{live_server.url}/preferences/")
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "auto")
    light_bg = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    button = page.locator("form.theme-toggle button")
    for expected in ("light", "dark"):
        with page.expect_response(lambda r: r.url.endswith("/preferences/theme/") and r.status == 204):
            button.click()
        expect(html).to_have_attribute("data-theme", expected)
    dark_bg = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert dark_bg != light_bg
    assert page.evaluate("localStorage.getItem('aim-theme')") == "dark"
    assert UserPreference.objects.get(user=operator).theme == "dark"
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")
    assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") == dark_bg
    screenshot(page, "theme-dark-preferences")
    page.goto(f"{live_server.url}/fleet/")
    screenshot(page, "theme-dark-fleet")
    assert page.errors == []


def test_auto_follows_the_system_dark_preference(signed_in_operator, live_server):
    page = signed_in_operator
    page.goto(f"{live_server.url}/preferences/")
    page.emulate_media(color_scheme="light")
    light_bg = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") != light_bg

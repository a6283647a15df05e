"""The deployment form's client-side checks in a real browser: Chromium compiles ``pattern``
with the ``v`` flag, so an invalid pattern is dropped (with a console error) and every name
passes the browser's check."""

from __future__ import annotations

import pytest

from tests.browser.conftest import screenshot

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


# --- the profile picker and the replica cards (issue 13, 4 and 6) -----------------------------

@pytest.fixture
def fleet_form(signed_in_operator, live_server, catalog, tmp_path):  # type: ignore[no-untyped-def]
    """The form with an emulated MI300X node in the fleet (its profiles are offered)."""
    from tests.emulated_nodes import make_emulated_node

    make_emulated_node(tmp_path, "emu-1", gpus=2)
    page = signed_in_operator
    page.goto(f"{live_server.url}/deployments/new/")
    return page


def visible_options(page) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    return page.locator("#profile-select").evaluate(
        "s => Array.from(s.querySelectorAll('optgroup > option')).filter(o => !o.hidden && !o.parentElement.hidden)"
        ".map(o => ({group: o.parentElement.label, text: o.textContent}))")


def test_the_picker_preselects_nothing_and_requires_a_choice(fleet_form):
    page = fleet_form
    assert page.locator("#profile-select").input_value() == ""
    page.fill("#deployment-form input[name=name]", "chat")
    assert not page.locator("#deployment-form").evaluate("form => form.checkValidity()")
    assert page.locator("#profile-select").evaluate("s => s.validity.valueMissing")
    assert not page.errors


def test_type_ahead_filters_the_profiles_by_model_and_precision(fleet_form):
    page = fleet_form
    assert page.locator(".profile-filter").is_visible()
    everything = visible_options(page)
    assert len(everything) > 20
    page.fill("#profile-filter", "qwen fp8")
    shown = visible_options(page)
    assert 0 < len(shown) < len(everything)
    assert all("qwen" in o["group"].lower() and o["text"].startswith("fp8 ") for o in shown)
    assert "match" in page.locator("#profile-filter-count").inner_text()
    page.fill("#profile-filter", "")
    assert len(visible_options(page)) == len(everything)
    assert page.locator("#profile-select").input_value() == ""  # filtering never picks for you
    page.fill("#profile-filter", "Llama-3.1-8B-Instruct fp16 MI300X")
    assert len(visible_options(page)) == 1
    page.press("#profile-filter", "Enter")  # the only match is picked, the form not submitted
    assert page.locator("#profile-select").input_value() != ""
    assert page.url.endswith("/deployments/new/")
    assert not page.errors
    screenshot(page, "deployment-form-picker")


def test_a_catalog_link_opens_the_form_with_its_profile(fleet_form, live_server):
    from models.models import ModelProfile

    page = fleet_form
    profile = ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                       gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)
    page.goto(f"{live_server.url}/catalog/{profile.model_id}/")
    page.click(f"#deploy-profile-{profile.pk}")
    page.wait_for_url(f"**/deployments/new/?profile={profile.pk}")
    assert page.locator("#profile-select").input_value() == str(profile.pk)
    # A profile of a GPU model the fleet lacks is not picked, and the page says why.
    other = ModelProfile.objects.get(model=profile.model, precision=profile.precision, gpu_model="MI325X",
                                     context_tokens=8192, concurrent_sequences=1)
    page.goto(f"{live_server.url}/catalog/{profile.model_id}/")
    page.click(f"#deploy-profile-{other.pk}")
    page.wait_for_url(f"**/deployments/new/?profile={other.pk}")
    assert page.locator("#profile-select").input_value() == ""
    assert "no MI325X GPU in the fleet" in page.locator("#prefill-notes").inner_text()
    assert not page.errors


def test_the_container_spec_copies(fleet_form, live_server):
    page = fleet_form
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.fill("#deployment-form input[name=name]", "chat")
    page.fill("#profile-filter", "Llama-3.1-8B-Instruct fp16 MI300X")
    page.press("#profile-filter", "Enter")
    page.click("#deployment-form button[type=submit]")
    page.wait_for_url("**/deployments/*/")
    page.locator(".replica details summary").first.click()
    spec = page.locator("pre.spec").first.inner_text()
    page.locator(".copy-spec").first.click()
    status = page.locator(".copy-status").first
    status.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('.copy-status').textContent !== ''")
    if status.inner_text() == "Copied.":
        assert page.evaluate("navigator.clipboard.readText()") == spec
    else:  # the clipboard refused: the text is selected for Ctrl+C
        assert page.evaluate("window.getSelection().toString()") == spec
    import json

    assert json.loads(spec)["command"][:2] == ["vllm", "serve"]
    assert not page.errors
    screenshot(page, "deployment-replica-cards")

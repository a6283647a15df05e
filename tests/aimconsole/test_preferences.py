"""Per-user preferences: the timezone every page shows times in (validated against the
server's IANA zones, shown in the footer) and the theme (auto / light / dark)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from aimconsole.models import AuditEvent, UserPreference

pytestmark = pytest.mark.django_db


def test_the_footer_names_the_server_zone_by_default(client, viewer):
    client.force_login(viewer)
    body = client.get(reverse("preferences")).content.decode()
    assert "times in UTC" in body


def test_an_unknown_zone_is_a_field_error_and_nothing_is_saved(client, viewer):
    client.force_login(viewer)
    response = client.post(reverse("preferences"), {"timezone": "Mars/Olympus_Mons", "theme": "dark"})
    assert response.status_code == 400
    assert response.context["form"].errors["timezone"] == [
        "'Mars/Olympus_Mons' is not a known timezone: use an IANA name such as Europe/Paris or UTC."]
    assert "is not a known timezone" in response.content.decode()
    assert not UserPreference.objects.filter(user=viewer).exists()


def test_an_unknown_theme_is_refused(client, viewer):
    client.force_login(viewer)
    response = client.post(reverse("preferences"), {"timezone": "", "theme": "neon"})
    assert response.status_code == 400 and "theme" in response.context["form"].errors
    assert not UserPreference.objects.filter(user=viewer).exists()


def test_times_render_in_the_chosen_zone_and_the_footer_says_so(client, admin_user):
    AuditEvent.objects.create(at=datetime(2026, 1, 15, 12, 0, tzinfo=UTC), actor="test", action="test.tz")
    client.force_login(admin_user)
    before = client.get(reverse("audit-log"), {"action": "test.tz"}).content.decode()
    assert "2026-01-15 12:00:00" in before
    response = client.post(reverse("preferences"), {"timezone": "Europe/Paris", "theme": "auto"})
    assert response.status_code == 302
    assert UserPreference.objects.get(user=admin_user).timezone == "Europe/Paris"
    after = client.get(reverse("audit-log"), {"action": "test.tz"}).content.decode()
    assert "2026-01-15 13:00:00" in after and "2026-01-15 12:00:00" not in after  # CET, UTC+1
    assert "times in Europe/Paris" in after


def test_the_preference_follows_the_user_to_a_new_session(client, viewer):
    UserPreference.objects.create(user=viewer, timezone="Asia/Tokyo", theme="dark")
    client.force_login(viewer)
    body = client.get(reverse("preferences")).content.decode()
    assert "times in Asia/Tokyo" in body and 'data-theme="dark"' in body


def test_the_preference_costs_no_query_per_page(client, viewer):
    client.force_login(viewer)
    client.get(reverse("preferences"))
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        client.get(reverse("preferences"))
    assert not [q for q in queries.captured_queries if "aimconsole_userpreference" in q["sql"]]


def test_the_theme_toggle_saves_without_javascript_and_goes_back(client, viewer):
    client.force_login(viewer)
    response = client.post(reverse("preferences-theme"), {"theme": "dark", "next": "/fleet/"})
    assert response.status_code == 302 and response["Location"] == "/fleet/"
    assert UserPreference.objects.get(user=viewer).theme == "dark"
    assert 'data-theme="dark"' in client.get(reverse("preferences")).content.decode()


def test_the_theme_toggle_answers_fetch_with_204_and_refuses_other_sites(client, viewer):
    client.force_login(viewer)
    assert client.post(reverse("preferences-theme"), {"theme": "light"}, headers={"X-Requested-With": "fetch"}).status_code == 204
    away = client.post(reverse("preferences-theme"), {"theme": "auto", "next": "https://evil.example/"})
    assert away["Location"] == "/"
    assert client.post(reverse("preferences-theme"), {"theme": "neon"}).status_code == 400
    assert UserPreference.objects.get(user=viewer).theme == "auto"


def test_signed_out_pages_get_the_server_zone_and_auto_theme(client):
    body = client.get(reverse("login")).content.decode()
    assert 'data-theme="auto"' in body and "data-theme-saved" not in body


def test_list_and_detail_pages_name_the_chosen_zone_not_utc(client, viewer, catalog, tmp_path):
    from models.models import ModelProfile
    from planning.services import DemandSpec, create_plan
    from tests.emulated_nodes import make_emulated_node

    UserPreference.objects.create(user=viewer, timezone="Asia/Tokyo", theme="auto")
    make_emulated_node(tmp_path, gpus=1)
    profile = ModelProfile.objects.filter(gpu_model="MI300X").order_by("memory_required_gb").first()
    plan = create_plan(demands=[DemandSpec(name="tz-plan", profile=profile, replicas=1)])
    client.force_login(viewer)
    for url, label in (("/operations/", "Times in Asia/Tokyo."), ("/plans/", "Times in Asia/Tokyo."),
                       ("/deployments/", "Created (Asia/Tokyo)"), (f"/plans/{plan.pk}/", " Asia/Tokyo")):
        html = client.get(url).content.decode()
        assert label in html and "UTC" not in html.split("<footer", 1)[0], url

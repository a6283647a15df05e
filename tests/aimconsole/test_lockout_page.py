"""The page shown after too many failed sign-ins says how long the lockout lasts (from
AXES_COOLOFF_TIME) and speaks to the person signing in, not to the server's operator
(issue 13, 7)."""

from __future__ import annotations

import pytest

from aimconsole.templatetags.console_tags import duration_words

pytestmark = pytest.mark.django_db


def lock_out(client, username: str, limit: int) -> str:  # type: ignore[no-untyped-def]
    for _ in range(limit):
        client.post("/accounts/login/", {"username": username, "password": "nope"})
    locked = client.post("/accounts/login/", {"username": username, "password": f"pw-{username}"})
    assert locked.status_code in (403, 429)
    page: str = locked.content.decode()
    assert "Too many failed sign-ins" in page
    return page


@pytest.mark.parametrize("hours, words", [(0.25, "15 minutes"), (1.5, "1 hour 30 minutes"), (24, "24 hours")])
def test_the_lockout_page_says_how_long_it_lasts(client, viewer, settings, hours, words):
    settings.AXES_COOLOFF_TIME = hours
    page = lock_out(client, "vera", settings.AXES_FAILURE_LIMIT)
    assert f"for {words}" in page


def test_the_lockout_page_names_no_management_command(client, viewer, settings):
    page = lock_out(client, "vera", settings.AXES_FAILURE_LIMIT)
    assert "manage.py" not in page
    assert "axes_reset" not in page
    assert "administrator" in page


@pytest.mark.parametrize("seconds, words", [
    (1, "1 second"), (59, "59 seconds"), (60, "1 minute"), (90, "1 minute 30 seconds"),
    (3600, "1 hour"), (3660, "1 hour 1 minute"), (86400, "24 hours"), (0, "0 seconds"),
])
def test_duration_words(seconds, words):
    from datetime import timedelta

    assert duration_words(timedelta(seconds=seconds)) == words

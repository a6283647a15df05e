"""Each user's display preferences on every request: the timezone pages show times in
(activated for the request; default ``settings.TIME_ZONE``) and the colour theme.

They are read once per session: at sign-in (``user_logged_in``) into the session, and again
when the user saves them, so a request costs no query for them.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

SESSION_KEY = "aim_preferences"
DEFAULTS = {"timezone": "", "theme": "auto"}


def as_dict(pref: Any) -> dict[str, str]:
    return {"timezone": pref.timezone, "theme": pref.theme} if pref is not None else dict(DEFAULTS)


def load_into_session(session: Any, user: Any) -> dict[str, str]:
    from aimconsole.models import UserPreference

    prefs = as_dict(UserPreference.objects.filter(user=user).first())
    session[SESSION_KEY] = prefs
    return prefs


def on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """user_logged_in receiver."""
    if request is not None and hasattr(request, "session"):
        load_into_session(request.session, user)


def of_request(request: HttpRequest) -> dict[str, str]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not hasattr(request, "session"):
        return dict(DEFAULTS)
    stored = request.session.get(SESSION_KEY)
    if isinstance(stored, dict):
        return {**DEFAULTS, **stored}
    return load_into_session(request.session, user)  # a session from before preferences existed


def zone_name(prefs: dict[str, str]) -> str:
    from aimconsole.models import known_timezones

    name = prefs.get("timezone") or ""
    return name if name in known_timezones() else settings.TIME_ZONE


class PreferencesMiddleware:
    """Activates the user's timezone for the request (templates' ``|date`` and ``localtime``
    render in it) and sets ``request.aim_theme``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        prefs = of_request(request)
        request.aim_theme = prefs.get("theme") or "auto"  # type: ignore[attr-defined]
        request.aim_theme_saved = bool(getattr(request, "user", None) and request.user.is_authenticated)  # type: ignore[attr-defined]
        timezone.activate(zoneinfo.ZoneInfo(zone_name(prefs)))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()

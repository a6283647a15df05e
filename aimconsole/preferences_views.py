"""The preferences page (timezone, theme) and the header's theme toggle."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from aimconsole import preferences, services
from aimconsole.models import Theme, known_timezones


class PreferencesForm(forms.Form):
    """The page's fields only; values are checked by ``services.save_preferences`` (the model's
    validators), the one path every change takes."""

    timezone = forms.CharField(required=False, max_length=64, label="Timezone",
                               help_text="IANA name, e.g. Europe/Paris or America/New_York; empty: the server's (UTC).",
                               widget=forms.TextInput(attrs={"list": "timezones", "autocomplete": "off"}))
    theme = forms.ChoiceField(choices=Theme.choices, label="Theme", widget=forms.RadioSelect)


def _apply(request: HttpRequest, form: forms.Form, **values: str | None) -> bool:
    try:
        pref = services.save_preferences(user=request.user, **values)
    except ValidationError as exc:
        form.add_error(None, exc)
        return False
    request.session[preferences.SESSION_KEY] = preferences.as_dict(pref)
    return True


@require_http_methods(["GET", "HEAD", "POST"])
def preferences_page(request: HttpRequest) -> HttpResponse:
    current = preferences.of_request(request)
    if request.method == "POST":
        form = PreferencesForm(request.POST)
        if form.is_valid() and _apply(request, form, timezone=form.cleaned_data["timezone"],
                                      theme=form.cleaned_data["theme"]):
            messages.success(request, "Preferences saved.")
            return redirect("preferences")
        status = 400
    else:
        form = PreferencesForm(initial=current)
        status = 200
    return render(request, "aimconsole/preferences.html",
                  {"form": form, "timezones": sorted(known_timezones())}, status=status)


@require_POST
def theme_toggle(request: HttpRequest) -> HttpResponse:
    """POST ``theme``: saved; answers 204 to theme.js, else goes back to ``next``."""
    form = PreferencesForm({"theme": request.POST.get("theme", ""), "timezone": ""})
    form.is_valid()
    if "theme" in form.errors:
        return HttpResponse(f"Unknown theme; choose one of {', '.join(Theme.values)}.", status=400,
                            content_type="text/plain")
    _apply(request, form, theme=form.cleaned_data["theme"])
    if request.headers.get("X-Requested-With") == "fetch":
        return HttpResponse(status=204)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        target = "/"
    return redirect(target)

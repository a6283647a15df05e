"""Sign-in with bounded fields: over-long credentials are refused before authenticating.

Nothing legitimate is longer than a username (150 characters, the model's limit) or a
password of ``MAX_PASSWORD_CHARS``; refusing them before ``authenticate()`` keeps megabyte
strings out of the user lookup, the password hasher, django-axes' attempt rows and the audit
trail. (Bodies as a whole are bounded by aimconsole/limits.py.) The console's sign-in page
answers 400 naming the field; Django admin's shows the same message on its form.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpResponse, HttpResponseBadRequest

MAX_USERNAME_CHARS = 150
MAX_PASSWORD_CHARS = 4096
LIMITS = {"username": MAX_USERNAME_CHARS, "password": MAX_PASSWORD_CHARS}


def oversized_field(data: Any) -> str | None:
    """The message for the first credential field longer than its limit, or None."""
    for name, limit in LIMITS.items():
        if len(data.get(name) or "") > limit:
            return f"Sign-in refused: the {name} is longer than {limit} characters."
    return None


class BoundedCredentialsMixin:
    """For AuthenticationForm subclasses: refuse over-long fields before authenticating."""

    data: Any

    def clean(self) -> dict[str, Any]:
        message = oversized_field(self.data)
        if message is not None:
            raise ValidationError(message, code="too_long")
        return super().clean()  # type: ignore[misc]


class LoginForm(BoundedCredentialsMixin, AuthenticationForm):
    pass


class AdminLoginForm(BoundedCredentialsMixin, AdminAuthenticationForm):
    pass


class LoginView(auth_views.LoginView):
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form: Any) -> HttpResponse:
        if form.has_error(NON_FIELD_ERRORS, "too_long"):
            return HttpResponseBadRequest(form.non_field_errors()[0] + "\n", content_type="text/plain; charset=utf-8")
        return super().form_invalid(form)

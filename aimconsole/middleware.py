"""Login required on every page.

The API (``/api/``) is left to DRF, which authenticates sessions and tokens itself and answers
401/403 instead of redirecting to the login page. Views that must stay public
(``/healthz``, ``/readyz``, login) are marked with ``login_not_required``.
"""

from __future__ import annotations

from django.contrib.auth.middleware import LoginRequiredMiddleware as _DjangoLoginRequired
from django.shortcuts import render


class LoginRequiredMiddleware(_DjangoLoginRequired):
    """Pages need a signed-in user holding a role (viewer, operator or admin), exactly like the
    API; superusers count as admins. Django admin keeps its own staff check."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        refused = super().process_view(request, view_func, view_args, view_kwargs)
        if refused is not None or not getattr(view_func, "login_required", True):
            return refused
        if request.path_info.startswith("/admin/") or request.resolver_match and request.resolver_match.url_name == "logout":
            return None
        from aimconsole.roles import user_role

        if user_role(request.user) is None:
            return render(request, "registration/no_role.html", status=403)
        return None


class ContentSecurityPolicyMiddleware:
    """A strict Content-Security-Policy on every HTML page: scripts only from this origin (the
    console uses no inline script; data goes through json_script), WebSockets to this origin,
    no framing. Styles allow inline attributes for Django admin's templates."""

    POLICY = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; "
        "object-src 'none'"
    )

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            response.setdefault("Content-Security-Policy", self.POLICY)
        return response


class RejectNullCharactersMiddleware:
    """Refuse requests carrying NUL characters (in the path, query string or body, raw or as a
    JSON ``\\u0000`` escape) with 400: PostgreSQL cannot store or even compare them, and no
    legitimate input of the console contains one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from urllib.parse import unquote_to_bytes

        body = request.body if request.method in ("POST", "PUT", "PATCH", "DELETE") else b""
        query = unquote_to_bytes(request.META.get("QUERY_STRING", ""))
        if "\x00" in request.path or b"\x00" in query or b"\x00" in body or b"\\u0000" in body.lower():
            from django.http import JsonResponse

            return JsonResponse({"code": "invalid", "message": "NUL characters are not allowed in requests", "detail": None},
                                status=400)
        return self.get_response(request)

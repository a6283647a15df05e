"""The console's error pages (handler403/404/500): API paths get the API's JSON error shape,
pages a console-styled page saying what is missing and which role may do it; and the
favicon redirect."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.templatetags.static import static

from aimconsole.roles import denial_message, lowest_role_for

logger = logging.getLogger(__name__)

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_FALLBACK_500 = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Server error · AIM Console</title>"
                 "</head><body><h1>Server error</h1><p>The console failed to answer this request. The error is in the "
                 "server log; try again, or ask an admin.</p></body></html>")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _message(exception: Any) -> str:
    """The exception's own text when it is a sentence written for people (not a resolver dict)."""
    args = getattr(exception, "args", ())
    return args[0] if args and isinstance(args[0], str) else ""


def needed_role(request: HttpRequest, exception: Any = None) -> str | None:
    """The role a refused request needs: the exception's ``required_role`` when it names one,
    else the lowest role that may do the request's kind of thing (read or change) to the app
    the page belongs to (aimconsole/roles.py)."""
    named = getattr(exception, "required_role", None)
    if named:
        return str(named)
    match = getattr(request, "resolver_match", None)
    app = match.app_name if match is not None else ""
    if not app:
        return None
    return lowest_role_for(app, "view" if request.method in _SAFE_METHODS else "change")


def permission_denied(request: HttpRequest, exception: Any = None) -> HttpResponse:
    """handler403."""
    reason = _message(exception)
    needed = needed_role(request, exception)
    explanation = denial_message(getattr(request, "user", None), needed)
    if _is_api(request):
        return JsonResponse({"code": "permission_denied", "message": reason or explanation, "detail": None}, status=403)
    return render(request, "403.html", {"reason": reason, "explanation": explanation, "needed_role": needed,
                                        "request_path": request.path}, status=403)


def page_not_found(request: HttpRequest, exception: Any = None) -> HttpResponse:
    """handler404."""
    if _is_api(request):
        return JsonResponse({"code": "not_found", "message": f"No resource at {request.path}", "detail": None}, status=404)
    return render(request, "404.html", {"reason": _message(exception), "request_path": request.path}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: rendered without the request (no context processors, no database), so it
    works whatever broke; a plain page if even the template fails."""
    if _is_api(request):
        return JsonResponse({"code": "server_error", "message": "The server failed to answer this request.",
                             "detail": None}, status=500)
    try:
        body = loader.get_template("500.html").render({"request_id": getattr(request, "request_id", "")})
    except Exception:  # the template system itself may be what broke
        logger.exception("the 500 page could not be rendered")
        body = _FALLBACK_500
    return HttpResponse(body, status=500)


@login_not_required
def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico``, which browsers ask for on pages that name no icon (Django admin's):
    the console's icon, so no 404 lands in the browser console. Resolved per request, so the
    production storage's hashed name is used."""
    return HttpResponsePermanentRedirect(static("aimconsole/favicon.svg"))

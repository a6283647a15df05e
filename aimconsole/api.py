"""API conventions shared by every app: error bodies and the v1 router."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from aimconsole.authentication import CHALLENGE as TOKEN_CHALLENGE
from aimconsole.authentication import InvalidTokenError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error body is ``{"code": <machine code>, "message": <human text>, "detail": ...}``.

    ``detail`` keeps DRF's field-by-field errors for validation failures.
    """
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)  # keep a service's reason
    if isinstance(exc, DjangoValidationError):
        exc = validation_error(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, InvalidTokenError):
        # A presented token was refused: 401 with a challenge (RFC 6750), never 403.
        response.status_code = status.HTTP_401_UNAUTHORIZED
        response["WWW-Authenticate"] = TOKEN_CHALLENGE
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else getattr(exc, "default_code", "error")
        if response.status_code == status.HTTP_400_BAD_REQUEST:
            code = "invalid"
        detail = response.data
        if code == "invalid":
            message = _first_message(detail)
        elif isinstance(detail, dict) and "message" in detail:
            message = str(detail["message"])
        else:
            message = str(getattr(exc, "detail", exc))
        response.data = {"code": code, "message": message, "detail": detail}
    return response


def validation_error(exc: DjangoValidationError) -> exceptions.ValidationError:
    """A service's ValidationError as the API's 400 (field -> messages)."""
    return exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages})


def api_not_found(request, exception=None):  # type: ignore[no-untyped-def]
    """handler404: API paths get the API's JSON error shape, pages the HTML page."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"code": "not_found", "message": f"No resource at {request.path}", "detail": None}, status=404)
    return page_not_found(request, exception)


def _first_message(detail: Any, field: str = "") -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key in ("non_field_errors", "detail") else str(key)
            return _first_message(value, name or field)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0], field)
    return f"{field}: {detail}" if field else str(detail)

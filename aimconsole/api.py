"""API conventions shared by every app: error bodies, bounded JSON bodies, validated
pagination and integer filters, refusal of unknown fields.

Settings make the classes here the defaults (REST_FRAMEWORK in aimconsole/settings/base.py),
so every viewset of every app gets them without asking.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping
from typing import Any, cast

import django_filters
from django.conf import settings as django_settings
from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.http import Http404
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from aimconsole import jsonbounds
from aimconsole.authentication import CHALLENGE as TOKEN_CHALLENGE
from aimconsole.authentication import InvalidTokenError
from aimconsole.bounds import parse_integer
from aimconsole.limits import max_body_bytes


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
    # Imported here: rest_framework.views reads the parser/pagination defaults (this module's
    # classes) when it is imported, so importing it at the top is circular.
    from rest_framework.views import exception_handler as drf_exception_handler

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


def _first_message(detail: Any, field: str = "") -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key in ("non_field_errors", "detail") else str(key)
            return _first_message(value, name or field)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0], field)
    return f"{field}: {detail}" if field else str(detail)


# --- request bodies ------------------------------------------------------------------------------

class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "Request body too large."


class BoundedJSONParser(JSONParser):
    """The default JSON parser, through aimconsole.jsonbounds: a body nested deeper than
    ``API_MAX_JSON_DEPTH`` is a 400 before parsing (the standard parser would recurse into a
    RecursionError, a 500), one larger than ``AIM_MAX_BODY_BYTES`` a 413."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        encoding = (parser_context or {}).get("encoding", django_settings.DEFAULT_CHARSET)
        limit = max_body_bytes()
        raw = stream.read(limit + 1)
        try:
            return jsonbounds.loads(raw.decode(encoding), max_depth=django_settings.API_MAX_JSON_DEPTH, max_bytes=limit)
        except jsonbounds.JSONTooLarge as exc:
            raise RequestTooLarge(str(exc)) from None
        except ValueError as exc:  # too deep, not JSON, not in the declared encoding
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None


# --- pagination --------------------------------------------------------------------------------------

MAX_PAGE_SIZE = 1000
# Far beyond any table here, and offset + limit stays inside the database's 64-bit range.
MAX_OFFSET = 2**31 - 1


def query_integer(request: Request, name: str, *, default: int | None, minimum: int, maximum: int) -> int | None:
    """Query parameter ``name`` as an int in [minimum, maximum]; absent or empty: ``default``;
    anything else is a 400 naming the parameter."""
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    try:
        return parse_integer(raw, minimum=minimum, maximum=maximum)
    except ValueError as exc:
        raise exceptions.ValidationError({name: [str(exc)]}) from None


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=&offset=`` with both validated: limit 1..MAX_PAGE_SIZE, offset 0..MAX_OFFSET
    (DRF's own class lets a huge limit reach the database and ignores junk silently).

    Keyset pages: a view that names ``keyset_fields`` (ORM paths of its default ordering,
    ending in a unique key, ``-`` for descending, each served by an index) also takes
    ``?cursor=``, and its ``next`` link carries one whenever the list is in that ordering (no
    ``?ordering=``). A cursor page reads "the rows after this key" (a range seek on the
    index, then ``limit`` rows), so the thousandth page costs what the first does, where
    ``OFFSET`` would read and drop every row before it. ``offset`` stays for jumping to a page;
    ``count`` is always the whole list's."""

    max_limit = MAX_PAGE_SIZE
    cursor_query_param = "cursor"

    def get_limit(self, request: Request) -> int | None:
        return query_integer(request, self.limit_query_param, default=self.default_limit, minimum=1,
                             maximum=self.max_limit)

    def get_offset(self, request: Request) -> int:
        return query_integer(request, self.offset_query_param, default=0, minimum=0, maximum=MAX_OFFSET) or 0

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        self.request = request
        self.keyset = _keyset_fields(view, request)
        self.last_key: list[Any] | None = None
        self.cursor_page = False
        cursor = request.query_params.get(self.cursor_query_param, "")
        if not cursor or not isinstance(queryset, models.QuerySet):
            page = super().paginate_queryset(queryset, request, view)
            self._remember_last(page)
            return page
        if not self.keyset:
            raise exceptions.ValidationError({self.cursor_query_param: [
                "this list takes no cursor in this ordering; use offset"]})
        if request.query_params.get(self.offset_query_param, "") not in ("", "0"):
            raise exceptions.ValidationError({self.cursor_query_param: ["send cursor or offset, not both"]})
        self.limit = self.get_limit(request)
        assert self.limit is not None  # default_limit is set (PAGE_SIZE)
        after = keyset_after(queryset.model, self.keyset, decode_cursor(cursor, len(self.keyset)))
        self.count = self.get_count(queryset)
        self.offset = 0
        self.cursor_page = True
        page = list(queryset.filter(after)[:self.limit])
        self._remember_last(page)
        return page

    def _remember_last(self, page: list[Any] | None) -> None:
        if page and self.keyset and len(page) == self.limit:
            self.last_key = [_row_value(page[-1], field.lstrip("-")) for field in self.keyset]

    def get_next_link(self) -> str | None:
        if self.last_key is None:
            return None if self.cursor_page else super().get_next_link()
        assert self.request is not None and self.limit is not None  # set by paginate_queryset
        if not self.cursor_page and (self.offset or 0) + self.limit >= (self.count or 0):
            return None
        url = remove_query_param(self.request.build_absolute_uri(), self.offset_query_param)
        url = replace_query_param(url, self.limit_query_param, self.limit)
        return replace_query_param(url, self.cursor_query_param, encode_cursor(self.last_key))

    def get_previous_link(self) -> str | None:
        # A cursor page does not know its offset; go back with offset (or the pages you kept).
        return None if self.cursor_page else super().get_previous_link()

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        bounds = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, MAX_OFFSET)}
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            minimum, maximum = bounds[parameter["name"]]
            parameter["schema"] = {**parameter["schema"], "minimum": minimum, "maximum": maximum}
        if getattr(view, "keyset_fields", ()):
            parameters.append({
                "name": self.cursor_query_param, "required": False, "in": "query", "schema": {"type": "string"},
                "description": "Opaque position from a `next` link: the page after it, at the cost of the first "
                               "page (keyset). Not with `offset` or `ordering`."})
        return parameters


def _keyset_fields(view: Any, request: Request) -> tuple[str, ...]:
    """The view's keyset, when the list is in its default ordering (else none)."""
    fields = tuple(getattr(view, "keyset_fields", ()) or ())
    return () if request.query_params.get("ordering") else fields


def _row_value(row: Any, path: str) -> Any:
    """``path`` (``gpu__node__name``) of a values() dict or a model instance."""
    if isinstance(row, Mapping):
        return row[path]
    value = row
    for part in path.split("__"):
        value = getattr(value, part)
    return value


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps([v.isoformat() if hasattr(v, "isoformat") else v for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, size: int) -> list[Any]:
    """A cursor's key values; a 400 for anything this API did not hand out."""
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError):
        values = None
    if not isinstance(values, list) or len(values) != size or not all(map(_key_value, values)):
        raise exceptions.ValidationError({"cursor": ["not a cursor of this list: follow a next link"]})
    return values


def _key_value(value: Any) -> bool:
    """A value a key can hold: text without NUL, or a 64-bit whole number (what the database
    would refuse with an error instead of a 400 is refused here)."""
    if isinstance(value, str):
        return "\x00" not in value
    return isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63


def keyset_after(model: type[models.Model], fields: tuple[str, ...], values: list[Any]) -> models.Q:
    """Rows after ``values`` in the ordering ``fields``: (a, b) > (x, y) written as
    ``a >= x AND (a > x OR (a = x AND b > y))`` — the leading range lets the database seek in
    the index instead of scanning from its start."""
    converted = []
    for field, value in zip(fields, values):
        target = _model_field(model, field.lstrip("-"))
        try:
            converted.append(target.to_python(value))
        except DjangoValidationError:
            raise exceptions.ValidationError({"cursor": ["not a cursor of this list: follow a next link"]}) from None
    names = [f.lstrip("-") for f in fields]
    after = models.Q()
    for i, field in enumerate(fields):
        step = models.Q(**{f"{names[j]}": converted[j] for j in range(i)},
                        **{f"{names[i]}__{'lt' if field.startswith('-') else 'gt'}": converted[i]})
        after = step if i == 0 else after | step
    lead = f"{names[0]}__{'lte' if fields[0].startswith('-') else 'gte'}"
    return models.Q(**{lead: converted[0]}) & after


def _model_field(model: type[models.Model], path: str) -> Any:
    *relations, name = path.split("__")
    for part in relations:
        model = cast("type[models.Model]", model._meta.get_field(part).related_model)
    return model._meta.get_field(name)


class ValuesRows:
    """A list's hot read path: rows of a ``values()`` query renamed to a serializer's output
    names, with its DateTimeFields rendered by the serializer's own fields — the same JSON as
    the serializer, without building a model instance and a serializer pass per row. A view
    adds its computed and nested fields; a test pins the result equal to the serializer's.

    ``columns``: output name -> ``values()`` path, in the serializer's field order."""

    def __init__(self, serializer_class: type[Any], columns: Mapping[str, str]) -> None:
        self.serializer_class = serializer_class
        self.columns = dict(columns)
        self.paths = tuple(dict.fromkeys(self.columns.values()))

    @functools.cached_property
    def dates(self) -> dict[str, Any]:
        # On first use, not at import: a ModelSerializer builds its fields from the app registry.
        fields = self.serializer_class().fields
        return {name: fields[name].to_representation for name in self.columns
                if isinstance(fields.get(name), serializers.DateTimeField)}

    def rows(self, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items = list(self.columns.items())
        out = [{name: row[path] for name, path in items} for row in values]
        for name, render in self.dates.items():
            for row in out:
                if row[name] is not None:
                    row[name] = render(row[name])
        return out


# --- filters ------------------------------------------------------------------------------------------

def _integer_target(model: type[models.Model], flt: django_filters.Filter) -> models.Field[Any, Any] | None:
    """The integer model field a filter compares its value with, or None (not an integer, a
    custom ``method``, or a lookup such as ``isnull`` whose value is no number)."""
    if flt.method is not None or flt.lookup_expr in ("isnull",):
        return None
    field: Any = None
    try:
        for part in flt.field_name.split("__"):
            field = model._meta.get_field(part)
            if field.is_relation and field.related_model is not None:
                model = field.related_model
    except FieldDoesNotExist:
        return None
    if isinstance(flt, django_filters.ModelChoiceFilter | django_filters.ModelMultipleChoiceFilter) or (
            field is not None and field.is_relation):
        to_field = flt.extra.get("to_field_name")
        field = model._meta.get_field(to_field) if to_field else model._meta.pk
    return field if isinstance(field, models.IntegerField) else None


def _raw_values(value: Any) -> list[str]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v not in (None, "")]
    return [] if value in (None, "") else [str(value)]


def integer_filter_errors(filterset: django_filters.FilterSet) -> dict[str, list[str]]:
    """Query values of ``filterset``'s integer filters that are no 64-bit whole number (junk,
    floats, overflow): parameter -> messages. Checked on the raw query text, before the form
    converts anything or the database sees it."""
    errors: dict[str, list[str]] = {}
    form = filterset.form
    for name, flt in filterset.filters.items():
        if _integer_target(filterset.queryset.model, flt) is None or name not in form.fields:
            continue
        raw = form.fields[name].widget.value_from_datadict(filterset.data, form.files, form.add_prefix(name))
        for value in _raw_values(raw):
            try:
                parse_integer(value)
            except ValueError as exc:
                errors[name] = [str(exc)]
                break
    return errors


class BoundedFilterBackend(DjangoFilterBackend):  # django-filter is untyped
    """django-filter's backend, with every integer filter's values checked first (see
    ``integer_filter_errors``): a 400 naming the parameter, never a 500. As the default
    backend it covers every FilterSet and ``filterset_fields`` of every app."""

    def filter_queryset(self, request: Request, queryset: models.QuerySet[Any], view: Any) -> models.QuerySet[Any]:
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        errors = integer_filter_errors(filterset)
        if errors:
            raise exceptions.ValidationError(errors)
        if not filterset.is_valid() and self.raise_exception:
            raise translate_validation(filterset.errors)
        return cast("models.QuerySet[Any]", filterset.qs)


# --- serializers ----------------------------------------------------------------------------------------

class RejectUnknownFieldsMixin:
    """For writable serializers: a field the serializer does not know is a 400 naming it,
    instead of being dropped silently (a misspelt ``contxt_length`` would otherwise "succeed").
    Read-only fields are known, so a client may send back what it read."""

    fields: Any
    # Sent by the browsable API's HTML forms; not part of any resource.
    ignored_input_fields = frozenset({"csrfmiddlewaretoken"})

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields) - self.ignored_input_fields)
            if unknown:
                writable = ", ".join(name for name, field in self.fields.items() if not field.read_only)
                raise exceptions.ValidationError(
                    {name: [f"unknown field; the fields you may send are: {writable}"] for name in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]

"""Optimistic concurrency for writable API resources: ``ETag`` on reads, ``If-Match`` required
on PUT, PATCH and DELETE, so two automations cannot silently overwrite each other.

The ETag is a hash of the resource's representation: any change by anyone changes it.
A write without If-Match gets 428; one whose If-Match is stale gets 412 and changes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response


class PreconditionRequired(APIException):
    status_code = 428
    default_code = "precondition_required"
    default_detail = "Send If-Match with the resource's ETag (from GET) to change it."


class PreconditionFailed(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_code = "precondition_failed"
    default_detail = "The resource changed since you read it (ETag mismatch); read it again."


def etag_for(data: Any) -> str:
    digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:32]
    return f'"{digest}"'


class ETagMixin:
    """For ModelViewSets: adds ETag to retrieve and checks If-Match on update/destroy."""

    def _current_etag(self) -> str:
        instance = self.get_object()  # type: ignore[attr-defined]
        return etag_for(self.get_serializer(instance).data)  # type: ignore[attr-defined]

    def _check_if_match(self, request: Request) -> None:
        wanted = request.headers.get("If-Match")
        if not wanted:
            raise PreconditionRequired()
        current = self._current_etag()
        if wanted.strip() != "*" and current not in [tag.strip() for tag in wanted.split(",")]:
            raise PreconditionFailed()

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().retrieve(request, *args, **kwargs)  # type: ignore[misc]
        response["ETag"] = etag_for(response.data)
        return response

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self._check_if_match(request)
        response = super().update(request, *args, **kwargs)  # type: ignore[misc]
        response["ETag"] = etag_for(response.data)
        return response

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self._check_if_match(request)
        return super().destroy(request, *args, **kwargs)  # type: ignore[misc]

"""CSV exports of list pages: one streaming response and one rule against formula injection.

Every list page that offers ``?format=csv`` (plans, operations, deployments) goes through
``csv_response``: rows stream as they are read, and every cell passes ``csv_cell``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

from django.http import StreamingHttpResponse

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value a spreadsheet shows as text: a cell starting with = + - @ (or tab, CR) would be
    read as a formula, so it gets a leading quote. Numbers are left as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


class _Echo:
    """A file for csv.writer that hands each row back, so rows stream instead of piling up."""

    def write(self, value: str) -> str:
        return value


def csv_response(rows: Iterable[Iterable[Any]], filename: str) -> StreamingHttpResponse:
    """A streamed CSV download of ``rows`` (the header first), every cell through ``csv_cell``."""
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow([csv_cell(v) for v in row]) for row in rows),
                                     content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response

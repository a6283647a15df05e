"""Serve the ``plotly.min.js`` shipped inside the plotly package as ``plotly/plotly.min.js``
(only that file: the package's datasets are not static files of the console)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PACKAGE_DATA = Path(plotly.__file__).resolve().parent / "package_data"
NAME = "plotly/plotly.min.js"


class PlotlyFinder(BaseFinder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.storage = FileSystemStorage(location=str(PACKAGE_DATA))
        self.storage.prefix = "plotly"  # type: ignore[attr-defined]

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> Any:  # the stub's overloads: str | list[str]
        if path == NAME:
            found = str(PACKAGE_DATA / "plotly.min.js")
            return [found] if find_all else found
        return [] if find_all else ""

    def list(self, ignore_patterns: Any) -> Iterator[tuple[str, FileSystemStorage]]:
        yield "plotly.min.js", self.storage

    def check(self, **kwargs: Any) -> builtins.list[Any]:  # `list` here is the method above
        return []

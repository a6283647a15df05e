"""Serve the ``plotly.min.js`` shipped inside the plotly package as
``plotly/plotly-<version>.min.js`` (only that file: the package's datasets are not static
files of the console).

The name carries the package's version, so whitenoise may serve it ``immutable`` with a
ten-year max-age (setting WHITENOISE_IMMUTABLE_FILE_TEST matches its name), with no
collectstatic in development and tests. The file and its gzip form (brotli too when the
``brotli`` module is installed) are written once per version under ``VAR_DIR/plotly/``;
whitenoise serves the compressed form to clients that accept it.
"""

from __future__ import annotations

import builtins
import gzip
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plotly
from django.conf import settings
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PACKAGE_DATA = Path(plotly.__file__).resolve().parent / "package_data"
FILE = f"plotly-{plotly.__version__}.min.js"
NAME = f"plotly/{FILE}"

def prepared_dir() -> Path:
    """``VAR_DIR/plotly/`` holding the versioned bundle and its compressed forms (written when
    missing; each file appears atomically, so concurrent processes never serve half a file)."""
    out = Path(settings.VAR_DIR) / "plotly"
    target = out / FILE
    source = PACKAGE_DATA / "plotly.min.js"
    if target.exists() and (out / (FILE + ".gz")).exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{FILE}.{os.getpid()}"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    data = source.read_bytes()
    tmp.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    os.replace(tmp, out / (FILE + ".gz"))
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        tmp.write_bytes(brotli.compress(data))
        os.replace(tmp, out / (FILE + ".br"))
    return out


class PlotlyFinder(BaseFinder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.storage = FileSystemStorage(location=str(prepared_dir()))
        self.storage.prefix = "plotly"  # type: ignore[attr-defined]

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> Any:  # the stub's overloads: str | list[str]
        if path == NAME:
            found = str(Path(self.storage.location) / FILE)
            return [found] if find_all else found
        return []  # not ours (a str "" would make finders.find answer [""] for a missing file)

    def list(self, ignore_patterns: Any) -> Iterator[tuple[str, FileSystemStorage]]:
        # The compressed forms too: whitenoise looks its alternatives up among listed files.
        for name in (FILE, FILE + ".gz", FILE + ".br"):
            if (Path(self.storage.location) / name).exists():
                yield name, self.storage

    def check(self, **kwargs: Any) -> builtins.list[Any]:  # `list` here is the method above
        return []

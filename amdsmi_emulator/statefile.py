"""State-file plumbing shared by the amd-smi emulator and the engine emulator: the lock, the
atomic write and a read-modify-write on an existing file.

Nothing here knows the hive model (no ``partitions.geometry``), so standalone tools such as
``engine_emulator`` can change the state under the same lock as amd-smi without importing it.
Every read-modify-write holds an exclusive ``fcntl.flock`` on ``<file>.lock`` and replaces the
file atomically (temp file + ``os.replace``), so readers never see a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read(path: str | os.PathLike[str]) -> dict | None:
    try:
        with open(path) as fh:
            data: dict = json.load(fh)
            return data
    except FileNotFoundError:
        return None


def write(path: str | os.PathLike[str], data: dict) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def update(path: str | os.PathLike[str]) -> Iterator[dict]:
    """Lock, read, yield the data for changes, write it back. Unlike
    ``EmulatorState.transaction`` a missing file is an error (``FileNotFoundError``), not
    created: only the amd-smi emulator knows how to make a hive."""
    with locked(path):
        data = read(path)
        if data is None:
            raise FileNotFoundError(path)
        yield data
        write(path, data)

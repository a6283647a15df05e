"""The project stands on its own: no tracked file points at the hand-over folder beside it.

A user's clone has no sibling folders, so a path like ``../shared`` (or an environment
variable naming it) in code, tests, docs or configuration breaks for them. The fixtures and
hardware notes the project relies on live in ``tests/fixtures/`` and ``docs/``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# "../shared", "shared/reference", "shared/fixtures", "AIM_SHARED_DIR": the hand-over's paths.
FORBIDDEN = re.compile(r"\.\./shared\b|\bshared/(?:reference|fixtures)\b|AIM_SHARED_DIR|/work/shared\b")
SELF = Path(__file__).resolve().relative_to(REPO).as_posix()


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return [REPO / line for line in out.splitlines() if line and line != SELF]


def test_no_file_refers_to_the_handover_folder() -> None:
    offenders = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert offenders == [], "files refer to the hand-over folder:\n" + "\n".join(offenders)


def test_the_pattern_catches_what_it_must() -> None:
    assert FORBIDDEN.search('Path(__file__).parents[2] / "../shared/fixtures"')
    assert FORBIDDEN.search("see shared/reference/amd-smi.md")
    assert FORBIDDEN.search('os.environ["AIM_SHARED_DIR"]')
    assert not FORBIDDEN.search("memory is shared with the CPU")


def test_fixtures_carry_their_provenance() -> None:
    for folder in ("amd-smi", "nvidia", "kserve"):
        readme = REPO / "tests" / "fixtures" / folder / "README.md"
        assert readme.is_file(), readme
        assert "Provenance" in readme.read_text(encoding="utf-8"), readme
    assert (REPO / "docs" / "hardware" / "amd-smi.md").is_file()

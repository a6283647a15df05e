"""The project stands on its own: no tracked file points at the hand-over folder beside it.

A user's clone has no sibling folders, so a path up into the hand-over folder (or an
environment variable naming it) in code, tests, docs or configuration breaks for them. The fixtures and
hardware notes the project relies on live in ``tests/fixtures/`` and ``docs/``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The hand-over's paths: the folder beside the checkout, its reference/ and fixtures/, and the
# environment variable that once named it. Built from parts so this file does not match itself.
HANDOVER = "sha" + "red"
FORBIDDEN = re.compile(rf"\.\./{HANDOVER}\b|\b{HANDOVER}/(?:reference|fixtures)\b|AIM_{HANDOVER.upper()}_DIR|/work/{HANDOVER}\b")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return [REPO / line for line in out.splitlines() if line]


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
    assert FORBIDDEN.search(f'Path(__file__).parents[2] / "../{HANDOVER}/fixtures"')
    assert FORBIDDEN.search(f"see {HANDOVER}/reference/amd-smi.md")
    assert FORBIDDEN.search(f'os.environ["AIM_{HANDOVER.upper()}_DIR"]')
    assert not FORBIDDEN.search("memory is shared with the CPU")


def test_fixtures_carry_their_provenance() -> None:
    for folder in ("amd-smi", "nvidia", "kserve"):
        readme = REPO / "tests" / "fixtures" / folder / "README.md"
        assert readme.is_file(), readme
        assert "Provenance" in readme.read_text(encoding="utf-8"), readme
    assert (REPO / "docs" / "hardware" / "amd-smi.md").is_file()

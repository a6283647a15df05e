"""The node agent runs as root on real nodes (amd-smi needs it): Celery's "superuser
privileges" SecurityWarning is filtered out of its output, and nothing else is (issue 13, 7)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from celery import platforms
from celery.exceptions import SecurityWarning
from django.core.management import call_command

from aimconsole.celery import app
from partitions.management.commands import run_agent


@pytest.fixture
def as_root(monkeypatch):  # type: ignore[no-untyped-def]
    """Celery's privilege check sees uid 0 whoever runs the tests."""
    for name in ("getuid", "geteuid", "getgid", "getegid"):
        monkeypatch.setattr(platforms.os, name, lambda: 0)


def test_celery_warns_a_root_worker_without_the_filter(as_root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        platforms.check_privileges(app.conf.accept_content)
    assert any("superuser privileges" in str(w.message) for w in caught)


def test_the_filter_silences_only_the_superuser_warning(as_root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_agent.quiet_root_warning()
        platforms.check_privileges(app.conf.accept_content)
        warnings.warn(SecurityWarning("another security warning"), stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not any("superuser privileges" in m for m in messages)
    assert "another security warning" in messages


def test_the_command_installs_the_filter_before_the_agent_starts(as_root, monkeypatch):
    seen: list[list[str]] = []

    def fake_run_agent(self: Any, **options: Any) -> None:  # stands in for lease, sync, loops and worker
        with warnings.catch_warnings(record=True) as caught:
            # Keep the filters the command installed; record what passes them.
            platforms.check_privileges(app.conf.accept_content)
        seen.append([str(w.message) for w in caught])

    monkeypatch.setattr(run_agent.Command, "run_agent", fake_run_agent)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        call_command("run_agent", node="emu-a")
    assert seen == [[]]

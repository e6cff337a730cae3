"""Fixtures every test gets."""

from __future__ import annotations

import pytest

from napari_softcopy import platform


@pytest.fixture(autouse=True)
def _no_notices_from_earlier_tests(monkeypatch) -> None:
    """`platform.degrade` records what does not apply *in this process*, and an engine's
    status carries it: the CLI and the widget run each engine in a process of its own, the
    tests run many in one. Each test starts with none recorded."""
    monkeypatch.setattr(platform, "_degraded", {})

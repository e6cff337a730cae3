"""Gate for the napari/Qt tests in this folder.

They need napari, a Qt binding (PyQt6 from the `testing` extra), napari's pytest plugin
(`make_napari_viewer`, registered by napari itself through the `pytest11` entry point
`napari.utils._testsupport`) and an X server with OpenGL: pytest-xvfb starts Xvfb (Debian
`xvfb` + `libgl1-mesa-dri`, installed by scripts/bootstrap) before collection and sets
DISPLAY. `QT_QPA_PLATFORM=offscreen` is no substitute: napari's canvas renders blank there.

Outside CI the whole folder is skipped with the reason when something is missing; with
CI set it is an error instead, so CI can never pass without running them. The check runs
when the first test module here is collected (after pytest-xvfb has set DISPLAY), so test
modules may import napari and Qt at module level.
"""

from __future__ import annotations

import os

import pytest


def _why_not() -> str | None:
    try:
        import napari.utils._testsupport  # noqa: F401  (napari and its pytest plugin)
        from qtpy import QtWidgets  # noqa: F401  (fails when no Qt binding is installed)
    except Exception as exc:  # ImportError, or qtpy's QtBindingsNotFoundError
        return f"napari/Qt not importable ({type(exc).__name__}: {exc}); run scripts/bootstrap"
    if os.environ.get("QT_QPA_PLATFORM", "xcb") not in ("xcb", ""):
        return None  # the caller chose a platform; the tests say if it renders blank
    if not os.environ.get("DISPLAY"):
        return (
            "no X display: install Xvfb (Debian package xvfb; scripts/bootstrap does) so "
            "pytest-xvfb can start one, or run under xvfb-run -a"
        )
    return None


_checked: list[str | None] = []


class _Unrunnable(pytest.Module):
    """Stands in for a test module here when the napari tests cannot run."""

    reason = ""

    def collect(self):
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            raise RuntimeError(f"CI is set but the napari tests cannot run: {self.reason}")
        pytest.skip(self.reason)


def pytest_pycollect_makemodule(module_path, parent):
    """Before a test module here is imported (pytest-xvfb has set DISPLAY by then)."""
    if not _checked:
        _checked.append(_why_not())
    if _checked[0] is None:
        return None  # collect the module as usual
    module = _Unrunnable.from_parent(parent, path=module_path)
    module.reason = _checked[0]
    return module


@pytest.fixture
def make_napari_viewer(make_napari_viewer, qtbot):
    """napari's fixture, with the widgets' background checks (superqt workers in Qt's global
    thread pool) ended and their results delivered before it closes the viewers and counts
    the viewers left: a check still running holds the widget, and so its viewer, and the
    count then fails the test (seen twice, on a loaded machine, after an S3 check).

    Twice over: a worker started from inside an event loop (a ``qtbot.waitUntil``) is not
    in the pool yet but queued on a 1 ms timer (superqt's ``WorkerBase.start``), which only
    an event loop fires; ``waitForDone`` alone does not see it."""
    yield make_napari_viewer
    from qtpy.QtCore import QThreadPool
    from qtpy.QtWidgets import QApplication

    for _ in range(2):
        qtbot.wait(5)  # (an event loop: a queued worker's timer fires, and it starts)
        QThreadPool.globalInstance().waitForDone(30_000)
        QApplication.processEvents()

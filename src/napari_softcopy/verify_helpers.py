"""The helper processes of a split verification walk (`verify.verify_tree` with
``processes`` > 1): each walks the part of both trees whose names hash to it.

A walk is system calls and interpreter time held to one core by the interpreter lock:
threads only slow it down, processes do not.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

from .helper_process import HelperProcess, serve

if TYPE_CHECKING:
    from .verify import VerifyReport

log = logging.getLogger("napari_softcopy.verify")  # (its messages are the walk's)


def start_helpers(count: int) -> list[WalkHelper]:
    """Start ``count`` helper processes for a parallel `verify_tree`.

    An interpreter takes about 0.1 s to start: the engine starts them when its finish
    begins, so that they are ready when the last files are copied. A folder of 50,000 files
    takes 0.6-0.8 s in one process, 0.4-0.5 s in two (2 cores; benchmarks/notes.md).
    Each inherits the calling thread's CPU and IO priority and its session.
    """
    return [WalkHelper() for _ in range(max(0, count))]


class WalkHelper:
    """One helper process (`helper_process`): it waits for its part's options, walks that
    part and answers with its `VerifyReport`. One that fails (cannot start, dies, answers
    something unreadable) is logged and its part walked by the caller: a helper can make a
    walk faster, never make it pass."""

    _MAIN = "from napari_softcopy.verify_helpers import _helper_main; _helper_main()"

    def __init__(self) -> None:
        self.process = HelperProcess(
            self._MAIN,
            name="verification helper",
            fallback="its part is walked here",
            logger=log,
        )

    def send(self, options: dict) -> None:
        """Start walking the part ``options`` describe."""
        self.process.send(options)

    def result(self, stop: threading.Event | None = None) -> VerifyReport | None:
        """Wait for the helper's report (None where it failed, or ``stop`` was set)."""
        ok, report = self.process.receive(stop)
        if not ok:
            return None
        from .verify import VerifyReport

        if not isinstance(report, VerifyReport):
            self.process.fail(f"no report: {type(report).__name__}")
            return None
        self.process.close()
        return report

    def close(self) -> None:
        """End the process if it still runs (an unused or abandoned helper)."""
        self.process.close()


def _helper_main() -> None:
    """Body of a `WalkHelper` process: one part walked, its report the answer."""
    from .verify import _walk_part  # (verify imports this module)

    # (a walk cut short must never look like a whole one: SIGTERM ends the process; an
    # orphan's report has no reader, so it is killed with its parent)
    serve(
        lambda options, _stop: _walk_part(options, None),
        parent_death=signal.SIGKILL,
        interruptible=False,
    )

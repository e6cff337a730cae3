"""The helper processes of a split verification walk (`verify.verify_tree` with
``processes`` > 1): each walks the part of both trees whose names hash to it.

A walk is system calls and interpreter time held to one core by the interpreter lock:
threads only slow it down, processes do not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

from .platform import end_with_parent

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
    """One helper process: it waits for its part's options on stdin, walks that part and
    writes its pickled `VerifyReport` to stdout. One that fails (cannot start, dies, writes
    something unreadable) is logged and its part walked by the caller: a helper can make a
    walk faster, never make it pass."""

    _MAIN = "from napari_softcopy.verify_helpers import _helper_main; _helper_main()"

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", self._MAIN],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            self._failed(str(exc))

    def send(self, options: dict) -> None:
        """Start walking the part ``options`` describe."""
        if self._proc is None:
            return
        try:
            self._proc.stdin.write(json.dumps(options).encode() + b"\n")
            self._proc.stdin.flush()  # (closed by communicate)
        except OSError as exc:
            self._failed(f"could not be told its part: {exc}")

    def result(self, stop: threading.Event | None = None) -> VerifyReport | None:
        """Wait for the helper's report (None where it failed, or ``stop`` was set)."""
        if self._proc is None:
            return None
        while True:  # (a helper stuck on a hung mount must not hold up a stop)
            try:
                out, err = self._proc.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if stop is not None and stop.is_set():
                    self.close()
                    return None
        if self._proc.returncode == 0:
            try:
                report = pickle.loads(out)
            except Exception as exc:  # (truncated or foreign output: never trusted)
                err = f"unreadable result: {exc}".encode()
            else:
                from .verify import VerifyReport

                if isinstance(report, VerifyReport):
                    self._proc = None
                    return report
                err = b"no report"
        lines = err.decode(errors="replace").strip().splitlines()
        self._failed(lines[-1] if lines else f"exit code {self._proc.returncode}")
        return None

    def close(self) -> None:
        """End the process if it still runs (an unused or abandoned helper)."""
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            self._proc.communicate()
            self._proc = None

    def _failed(self, why: str) -> None:
        log.warning("verification helper failed (%s): its part is walked here", why)
        self.close()


def _helper_main() -> None:
    """Body of a `WalkHelper` process."""
    end_with_parent(signal.SIGKILL)  # (an orphan's result has no reader)
    from .verify import _walk_part  # (verify imports this module)

    line = sys.stdin.buffer.readline()
    if not line:
        return  # not used
    sys.stdout.buffer.write(pickle.dumps(_walk_part(json.loads(line), None)))

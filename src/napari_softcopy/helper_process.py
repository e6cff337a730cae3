"""One protocol for the engine's helper processes: the copy helper (`copy_helper`), the
helpers of a split verification walk (`verify_helpers`) and of a split resume scan
(`scan_walk`).

A helper is ``python -c <main>`` started by the calling thread, so it inherits that thread's
nice value, IO class and session. Its setup (small, JSON) is its command line's last word;
then the parent sends requests and the child answers each with one message, in order.

Framing: a message is a pickle (protocol 5) after a 12-byte header (``b"scp1"``, then its
length, 8 bytes little-endian). Chosen by measurement on the hot path, the copy helper's
answers (2 cores, a batch of 32 outcomes): encoding and decoding take 3.6 us as plain tuples
and 14 us as named tuples in pickles, 40 us as JSON; a whole round trip between two
processes 33-35 us in frames, 55-58 us in JSON lines (either well under 1% of copying the
32 files). A split walk's `VerifyReport` was pickled already. Unpickling runs code the
sender chose: only our own child process is ever read, never a file or a socket. The magic
makes foreign output (a library printing to stdout) an unreadable answer, not a huge length.
Requests and answers in flight at once must fit the pipes (64 KiB each way) unless read as
they are sent: the copy helper's two batches in flight are a few KiB.
The child's stdout is kept for the frames and its fd 1 pointed at stderr, so a stray
``print`` cannot corrupt them either; stderr goes to a temporary file (never a full pipe
blocking the child), whose last line says why a helper failed.

A helper that cannot start, dies (also mid-answer), or answers something unreadable is
closed and logged once, and its work done by the parent: a helper can make work faster,
never change its result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import select
import signal
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .platform import StopFlag, end_with_parent

if TYPE_CHECKING:
    import subprocess

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<4sQ")
_MAGIC = b"scp1"
#: How often a receive with a ``stop`` event looks at it (a helper stuck on a hung mount
#: must not hold up a stop).
_STOP_POLL_S = 0.1


class ChannelClosed(Exception):
    """The other side closed its end (mid-message, or between two)."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int, stop: threading.Event | None = None) -> bytearray:
    """``size`` bytes from ``fd`` (`ChannelClosed` at its end). With ``stop``, waits for data
    in steps of `_STOP_POLL_S` and returns nothing once ``stop`` is set."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    waiting = None
    if stop is not None:
        waiting = select.poll()  # (not select(): a descriptor may be above 1024)
        waiting.register(fd, select.POLLIN)
    while got < size:
        if waiting is not None:
            while not waiting.poll(_STOP_POLL_S * 1000):
                if stop.is_set():
                    return bytearray()
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise ChannelClosed(f"it ended after {got} of {size} bytes" if got else "it ended")
        got += n
    return buf


def encode(message: Any) -> bytes:
    """One frame: the header and the pickled ``message``."""
    body = pickle.dumps(message, protocol=5)
    return _HEADER.pack(_MAGIC, len(body)) + body


def read_message(fd: int, stop: threading.Event | None = None) -> tuple[bool, Any]:
    """Read one frame from ``fd``: ``(True, message)``, or ``(False, None)`` when ``stop``
    was set first. Raises `ChannelClosed` at end of file, ValueError for anything not a frame."""
    header = _read_exact(fd, _HEADER.size, stop)
    if not header:
        return False, None
    magic, size = _HEADER.unpack(header)
    if magic != _MAGIC:
        raise ValueError(f"not a frame: {header[:16]!r}")
    return True, pickle.loads(_read_exact(fd, size))


class HelperProcess:
    """The parent's side of one helper process.

    Parameters
    ----------
    main : str
        Python code the child runs (``python -c main``); it calls `serve`.
    setup : JSON-able, optional
        The child's setup, read by `setup_argument` in the child.
    name, fallback : str
        For the one warning of a failure: "<name> failed (why): <fallback>".
    pass_fds : sequence of int
        Descriptors the child inherits (at the same numbers).
    logger : logging.Logger, optional
        Where the failure is said (the caller's logger: it is the caller's work).
    """

    def __init__(
        self,
        main: str,
        *,
        name: str,
        fallback: str,
        setup: Any = None,
        pass_fds: Sequence[int] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self._fallback = fallback
        self._log = logger or log
        self._proc: subprocess.Popen | None = None
        self._interrupted = False
        self._poll: select.poll | None = None
        # (here, not with the module: a child imports this module for `serve`, and these two
        # with what they bring (shutil, bz2, lzma, random, selectors...: 19 modules) cost a
        # copy or scan helper 1.1-1.3 MiB of RSS it never uses)
        import subprocess
        import tempfile

        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed in `close`)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", main, json.dumps(setup)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                pass_fds=tuple(pass_fds),
                bufsize=0,  # (frames are read by the descriptor: no hidden buffer)
            )
        except OSError as exc:
            self.fail(f"cannot start: {exc}")

    @property
    def running(self) -> bool:
        """False once the helper failed or was closed."""
        return self._proc is not None

    @property
    def pid(self) -> int | None:
        """The child's process id (None once closed)."""
        return None if self._proc is None else self._proc.pid

    def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the child to end by itself (it does when the thread
        that started it ends); its exit code. Raises `subprocess.TimeoutExpired`."""
        if self._proc is None:
            raise ValueError(f"{self.name} was closed")
        return self._proc.wait(timeout)

    def send(self, message: Any) -> bool:
        """Send one request; False when the helper is gone (it is then closed, logged)."""
        if self._proc is None:
            return False
        try:
            _write_all(self._proc.stdin.fileno(), encode(message))
            return True
        except OSError as exc:
            self.fail(f"cannot be reached: {exc}")
            return False

    def receive(self, stop: threading.Event | None = None) -> tuple[bool, Any]:
        """The answer to the oldest request: ``(True, answer)``, or ``(False, None)`` when the
        helper failed (it is then closed and the failure logged) or ``stop`` was set (then
        closed too)."""
        if self._proc is None:
            return False, None
        try:
            ok, message = read_message(self._proc.stdout.fileno(), stop)
        except ChannelClosed as exc:
            self.fail(str(exc))
            return False, None
        except Exception as exc:  # (unpickling foreign bytes can raise almost anything)
            self.fail(f"unreadable answer: {exc!r}")
            return False, None
        if not ok:
            self.close()
        return ok, message

    def ready(self) -> bool:
        """Whether the helper has written something not read yet: `receive` then does not
        wait for a message to begin (one that has ended counts too: `receive` says so)."""
        if self._proc is None:
            return False
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self._proc.stdout.fileno(), select.POLLIN)
        return bool(self._poll.poll(0))

    def interrupt(self) -> None:
        """Ask the helper to stop (from any thread): SIGTERM, which `serve` turns into its
        ``stop`` event (the answer in work comes early) or an exit while it waits. A failure
        after an interrupt is expected and not logged."""
        self._interrupted = True
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)

    def close(self, timeout: float = 2.0) -> str:
        """End the helper: SIGTERM and end of input, killed if it has not exited within
        ``timeout`` (e.g. stuck on a hung mount). Returns the last line of its stderr."""
        proc, self._proc = self._proc, None
        if proc is None:
            self._stderr.close()
            return ""
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        import subprocess  # (loaded by `__init__`: a name lookup)

        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            proc.stdout.close()
        err = b""
        with contextlib.suppress(OSError):
            self._stderr.seek(0)
            err = self._stderr.read()
            self._stderr.close()
        lines = err.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def fail(self, why: str) -> None:
        """Close the helper and say once why (unless it was interrupted: an interrupted
        helper may end before it answers)."""
        last_words = self.close(timeout=0.5)
        if not self._interrupted:
            why = f"{why}: {last_words}" if last_words else why
            self._log.warning("%s failed (%s): %s", self.name, why, self._fallback)


# ---------------------------------------------------------------------------- the child
def setup_argument() -> Any:
    """In the child: the parent's ``setup``."""
    return json.loads(sys.argv[-1])


def serve(
    answer: Callable[[Any, StopFlag], Any],
    *,
    parent_death: int,
    interruptible: bool = True,
    stream: bool = False,
) -> None:
    """The child's main loop: each request answered with ``answer(request, stop)``, until
    the parent closes its end.

    SIGTERM (`HelperProcess.interrupt`, `close`) exits while the child waits for a request.
    While one is in work it sets ``stop`` if ``interruptible`` (``answer`` then returns
    early, saying what it did and did not do), else it exits there too (an answer that cannot
    say it was cut short must never be sent). The kernel sends ``parent_death`` when the
    thread that started the helper ends: SIGTERM where ``answer`` must clean up (a temporary
    file), SIGKILL where nothing is left behind.

    With ``stream``, ``answer(request, stop, send)`` may send parts ahead of its answer:
    ``send(message)`` writes one at once (the parent reads each as it comes, then the answer;
    while the pipe is full, the child waits: a parent slow to read holds it back, it never
    buffers without bound).
    """
    frames = os.dup(1)
    os.dup2(2, 1)  # (a stray print goes to stderr, never into the frames)
    stop = StopFlag()  # (set in a signal handler: no lock, as `threading.Event` takes)
    busy = False

    def on_sigterm(*_) -> None:
        if stop.is_set():  # (a second one, while the first's exit unwinds)
            return
        stop.set()
        if not busy or not interruptible:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    end_with_parent(parent_death)
    while not stop.is_set():
        try:
            _, request = read_message(0)
        except ChannelClosed:
            return
        busy = True
        if stream:
            reply = encode(answer(request, stop, lambda part: _write_all(frames, encode(part))))
        else:
            reply = encode(answer(request, stop))
        _write_all(frames, reply)
        busy = False

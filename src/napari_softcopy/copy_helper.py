"""A second process that copies files of a large backlog beside the engine's own workers.

Per file, a copy is a dozen system calls plus the interpreter's work between them, and
threads of one process share one interpreter lock: a second copy thread only made a local
copy slower (benchmarks/notes.md item 13). A second *process* does run beside the first.
The engine starts one when it finishes with thousands of files still to copy (a finished
archive, or a backlog at the marker) on a machine with two cores or more, and hands it
batches of paths from its pending set.

The helper does only the common case: a regular, settled source file whose copy is missing
or stale is copied by `transfer.sync_file`, the same call the engine makes. Everything else
(a source that vanished or is not a regular file, a write in progress, a destination error,
a source that changed while it was read) is handed back for the engine to sync itself, with
its error handling, retries and messages. A helper that cannot start, dies or answers
nonsense is logged and its batch synced by the engine: a helper can make a copy faster,
never change what is copied.

The helper works on the engine's own open directories of both roots (passed as
descriptors), so it reaches exactly the trees the engine does, and runs at the engine's
priority (it inherits the starting thread's nice value and IO class).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading

from .destinations import LocalDestination
from .destinations.probe import DestinationProbe
from .platform import end_with_parent
from .transfer import Stopped, settle_left, sync_file

log = logging.getLogger(__name__)

#: Paths per batch: large enough that a batch's round trip is small against its copies,
#: small enough that the last batch does not keep the engine's own workers waiting.
BATCH = 32

# A file's outcome in the helper: ("copied", size, mtime_ns, size of the copy it replaced
# or None), ("current",) (the copy was up to date), ("engine",) (the engine syncs it) or
# ("untried",) (not looked at: the helper stopped, or gave up the batch after an error).
COPIED, CURRENT, ENGINE, UNTRIED = "copied", "current", "engine", "untried"


def sync_common_case(
    rel: str,
    force: bool,
    src_dir_fd: int,
    dest: LocalDestination,
    stop: threading.Event,
    *,
    settle_s: float,
    fsync: bool,
    uncache: bool,
) -> tuple:
    """Copy ``rel`` if its copy is missing or stale, where nothing unusual happens.

    Returns one of the outcomes above; ``ENGINE`` for anything the engine must see itself.
    An ``OSError`` raised here is the engine's too, for the same reason.
    """
    st = os.stat(rel, dir_fd=src_dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode) or settle_left(st.st_mtime_ns, settle_s):
        return (ENGINE,)
    result, old = sync_file(
        rel,
        st,
        dest,
        force=force,
        stop=stop,
        src_dir_fd=src_dir_fd,
        fsync=fsync,
        uncache=uncache,
        settle_s=settle_s,
    )
    if result is None:
        return (CURRENT,)
    if not result.committed:
        return (ENGINE,)
    return (COPIED, result.size, result.mtime_ns, None if old is None else old.size)


class CopyHelper:
    """The engine's side of one helper process.

    Parameters
    ----------
    src_dir_fd : int
        The engine's open directory of the source root.
    dest : LocalDestination
        The engine's destination: its root descriptor is passed on (the helper then reaches
        exactly the tree the engine does), with whether it records source stamps.
    settle_s, fsync, uncache
        As the engine copies: the age a source file must have, flush each file, drop copied
        pages.
    """

    _MAIN = "from napari_softcopy.copy_helper import _helper_main; _helper_main()"

    def __init__(
        self,
        src_dir_fd: int,
        dest: LocalDestination,
        *,
        settle_s: float,
        fsync: bool,
        uncache: bool,
    ) -> None:
        self._proc: subprocess.Popen | None = None
        self._interrupted = False
        dest_dir_fd = dest.fileno()
        options = {
            "source_fd": src_dir_fd,
            "destination_fd": dest_dir_fd,
            "destination": str(dest.path),
            "stamps": dest.capabilities.xattrs,
            "probed": dest.probed.to_json(),  # (what the engine's probe found: not again)
            "settle_s": settle_s,
            "fsync": fsync,
            "uncache": uncache,
        }
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", self._MAIN],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,  # (read once it has ended: why it failed)
                pass_fds=(src_dir_fd, dest_dir_fd),
            )
        except OSError as exc:
            self._failed(f"cannot start: {exc}")
            return
        self._send(options)

    @property
    def running(self) -> bool:
        """False once the helper failed or was closed."""
        return self._proc is not None

    def submit(self, batch: list[tuple[str, bool]]) -> bool:
        """Send a batch of ``(path, force)``; False when the helper is gone."""
        return self._send(batch)

    def outcomes(self, count: int) -> list[tuple] | None:
        """The outcomes of the oldest batch submitted (``count`` paths); None where the
        helper failed (it is then closed; every path of every batch in flight is the
        engine's)."""
        if self._proc is None:
            return None
        try:
            line = self._proc.stdout.readline()
        except OSError as exc:
            self._failed(f"unreadable answer: {exc}")
            return None
        try:
            outcomes = [tuple(item) for item in json.loads(line)]
        except (ValueError, TypeError) as exc:
            self._failed("it ended" if not line else f"unreadable answer: {exc}")
            return None
        if len(outcomes) != count or not all(map(_well_formed, outcomes)):
            self._failed("answer does not match the batch")
            return None
        return outcomes

    def interrupt(self) -> None:
        """Ask the helper to stop (from any thread): it abandons a copy in progress, answers
        the batch it was working on (the rest untried) and exits."""
        self._interrupted = True
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)

    def close(self, timeout: float = 2.0) -> str:
        """Let the helper end: it abandons a copy in progress (removing its temporary file)
        and exits; killed if it has not within ``timeout`` (e.g. stuck on a hung mount).
        Returns the last line it wrote to stderr (a traceback's last line says why)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = b""
        with contextlib.suppress(OSError):
            proc.stdout.close()
            err = proc.stderr.read()
            proc.stderr.close()
        lines = err.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def _send(self, message) -> bool:
        if self._proc is None:
            return False
        try:
            self._proc.stdin.write(json.dumps(message).encode() + b"\n")
            self._proc.stdin.flush()
            return True
        except OSError as exc:
            self._failed(f"cannot be reached: {exc}")
            return False

    def _failed(self, why: str) -> None:
        last_words = self.close(timeout=0.5)
        if not self._interrupted:  # (an interrupted one may end before it answers)
            why = f"{why}: {last_words}" if last_words else why
            log.warning("copy helper process failed (%s): the engine copies its files", why)


def _well_formed(outcome: tuple) -> bool:
    if outcome[:1] == (COPIED,) and len(outcome) == 4:
        _, size, mtime_ns, old_size = outcome
        return all(isinstance(n, int) for n in (size, mtime_ns)) and (
            old_size is None or isinstance(old_size, int)
        )
    return outcome in ((CURRENT,), (ENGINE,), (UNTRIED,))


def _helper_main() -> None:
    """Body of a `CopyHelper` process: one batch per line on stdin, its outcomes per line on
    stdout, until stdin closes or SIGTERM (also sent when the engine's thread ends)."""
    stop = threading.Event()
    busy = False

    def on_sigterm(*_) -> None:
        stop.set()  # a copy in progress is abandoned, its temporary file removed
        if not busy:
            raise SystemExit(0)  # waiting for a batch: nothing to abandon

    signal.signal(signal.SIGTERM, on_sigterm)
    end_with_parent(signal.SIGTERM)
    line = sys.stdin.buffer.readline()
    if not line:
        return
    options = json.loads(line)
    src_fd = options["source_fd"]
    dest = LocalDestination(
        options["destination"],
        fd=options["destination_fd"],
        xattrs=options["stamps"],
        probed=DestinationProbe.from_json(options["probed"]),
    )
    copy_options = {k: options[k] for k in ("settle_s", "fsync", "uncache")}
    while not stop.is_set():
        line = sys.stdin.buffer.readline()
        busy = True
        if not line:
            return
        outcomes = []
        give_up = False
        for rel, force in json.loads(line):
            if give_up or stop.is_set():
                outcomes.append((UNTRIED,))
                continue
            try:
                outcome = sync_common_case(rel, force, src_fd, dest, stop, **copy_options)
            except Stopped:
                outcome = (UNTRIED,)
            except OSError:
                # The engine syncs it and reports what went wrong; the rest of the batch is
                # left alone (a full disk would refuse every file of it, once each).
                outcome, give_up = (ENGINE,), True
            outcomes.append(outcome)
        with contextlib.suppress(OSError):  # (a record lost: that file is judged by mtime)
            dest.save_records()  # before the engine, or its verification, looks
        sys.stdout.buffer.write(json.dumps(outcomes).encode() + b"\n")
        sys.stdout.buffer.flush()
        busy = False

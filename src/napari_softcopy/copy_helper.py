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
priority (it inherits the starting thread's nice value and IO class). It speaks the
protocol of `helper_process`: a batch of ``(path, force)`` per request, a list of
`HelperOutcome` per answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import threading
from typing import NamedTuple

from .destinations import LocalDestination
from .helper_process import HelperProcess, serve, setup_argument
from .pending import Ready
from .transfer import Stopped, settle_left, sync_file

log = logging.getLogger(__name__)

#: Paths per batch: large enough that a batch's round trip is small against its copies,
#: small enough that the last batch does not keep the engine's own workers waiting.
BATCH = 32

#: What the helper did with a path: copied it, found its copy current, handed it back for
#: the engine to sync (`ENGINE`), or did not look at it (`UNTRIED`: it stopped, or gave up
#: the batch after an error).
COPIED, CURRENT, ENGINE, UNTRIED = "copied", "current", "engine", "untried"


class HelperOutcome(NamedTuple):
    """What the helper did with one path of a batch. (A named tuple: thousands cross the
    process boundary a second, and it pickles as small and fast as a tuple.)"""

    kind: str  # COPIED, CURRENT, ENGINE or UNTRIED
    #: `COPIED`: the copy's size and mtime (the source's, as copied).
    size: int = 0
    mtime_ns: int = 0
    #: `COPIED`: the size of the copy it replaced; None where there was none.
    replaced_size: int | None = None
    #: `COPIED`: the copy's BLAKE3 digest ("" unless asked for) and the source version's
    #: stamp (as `transfer.CopyResult`).
    digest: str = ""
    stamp: str = ""


# (one object each: a batch's answer pickles them once)
CURRENT_OUTCOME = HelperOutcome(CURRENT)
ENGINE_OUTCOME = HelperOutcome(ENGINE)
UNTRIED_OUTCOME = HelperOutcome(UNTRIED)


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
    digest: bool = False,
) -> HelperOutcome:
    """Copy ``rel`` if its copy is missing or stale, where nothing unusual happens.

    Returns what it did; `ENGINE` for anything the engine must see itself. An ``OSError``
    raised here is the engine's too, for the same reason.
    """
    st = os.stat(rel, dir_fd=src_dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode) or settle_left(st.st_mtime_ns, settle_s):
        return ENGINE_OUTCOME
    synced = sync_file(
        rel,
        st,
        dest,
        force=force,
        stop=stop,
        src_dir_fd=src_dir_fd,
        fsync=fsync,
        uncache=uncache,
        settle_s=settle_s,
        digest=digest,
    )
    result, old = synced.copy, synced.previous
    if result is None:
        return CURRENT_OUTCOME
    if not result.committed:
        return ENGINE_OUTCOME
    replaced = None if old is None else old.size
    return HelperOutcome(
        COPIED, result.size, result.mtime_ns, replaced, result.digest, result.stamp
    )


class CopyHelper:
    """The engine's side of one helper process.

    Parameters
    ----------
    src_dir_fd : int
        The engine's open directory of the source root.
    dest : LocalDestination
        The engine's destination: its root descriptor is passed on (the helper then reaches
        exactly the tree the engine does), with whether it records source stamps.
    settle_s, fsync, uncache, digest
        As the engine copies: the age a source file must have, flush each file, drop copied
        pages, hash the bytes as copied (for the manifest).
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
        digest: bool = False,
    ) -> None:
        setup = {
            "source_fd": src_dir_fd,
            "destination": dest.helper_setup(),
            "settle_s": settle_s,
            "fsync": fsync,
            "uncache": uncache,
            "digest": digest,
        }
        self.process = HelperProcess(
            self._MAIN,
            name="copy helper process",
            fallback="the engine copies its files",
            setup=setup,
            pass_fds=(src_dir_fd, dest.fileno()),
            logger=log,
        )

    @property
    def running(self) -> bool:
        """False once the helper failed or was closed."""
        return self.process.running

    def submit(self, batch: list[Ready] | list[tuple[str, bool]]) -> bool:
        """Send a batch of ``(path, force)``; False when the helper is gone."""
        # As plain tuples: a named tuple costs the child about 0.7 us more to unpickle, which
        # made a batch's round trip 60 us instead of 31 (2 cores, 32 paths).
        return self.process.send(list(map(tuple, batch)))

    def outcomes(self, count: int) -> list[HelperOutcome] | None:
        """The outcomes of the oldest batch submitted (``count`` paths); None where the
        helper failed (it is then closed; every path of every batch in flight is the
        engine's)."""
        ok, outcomes = self.process.receive()
        if not ok:
            return None
        if (
            not isinstance(outcomes, list)
            or len(outcomes) != count
            or not all(map(_well_formed, outcomes))
        ):
            self.process.fail("answer does not match the batch")
            return None
        return outcomes

    def interrupt(self) -> None:
        """Ask the helper to stop (from any thread): it abandons a copy in progress, answers
        the batch it was working on (the rest untried) and exits."""
        self.process.interrupt()

    def close(self, timeout: float = 2.0) -> str:
        """Let the helper end: it abandons a copy in progress (removing its temporary file)
        and exits; killed if it has not within ``timeout`` (e.g. stuck on a hung mount).
        Returns the last line it wrote to stderr (a traceback's last line says why)."""
        return self.process.close(timeout)


def _well_formed(outcome: object) -> bool:
    if not isinstance(outcome, HelperOutcome):
        return False
    if outcome.kind == COPIED:
        return (
            type(outcome.size) is int
            and type(outcome.mtime_ns) is int
            and (outcome.replaced_size is None or type(outcome.replaced_size) is int)
            and type(outcome.digest) is str
            and type(outcome.stamp) is str
        )
    return outcome in (CURRENT_OUTCOME, ENGINE_OUTCOME, UNTRIED_OUTCOME)


def _helper_main() -> None:
    """Body of a `CopyHelper` process (`helper_process.serve`): a batch per request, its
    outcomes per answer. SIGTERM (also sent when the engine's thread ends) abandons a copy
    in progress, removing its temporary file."""
    setup = setup_argument()
    src_fd = setup["source_fd"]
    dest = LocalDestination.from_helper_setup(setup["destination"], writes=True)
    copy_options = {k: setup[k] for k in ("settle_s", "fsync", "uncache", "digest")}

    def copy_batch(batch: list[tuple[str, bool]], stop: threading.Event) -> list[HelperOutcome]:
        outcomes = []
        give_up = False
        for rel, force in batch:
            if give_up or stop.is_set():
                outcomes.append(UNTRIED_OUTCOME)
                continue
            try:
                outcome = sync_common_case(rel, force, src_fd, dest, stop, **copy_options)
            except Stopped:
                outcome = UNTRIED_OUTCOME
            except OSError:
                # The engine syncs it and reports what went wrong; the rest of the batch is
                # left alone (a full disk would refuse every file of it, once each).
                outcome, give_up = ENGINE_OUTCOME, True
            outcomes.append(outcome)
        with contextlib.suppress(OSError):  # (a record lost: that file is judged by mtime)
            dest.save_records()  # before the engine, or its verification, looks
        return outcomes

    serve(copy_batch, parent_death=signal.SIGTERM)

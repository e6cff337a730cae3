"""The finish's looks at the source side of proven folders without a watch: each one found
as it was proven (`source_unchanged`), or not (then it is walked). Why such a look may
vouch for a folder: docs/architecture.md, "A proven folder that gave its watch back".

At a finish past the watch limit most proven folders may be unwatched (94,208 of 110,500
at 1,000,000 files): their looks are a `stat` a file, about 36 us a folder of 10 files in
one process, which the drain after the marker waited for one by one. `look_at_sources`
makes them all before the finish's walk (after the marker, as the walk's own looks were),
on both cores where there are many: chunks of folders go to a helper process
(`helper_process`) that reads each folder's rows from the proofs' spool by offset, while
this process looks at the others. A helper only makes the looks faster: one that fails is
said once, and its chunks are looked at here. A folder not looked at (a stop) counts as
changed: it is walked, never vouched for.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import stat
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice

from .destinations import Capabilities, FileInfo, copy_difference
from .helper_process import HelperProcess, serve, setup_argument
from .layout import is_temp_name
from .march import _DIR_FLAGS
from .platform import available_cores

__all__ = ["HELPER_FROM", "SourceLooks", "look_at_sources", "proven_unchanged", "source_unchanged"]

log = logging.getLogger("napari_softcopy.verify")  # (its messages are the verification's)

#: Unwatched proven folders from which a helper process shares the looks: below it, the
#: helper's start (0.08-0.19 s to its first answer, measured) is longer than the half of
#: the looks it could take (2,048 x 36 us = 0.07 s).
HELPER_FROM = 4_096
#: Folders a request to the helper: a request is about 40 bytes a folder, and two in flight
#: must fit the pipe (64 KiB, `helper_process`); 256 looks take some 8 ms, far more than
#: the round trip (35 us).
_CHUNK = 256
#: Requests in flight to the helper: one it works on, one waiting, so it never idles.
_IN_FLIGHT = 2


def source_unchanged(
    root_fd: int, folder: str, proof_subfolders: Iterable[str], rows: list, caps: Capabilities
) -> bool:
    """Whether the source folder ``folder`` (below the open ``root_fd``), proven with the
    subfolders ``proof_subfolders`` and the ``rows`` its proof spooled, but without a watch
    since, is still as it was proven, by a look at the source only: the same subfolders, the
    same files (skipping the writers' temporary names, as the verification does), each a
    copy by the one rule (`destinations.copy_difference`) of the row its proof listed: size,
    mtime and recorded stamp.

    The stamp is the copied source version's inode and ctime: any write to the file moves its
    ctime (a rewrite in place with size and mtime put back too: ``utime`` sets the ctime), a
    rename over it brings another inode. A file as its row says is the version the proof's
    comparison found copied (by the one rule, its content too for metadata), and its copy is
    the copy's own, unchanged since (a publish or delete there marks the folder). Without
    stamps (a destination without xattrs) size and mtime alone cannot tell: False, and the
    folder is walked.

    Its cost is mostly system calls (measured, 10 files a folder: about 20 us of user and 20
    of system CPU a folder, of which an ``open``, a ``scandir`` and a ``stat`` a file alone
    take 10 and 17): the rule's own share is small, and its fast form
    (`destinations.base.same_version`) saved nothing measurable: the rule is asked as it is.
    """
    expected = {}
    for row in rows:
        if row[3] is None:
            return False
        expected[row[0]] = row
    subfolders = set(proof_subfolders)
    try:
        fd = os.open(folder, _DIR_FLAGS, dir_fd=root_fd)
    except OSError:
        return False
    files = folders = 0
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                name = entry.name
                row = expected.get(name)
                if row is None:
                    if entry.is_dir(follow_symlinks=False):
                        if name not in subfolders:
                            return False
                        folders += 1
                    elif not is_temp_name(name):
                        return False  # (a new file)
                    continue
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    return False
                copy = FileInfo(False, True, row[1], row[2], row[3])
                if copy_difference(st, copy, caps):
                    return False
                files += 1
    except OSError:  # (a file gone while looked at: changed)
        return False
    finally:
        os.close(fd)
    return files == len(expected) and folders == len(subfolders)


#: One folder to look at: its path below the root, its rows' offset and length in the
#: proofs' spool, its subfolders' names.
Look = tuple[str, int, int, tuple[str, ...]]


def proven_unchanged(root_fd: int, spool_fd: int, look: Look, caps: Capabilities) -> bool:
    """`source_unchanged` for one `Look`, its rows read from the proofs' spool (``spool_fd``,
    open; read by ``pread``: one system call a folder, not a seek and a read)."""
    folder, offset, length, subfolders = look
    rows = pickle.loads(os.pread(spool_fd, length, offset))
    return source_unchanged(root_fd, folder, subfolders, rows, caps)


def _look_chunk(root_fd: int, spool_fd: int, chunk: list[Look], caps: Capabilities) -> list[int]:
    """The positions in ``chunk`` of the folders not found as proven."""
    return [
        i for i, look in enumerate(chunk) if not proven_unchanged(root_fd, spool_fd, look, caps)
    ]


@dataclass
class SourceLooks:
    """What `look_at_sources` found: the folders it did not find as proven (changed, or not
    looked at), and how many it looked at, in the helper process too."""

    changed: set[str] = field(default_factory=set)
    looked: int = 0
    in_helper: int = 0


def look_at_sources(
    root_fd: int,
    spool_path: str,
    proofs: Mapping,
    folders: Iterable[str],
    caps: Capabilities,
    *,
    helper_from: int = HELPER_FROM,
    stop: threading.Event | None = None,
) -> SourceLooks:
    """Look at the source of each of ``folders`` (unwatched proven folders, their `Proof` in
    ``proofs``, their rows in the spool at ``spool_path``) below the open ``root_fd``: a
    `SourceLooks`. From ``helper_from`` folders on, where two cores are available, a helper
    process shares the looks (chunks handed out as each side is ready for one)."""
    folders = list(folders)
    found = SourceLooks()
    todo: Iterator[list[Look]] = _chunks(folders, proofs)
    helper = None
    if len(folders) >= helper_from and available_cores() >= 2:
        helper = HelperProcess(
            "from napari_softcopy.source_looks import _helper_main; _helper_main()",
            name="the source looks' helper process",
            fallback="its looks are made in the copy's process",
            setup={"root_fd": root_fd, "spool": spool_path},
            pass_fds=(root_fd,),
            logger=log,
        )
    sent: deque[list[Look]] = deque()

    def feed() -> None:
        while helper.running and len(sent) < _IN_FLIGHT:
            chunk = next(todo, None)
            if chunk is None or not helper.send((caps, chunk)):
                if chunk is not None:
                    here(chunk)
                return
            sent.append(chunk)

    def book(chunk: list[Look], changed: list[int]) -> None:
        found.changed.update(chunk[i][0] for i in changed)
        found.looked += len(chunk)

    def here(chunk: list[Look]) -> None:
        book(chunk, _look_chunk(root_fd, spool.fileno(), chunk, caps))

    try:
        with open(spool_path, "rb", buffering=0) as spool:
            _share(helper, todo, sent, here, feed, book, found, stop)
    except BaseException:
        if helper is not None:
            helper.close()  # (not left waiting for requests that will not come)
        raise
    if found.looked < len(folders):  # (stopped: whatever was not looked at is walked)
        found.changed.update(folders)
        found.looked = 0
    return found


def _share(helper, todo, sent: deque, here, feed, book, found: SourceLooks, stop) -> None:
    """The looks' loop: a chunk here, the helper's answers booked and its next chunk sent
    as each comes; at the end, the helper's chunks looked at here where it failed."""
    stopped = stop.is_set if stop is not None else lambda: False
    if helper is not None:
        feed()  # (first: its interpreter starts while this process looks)
    while not stopped():
        while helper is not None and sent and helper.ready():
            if not _take(helper, sent, book, found, stop):
                break
            feed()
        chunk = next(todo, None)
        if chunk is None:
            break
        here(chunk)
    while helper is not None and sent and not stopped():
        if not _take(helper, sent, book, found, stop):
            break
    if helper is not None and not sent:
        # (every answer in: its exit, 15-35 ms, is not waited for on the drain's path)
        threading.Thread(target=helper.close, name="softcopy-looks-end", daemon=True).start()
    elif helper is not None:
        helper.close()
    for chunk in sent:  # (the helper failed: its chunks looked at here)
        if stopped():
            break
        here(chunk)
    sent.clear()


def _take(helper: HelperProcess, sent: deque, book, found: SourceLooks, stop) -> bool:
    """Book the helper's answer to its oldest request; False where it failed (closed)."""
    ok, changed = helper.receive(stop)
    if not ok or not isinstance(changed, list):
        if ok:
            helper.fail(f"no answer: {type(changed).__name__}")
        return False
    chunk = sent.popleft()
    book(chunk, changed)
    found.in_helper += len(chunk)
    return True


def _chunks(folders: list[str], proofs: Mapping) -> Iterator[list[Look]]:
    """``folders`` in chunks of `_CHUNK`, each folder with where its proof's rows are."""
    it = iter(folders)
    while batch := list(islice(it, _CHUNK)):
        chunk = []
        for folder in batch:
            proof = proofs[folder]
            chunk.append((folder, proof.offset, proof.length, proof.subfolders))
        yield chunk


def _helper_main() -> None:
    """Body of the looks' helper process: each request ``(capabilities, chunk)`` answered
    with the positions of the chunk's folders not found as proven."""
    setup = setup_argument()
    root_fd = setup["root_fd"]
    with open(setup["spool"], "rb", buffering=0) as spool:
        # (an answer cut short would call folders unchanged that were never looked at:
        # SIGTERM ends the process instead; an orphan's answer has no reader)
        serve(
            lambda request, _stop: _look_chunk(root_fd, spool.fileno(), request[1], request[0]),
            parent_death=signal.SIGKILL,
            interruptible=False,
        )

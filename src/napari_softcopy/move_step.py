"""The move as a step of a copy (``copy --move``): what the engine calls after its marker,
what it reports, and how a rerun after a crash resumes it.

`free_after_copy` runs `move.free_source` in the engine's own process (so that a copy the
widget started frees its source too) and turns its outcome into the status's ``freed``
(docs/status.md); `exit_code` maps that to the command line's exit code; `resuming` tells a
copy that a previous run of it was killed while deleting (the journal says "freeing"), so the
rerun finishes the deletion instead of copying a source that is half gone.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from .destinations import Destination, S3SettingsError, is_s3_url, open_destination
from .manifest import MANIFEST
from .move import FreeReport, MoveRefused, free_source, move_in_progress

__all__ = [
    "EXIT_NOT_FREED",
    "EXIT_REFUSED_DESTINATION",
    "deleted_log_for",
    "exit_code",
    "free_after_copy",
    "resuming",
    "tree_size",
]

log = logging.getLogger(__name__)

#: Exit code of ``copy --move`` when a copy failed the content check before the deletion:
#: the copy was verified by size and mtime, but reads back differently; nothing was deleted.
EXIT_REFUSED_DESTINATION = 3
#: Exit code of ``copy --move`` when the copy is verified but the source was not (fully)
#: freed: read-only, files changed after their check (kept), or a stop while deleting.
EXIT_NOT_FREED = 4


def deleted_log_for(status_file: str | os.PathLike | None) -> Path | None:
    """Where the list of deleted source files goes: beside the status file
    (``<status>.freed``, one path a line, appended by each run)."""
    if status_file is None:
        return None
    path = Path(status_file)
    return path.with_name(path.name + ".freed")


def resuming(source: str | os.PathLike, destination: str | os.PathLike) -> bool:
    """True when a copy of ``source`` into ``destination`` with ``--move`` was verified and
    began deleting, and did not end: the rerun goes straight to the deletion (the source may
    no longer look like an archive: its metadata may be deleted already)."""
    if not is_s3_url(destination) and not os.path.isfile(os.path.join(destination, MANIFEST)):
        return False  # (the common case, without opening anything)
    try:
        dest = open_destination(destination, create=False)
    except (OSError, S3SettingsError):
        return False
    try:
        return dest.stat(MANIFEST) is not None and move_in_progress(dest, source)
    finally:
        dest.close()


def free_after_copy(
    source: str | os.PathLike,
    dest: Destination,
    *,
    stop: threading.Event | None = None,
    deleted_log: str | os.PathLike | None = None,
    marker_at: float | None = None,
    not_ended: str | None = None,
) -> dict[str, Any]:
    """Free the source of the verified copy at ``dest``; never raises for a refusal.

    ``not_ended``: why the acquisition may not have ended (a finish forced without its
    marker): nothing is deleted, and the status says so (``refused`` ``"not-ended"``).

    Returns
    -------
    dict
        The status's ``freed``: the `FreeReport`'s figures, ``marker_to_freed_s`` (from
        ``marker_at``, a ``time.monotonic()``), ``refused`` (None, ``"destination"``,
        ``"source"``, ``"unverified"``, ``"not-ended"``), ``stopped`` (a stop came while
        deleting) and ``message`` (one line).
    """
    src = os.path.abspath(source)
    refused = None
    try:
        if not_ended is not None:
            raise MoveRefused("not-ended", f"{not_ended}; nothing was deleted from {src}")
        report = free_source(src, dest, stop=stop, deleted_log=deleted_log)
        message = report.summary()
        if stop is not None and stop.is_set():
            message = f"freeing stopped: {message}; run the same command again to free the rest"
    except MoveRefused as exc:
        report = exc.freed or FreeReport(src)
        refused = exc.reason
        message = f"not freed: {exc}"
    except OSError as exc:  # (an unforeseen error while deleting: the rest stays, said)
        report = FreeReport(src)
        refused = "source"
        message = f"not freed: {exc}; the copy is verified, run the same command again"
    if refused is None and not report.complete:
        log.warning("%s", message)
    elif refused is not None:
        log.error("%s", message)
    else:
        log.info("%s", message)
    stopped = refused is None and stop is not None and stop.is_set()
    freed = report.to_dict() | {"refused": refused, "stopped": stopped, "message": message}
    if marker_at is not None:
        freed["marker_to_freed_s"] = round(time.monotonic() - marker_at, 3)
    if deleted_log is not None:
        freed["deleted_log"] = os.fspath(deleted_log)
    return freed


def exit_code(freed: dict[str, Any] | None) -> int | None:
    """The command line's exit code for a verified copy's ``freed`` (None: freed whole, or
    no move asked: the copy's own code stands)."""
    if not freed:
        return None
    if freed.get("refused") == "destination":
        return EXIT_REFUSED_DESTINATION
    if freed.get("refused") or freed.get("files_kept") or freed.get("stopped"):
        return EXIT_NOT_FREED
    return None


def tree_size(root: str | os.PathLike) -> tuple[int, int]:
    """``(files, bytes)`` of the regular files below ``root`` (links not followed): what a
    confirmation names before the user agrees to free it."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
    return files, size

"""Turning watchdog events into hints: "look at this path now" or "look at it soon".

What completes a file differs per writer: a rename into place (tensorstore, zarr-python;
the final name comes only from the move's destination, zarr-python never closes it), or a
close after writing in place (acquire-zarr's shards and its ``zarr.json``, rewritten in place;
tensorstore ``non_atomic``, which a reader can see partial before the close).
Both are reported at once. A file that merely appeared (watchdog walks a brand-new directory
and reports what is already in it as created) may still be written in place, so it is looked
at after a short settle delay; if it changes during the copy, it is copied again anyway.
Events are hints only: a scan is the truth, and an overflow triggers one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from .layout import is_temp_name

#: The kernel event mask we ask for. Dropping OPEN and MODIFY keeps the inotify queue from
#: overflowing under tens of thousands of quick writes: with watchdog's default mask, 50,000
#: quick file creations lost up to 80% of the events (the queue holds 16,384 by default);
#: with this one, none in 4 of 4 runs. A scan stays the truth.
EVENT_FILTER = [
    FileCreatedEvent,
    FileMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]

#: Seconds to wait before copying a file that only "appeared".
CREATED_SETTLE_S = 0.25


class SourceEventHandler(FileSystemEventHandler):
    """Forward watchdog events below ``root`` to the engine as relative-path hints.

    Parameters
    ----------
    root : str
        Source root (absolute).
    hint : callable
        ``hint(relpath, delay)``: the file at ``relpath`` may need syncing after ``delay`` s.
    rescan : callable
        Called when only a scan can tell what changed (a directory moved in).
    root_gone : callable
        Called when the source root itself was deleted or moved away.
    touched : callable, optional
        Called for an event that gives no hint (a writer's temporary file, a folder): the
        writer is at work all the same (a requested finish waits for the source to be quiet).
    hints : callable, optional
        ``hints(pairs, touched)``: the hints of a batch of events (`dispatch_many`) at once,
        ``(relpath, delay)`` pairs in the order of the events, each path once; ``touched``
        when the batch also held events that give no hint. Without it, a batch's hints go
        to ``hint`` one by one.
    folder_event : callable, optional
        ``folder_event(kind, relpath)`` for each event of a folder below the root (``kind``:
        watchdog's ``"created"``, ``"deleted"``, ``"moved"``; a move gives its source path),
        before the hints of its batch: the folders that changed (`proofs.FolderProofs`).
    """

    def __init__(
        self,
        root: str,
        hint: Callable[[str, float], None],
        rescan: Callable[[], None],
        root_gone: Callable[[], None],
        touched: Callable[[], None] | None = None,
        hints: Callable[[list[tuple[str, float]], bool], None] | None = None,
        folder_event: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__()
        self._folder_event = folder_event
        self.root = root.rstrip(os.sep)
        self._prefix = self.root + os.sep
        self._hint = hint
        self._rescan = rescan
        self._root_gone = root_gone
        self._touched = touched or (lambda: None)
        self._hints = hints

    def _rel(self, path: str | bytes) -> str | None:
        path = os.fsdecode(path)
        if not path.startswith(self._prefix):
            return None
        rel = path[len(self._prefix) :]
        return rel if os.sep == "/" else rel.replace(os.sep, "/")

    def _on_folder(self, event: FileSystemEvent) -> None:
        if self._folder_event is None:
            return
        rel = self._rel(event.src_path)
        if rel is not None:
            self._folder_event(event.event_type, rel)

    def dispatch(self, event: FileSystemEvent) -> None:  # hot path: keep it short
        kind = event.event_type
        if event.is_directory:
            self._touched()
            self._on_folder(event)
            if kind in ("deleted", "moved") and os.fsdecode(event.src_path) == self.root:
                self._root_gone()
            elif kind == "moved":
                self._rescan()  # a directory moved in or out: only a scan knows its files
            return
        if kind == "moved":
            old = self._rel(event.src_path)
            if old is not None and not is_temp_name(old.rpartition("/")[2]):
                self._hint(old, 0.0)  # a final name moved away: mirror its removal
            path = event.dest_path
            delay = 0.0
        else:
            path = event.src_path
            delay = CREATED_SETTLE_S if kind == "created" else 0.0
        rel = self._rel(path)
        if rel is None:
            return
        if is_temp_name(rel.rpartition("/")[2]):
            self._touched()
        else:
            self._hint(rel, delay)

    def dispatch_many(self, events: list[FileSystemEvent]) -> None:
        """`dispatch` a batch of events (one read of the kernel's queue), their hints handed
        over together: a file's rename and its close are one hint, and the engine takes its
        locks once a batch instead of three times an event."""
        if self._hints is None:
            for event in events:
                self.dispatch(event)
            return
        # (a dict keeps the first event's order and the shortest delay of a path's events)
        batch: dict[str, float] = {}
        touched = False
        prefix, cut = self._prefix, len(self._prefix)
        for event in events:
            if event.is_directory:
                self._on_folder(event)
                kind = event.event_type
                if kind in ("deleted", "moved") and os.fsdecode(event.src_path) == self.root:
                    self._root_gone()
                elif kind == "moved":
                    self._rescan()
                touched = True
                continue
            if event.event_type == "moved":
                old = os.fsdecode(event.src_path)
                if old.startswith(prefix) and not is_temp_name(old):
                    old = old[cut:] if os.sep == "/" else old[cut:].replace(os.sep, "/")
                    batch[old] = 0.0  # a final name moved away: mirror its removal
                path, delay = os.fsdecode(event.dest_path), 0.0
            else:
                path = os.fsdecode(event.src_path)
                delay = CREATED_SETTLE_S if event.event_type == "created" else 0.0
            if not path.startswith(prefix):
                continue
            if is_temp_name(path):
                touched = True
                continue
            rel = path[cut:] if os.sep == "/" else path[cut:].replace(os.sep, "/")
            known = batch.get(rel)
            if known is None or delay < known:
                batch[rel] = delay
        if batch or touched:
            self._hints(list(batch.items()), touched)

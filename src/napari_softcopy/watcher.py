"""Watching the source tree: file events become hints for the engine.

On Linux the engine reads inotify itself (`InotifyWatcher`), through the C library's public
calls only, rather than through watchdog's observer. Three things matter for a copier that
runs beside a writer, and none is part of watchdog's public API (the engine used to patch
its private objects, and watchdog 7.1.1 moved them, so the patches stopped applying without a
word):

- **Reads in batches.** After a read that returned events the reader pauses `EVENT_BATCH_S`,
  so a writer's burst is taken in a few large reads instead of hundreds of small ones, each
  waking a chain of threads on the writer's cores. Live lightsheet benchmark: writer slowdown
  x1.50 without, x1.08 with; copier CPU 2.9 s against 1.3 s. The kernel keeps the events
  meanwhile (16,384 by default; an overflow means a rescan).
- **Quick move pairing.** A rename's two halves (``IN_MOVED_FROM``, ``IN_MOVED_TO``) are
  queued together by the kernel and paired here by their cookie in a dict. watchdog holds
  every ``MOVED_FROM`` for 0.5 s and looks its partner up from the head of its queue, which
  made the drain after the marker 3.3-3.7 s instead of 0.2-0.35 s under 8,000 quick renames.
  Only a half whose partner falls into the next read waits, at most `MOVE_PAIRING_S`.
- **Lost events are reported, not logged.** ``IN_Q_OVERFLOW`` calls ``on_overflow`` directly
  (watchdog only logs it before 7.1.1), after watching the folders whose creation may have
  been among the lost events.
- **Finished folders give their watch back** (`napari_softcopy.watches`): a day of
  acquisition makes more folders than ``fs.inotify.max_user_watches`` allows, and a time
  series is written front to back.

Events are delivered as watchdog's public event classes, in the kernel's order (a move at the
place of its ``MOVED_FROM``), from one thread: a read's events together to
``handler.dispatch_many`` where the handler has it (the engine's: a file's rename and close
become one hint, and its locks are taken once a read, not once an event: 10.6 -> 6.7 us of
CPU a file, ``benchmarks/events.py``), else one by one to ``handler.dispatch``. Elsewhere,
or where inotify cannot be used, `watching.start_watching` falls back to watchdog's own
observer through its public API and says so once (`watching.Watching.notices`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import select
import struct
import termios
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
)

from .platform import current_notices
from .watches import (
    IN_CLOEXEC,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_ISDIR,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_NONBLOCK,
    IN_Q_OVERFLOW,
    MAX_WATCHES,
    RELEASE_IDLE_S,
    WatchTable,
    inotify,
)

log = logging.getLogger(__name__)

#: Pause after each read that returned events (see the module docstring).
EVENT_BATCH_S = 0.025
#: Longest wait for the second half of a rename that fell into the next read. Longer than the
#: reader's pause, so a rename split across two reads is still paired (20 ms, shorter than the
#: pause, let one of 2,000 read as a create). An unpaired half is a move out of the tree.
MOVE_PAIRING_S = 0.05
#: ``NAPARI_SOFTCOPY_WATCHER=watchdog`` uses watchdog's observer even where inotify works.
WATCHER_ENV = "NAPARI_SOFTCOPY_WATCHER"

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)
_READ_SIZE = 256 * 1024


@dataclass
class _Move:
    """A ``MOVED_FROM`` waiting for its other half, at its place in the delivery queue."""

    src: str
    is_dir: bool
    cookie: int
    due: float  # monotonic time after which it counts as a move out of the tree
    dest: str | None = None


class InotifyWatcher:
    """Recursive inotify watch of ``root``; events go to ``handler.dispatch``.

    Parameters
    ----------
    root : str
        The folder to watch, and everything below it (absolute path).
    handler : object
        Has ``dispatch(event)``, called with watchdog event objects from the reader thread.
    on_overflow : callable
        Called when the kernel dropped events (its queue overflowed).
    on_unwatched : callable
        Called when a new folder could not be watched (the watch limit, ``ENOSPC``, and no
        folder idle enough to give its watch back): only a scan can find what is written there.
    max_watches : int or None
        Most folders watched at once (None: as many as the kernel allows; the engine passes
        `Tuning.max_watches`, from the kernel's limit: `watches.default_max_watches`).
        Beyond it, idle folders give their watch back (`watches.WatchTable`).
    release_idle_s : float
        A folder gives its watch back only after this long without a new entry.

    Raises
    ------
    OSError
        inotify cannot be used here (not Linux, no instance left, root not watchable).
    """

    def __init__(
        self,
        root: str,
        handler,
        on_overflow: Callable[[], None],
        on_unwatched: Callable[[], None] = lambda: None,
        *,
        max_watches: int | None = MAX_WATCHES,
        release_idle_s: float = RELEASE_IDLE_S,
    ) -> None:
        self.root = root.rstrip("/") or "/"
        self._prefix = self.root.rstrip("/") + "/"  # (events name folders below the root)
        self._handler = handler
        self._on_overflow = on_overflow
        self._on_unwatched = on_unwatched
        fd = inotify().init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._read_wall_ns = time.time_ns()  # wall time of the last read: an overflow's start
        self._moves: dict[int, _Move] = {}  # cookie -> a MOVED_FROM not yet paired
        self._out: deque[FileSystemEvent | _Move] = deque()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: Reads that returned events, and events read (the batching shows in their ratio).
        self.reads = 0
        self.events = 0
        # The reader is blocked in poll() (set just before, cleared just after) and how many
        # polls have returned: `delivered_all` compares both around its look at the queue.
        self._polling = False
        self._polls = 0
        try:
            #: The folders watched, least recently active first.
            self.watches = WatchTable(
                fd,
                on_unwatched,
                max_watches=max_watches,
                release_idle_s=release_idle_s,
                on_rearmed=self._rearmed,
            )
            self.watches.watch_root(self.root)
            # Folders there before the copy count as idle: the oldest give their watch back
            # first (they are walked in name order, so the latest timepoints come last).
            self._watch_tree(self.root, report=False, idle=True)
        except BaseException:
            self._close()
            raise

    @property
    def watched(self) -> int:
        """Folders watched now."""
        return len(self.watches)

    @property
    def unwatched(self) -> int:
        """Folders that could not be watched (the kernel's limit; found by rescans)."""
        return self.watches.unwatched

    @property
    def released(self) -> int:
        """Folders whose watch was given back (finished; covered by scans)."""
        return self.watches.released

    @property
    def max_watches(self) -> int | None:
        """Most folders watched at once: the cap given, or the kernel's limit once met."""
        return self.watches.cap

    def delivered_all(self) -> bool:
        """True when every event the kernel queued before this call has been handed to the
        handler: the reader waits in poll() with nothing read and undelivered, and the
        kernel's queue is empty (``FIONREAD``). A change made before the call then has had
        its event handled (inotify queues it within the system call that made it)."""
        polls, polling = self._polls, self._polling
        if not polling or self._out or self._fd < 0:
            return False
        size = bytearray(4)
        try:
            fcntl.ioctl(self._fd, termios.FIONREAD, size)
        except OSError:
            return False
        # (a poll that returned meanwhile may have read the queue empty, not delivered it)
        return int.from_bytes(size, "little") == 0 and self._polling and self._polls == polls

    def folder_watches(self) -> Mapping[str, int]:
        """Each watched folder below the root (``""``: the root) and its watch descriptor
        now: a live read-only view (`WatchTable.by_folder`), looked up one folder at a time
        (a copy of every watch, 110,000 at a day's end, was made at each look before). A
        folder whose descriptor is unchanged between two looks was watched all along in
        between: a descriptor given back and taken again is a new one (the kernel does not
        reuse them)."""
        return self.watches.by_folder

    def start(self) -> None:
        """Start the reader thread."""
        # (with the starting thread's notices: what the watches cannot do is said in the
        # copy's status, not only in the log)
        run = current_notices().thread_target(self._run)
        self._thread = threading.Thread(target=run, name="softcopy-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the reader thread to end (`join` waits for it)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def join(self, timeout: float | None = None) -> None:
        """Wait for the reader thread to end, then release the inotify instance."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return
        self._close()

    def _close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1

    # ------------------------------------------------------------------ watches
    def _rearmed(self, folder: str) -> None:
        """A folder that gave its watch back has it again: what was written there in between
        had no event, so what it holds is reported (as in a new folder), not left to a
        rescan of the whole tree."""
        self._watch_tree(folder, report=True)

    def _watch_tree(
        self,
        top: str,
        *,
        report: bool,
        idle: bool = False,
        changed_since_ns: int | None = None,
    ) -> None:
        """Watch every folder below ``top`` (already watched); with ``report``, say what is in
        them: files written in a new folder before its watch existed have no event. A folder
        already watched is not entered again. With ``changed_since_ns`` (after lost events,
        when any folder may hold a new one whose creation was among them) every folder is
        entered, and only those changed since then are watched: a folder that gave its watch
        back stays without one unless it is active again. ``idle``: see `WatchTable.watch`.
        Folders are walked in name order (numbers by value), so the latest timepoints are
        watched last."""
        stack = [top]
        walked = 0
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            folders = []
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    folders.append(entry)
                    if report:
                        self._out.append(DirCreatedEvent(entry.path))
                elif report:
                    self._out.append(FileCreatedEvent(entry.path))
            folders.sort(key=lambda e: (len(e.name), e.name))
            deeper = []
            for entry in folders:
                if changed_since_ns is not None:
                    if _changed_since(entry, changed_since_ns):
                        self.watches.watch(entry.path)
                    deeper.append(entry.path)
                elif self.watches.watch(entry.path, idle=idle) is not None:
                    deeper.append(entry.path)
                walked += 1
                if not walked % 1024 and self._thread is None:
                    self._read_queued()  # (far below the queue's 16,384: `_read_queued`)
            stack.extend(reversed(deeper))  # (the first in name order is walked first)

    # ------------------------------------------------------------------ reading
    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping.is_set():
            head = self._out[0] if self._out else None
            wait_ms = -1
            if isinstance(head, _Move):
                wait_ms = max(0, int((head.due - time.monotonic()) * 1000) + 1)
            self._polling = True
            ready = poller.poll(wait_ms)
            self._polling = False
            self._polls += 1
            if self._stopping.is_set():
                break
            data = b""
            if any(fd == self._fd for fd, _ in ready):
                try:
                    data = os.read(self._fd, _READ_SIZE)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    log.error("reading file events failed (%s); rescans go on", exc)
                    self._on_overflow()
                    break
            if data:
                self.reads += 1
                self.watches.new_read()
                self._parse(data)
                self._read_wall_ns = time.time_ns()
            self._deliver()
            if data:
                self._stopping.wait(EVENT_BATCH_S)

    def _read_queued(self) -> None:
        """Read what the kernel has queued, before the reader thread runs. At the start of a
        copy of an archive with more folders than watches (a resume in the middle of a day)
        the folders there before give their watch back as the first walk goes, each queueing
        an ``IN_IGNORED``; the queue holds ``fs.inotify.max_queued_events`` (16,384 by
        default), so unread until the walk ends they overflow it, and lost events make the
        engine walk the whole archive again and say events were lost when none were. Read
        as the walk goes they are parsed as the reader would (a writer's events kept)."""
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            self.watches.new_read()
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            self.events += 1
            self._event(wd, mask, cookie, os.fsdecode(name))

    def _event(self, wd: int, mask: int, cookie: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            # The creations of new folders may be among the lost events: watch them now, or
            # nothing written there would ever have an event. (The engine rescans files.) A
            # folder changed since a second before the last whole read may be one; the margin
            # covers the coarse clock of a folder's ctime.
            since = self._read_wall_ns - 1_000_000_000
            self._watch_tree(self.root, report=False, changed_since_ns=since)
            self._on_overflow()
            return
        folder = self.watches.folder_of(wd, mask)
        if folder is None:
            return  # a watch already dropped, or its last word
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            if not folder:  # (the root)
                self._out.append(DirDeletedEvent(self.root))
            return  # any other folder: its parent reports the delete or the move
        path = f"{self._prefix}{folder}/{name}" if folder else f"{self._prefix}{name}"
        is_dir = bool(mask & IN_ISDIR)
        if mask & IN_MOVED_FROM:
            move = _Move(path, is_dir, cookie, time.monotonic() + MOVE_PAIRING_S)
            self._moves[cookie] = move
            self._out.append(move)
        elif mask & IN_MOVED_TO:
            move = self._moves.pop(cookie, None)
            if move is not None:
                move.dest = path
                if is_dir:
                    self.watches.rename(move.src, path)
            elif is_dir:  # moved in from outside: like a new folder
                self._new_folder(path)
            else:
                self._out.append(FileCreatedEvent(path))
        elif mask & IN_CREATE:
            if is_dir:
                self._new_folder(path)
            else:
                self._out.append(FileCreatedEvent(path))
        elif mask & IN_CLOSE_WRITE:
            if not is_dir:
                self._out.append(FileClosedEvent(path))
        elif mask & IN_DELETE:
            self._out.append(DirDeletedEvent(path) if is_dir else FileDeletedEvent(path))

    def _new_folder(self, path: str) -> None:
        self._out.append(DirCreatedEvent(path))
        if self.watches.watch(path) is not None:
            self._watch_tree(path, report=True)

    def _deliver(self) -> None:
        """Hand over the events in order, up to a rename still waiting for its other half:
        as one batch to a handler that takes them so (``dispatch_many``), else one by one."""
        now = time.monotonic()
        ready: list[FileSystemEvent] = []
        while self._out:
            item = self._out[0]
            if isinstance(item, _Move):
                if item.dest is None and now < item.due:
                    break
                self._out.popleft()
                ready.append(self._moved(item))
            else:
                ready.append(self._out.popleft())
        if not ready:
            return
        many = getattr(self._handler, "dispatch_many", None)
        if many is not None:
            try:
                many(ready)
            except Exception:  # the reader must go on; a scan finds what was lost
                log.exception("handling %d events failed", len(ready))
                self._on_unwatched()
            return
        for event in ready:
            try:
                self._handler.dispatch(event)
            except Exception:
                log.exception("handling %r failed", event)

    def _moved(self, move: _Move) -> FileSystemEvent:
        if move.dest is not None:
            return (DirMovedEvent if move.is_dir else FileMovedEvent)(move.src, move.dest)
        # No other half: moved out of the tree. Its files vanished without events of their
        # own, so a folder reads as moved (the handler rescans), a file as deleted.
        self._moves.pop(move.cookie, None)
        if move.is_dir:
            self.watches.forget(move.src, unwatch=True)
            return DirMovedEvent(move.src, "")
        return FileDeletedEvent(move.src)


def _changed_since(entry: os.DirEntry, since_ns: int) -> bool:
    try:
        return entry.stat(follow_symlinks=False).st_ctime_ns >= since_ns
    except OSError:
        return False

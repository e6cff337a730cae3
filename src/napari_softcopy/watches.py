"""Which folders hold an inotify watch: the C library's calls and a table of watches.

One watch per folder, and a day of acquisition makes hundreds of thousands of folders: more
than ``fs.inotify.max_user_watches`` allows (a limit per user, shared by all of that user's
processes), and each watch pins its folder's inode in the kernel and a path here. A time
series is written front to back, so the folders that had no new entry for longest are
finished. `WatchTable` keeps the watches in the order of their folders' last new entry:
once `MAX_WATCHES` folders are watched (or the kernel refuses a watch, ``ENOSPC``, whose
limit then becomes the cap) the least recently active eighth of them, each idle for at
least `RELEASE_IDLE_S`, gives its watch back. The folders above the newest one keep theirs
(the next timepoint's folders appear there, once per timepoint, so they look idle sooner).
The cap is soft: when no folder is idle enough, a new folder is watched all the same, and
only when the kernel refuses it is it left unwatched (``on_unwatched`` asks for a rescan).

A folder that gave its watch back is covered by the engine's periodic rescan (which looks at
a proven one's source side: `engine.scan`) and by the finish, which looks at it again after
the marker (`source_looks`) or walks it; an event that was already queued for it when its
watch was given back re-arms the watch.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from .platform import IS_LINUX

log = logging.getLogger(__name__)

#: Most folders watched at once (see the module docstring): bounds the memory kept per folder
#: (a path and a recency entry, about 250 bytes) and the kernel's pinned inodes. A time series
#: has a few hundred folders active at a time; a finished folder needs no watch.
MAX_WATCHES = 16_384
#: A watch is given back only by a folder without a new entry for this long: a folder still
#: being written keeps its watch.
RELEASE_IDLE_S = 10.0

# <sys/inotify.h>
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# No OPEN, MODIFY or ATTRIB: tens of thousands of quick writes would overflow the queue.
MASK = (
    IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
#: Events that say a folder got a new entry (or one was finished): the writer is at work there.
CONTENT = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE
_NO_CAP = 1 << 62


class Libc:
    """The three inotify calls of the C library."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.add_watch = libc.inotify_add_watch
        self.rm_watch = libc.inotify_rm_watch
        self.init1.argtypes = [ctypes.c_int]
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


_libc: Libc | None = None


def inotify() -> Libc:
    """The C library's inotify calls.

    Raises
    ------
    OSError
        Not Linux, or a C library without them.
    """
    global _libc
    if not IS_LINUX:
        raise OSError(errno.ENOSYS, "inotify is Linux only")
    if _libc is None:
        try:
            _libc = Libc()
        except (OSError, AttributeError) as exc:
            raise OSError(errno.ENOSYS, f"the C library has no inotify ({exc})") from None
    return _libc


class WatchTable:
    """The watches of one inotify instance, least recently active folder first.

    Parameters
    ----------
    fd : int
        The inotify instance.
    on_unwatched : callable
        Called when a folder could not be watched, or lost events between its watch given
        back and its new one: only a scan can find what is written there.
    max_watches : int or None
        Most folders watched at once (None: as many as the kernel allows).
    release_idle_s : float
        A folder gives its watch back only after this long without a new entry.
    on_rearmed : callable, optional
        Called with a folder watched again after giving its watch back: what was written
        there in between had no event (by default: ``on_unwatched``, a rescan).
    """

    def __init__(
        self,
        fd: int,
        on_unwatched: Callable[[], None],
        *,
        max_watches: int | None = MAX_WATCHES,
        release_idle_s: float = RELEASE_IDLE_S,
        on_rearmed: Callable[[str], None] | None = None,
    ) -> None:
        if max_watches is not None and max_watches < 1:
            raise ValueError(f"max_watches must be at least 1, not {max_watches}")
        self._lib = inotify()
        self._fd = fd
        self._on_unwatched = on_unwatched
        self._on_rearmed = on_rearmed or (lambda _folder: on_unwatched())
        self._cap = max_watches if max_watches is not None else _NO_CAP
        self._idle_s = release_idle_s
        #: Watch descriptor -> folder path.
        self.paths: dict[int, str] = {}
        # Watch descriptor -> monotonic time of its folder's last new entry, least recent
        # first (the root is never given back, so it is not in here).
        self._recent: OrderedDict[int, float] = OrderedDict()
        # Watches given back whose IN_IGNORED has not been read yet: an event queued before
        # that still names its folder (and re-arms its watch).
        self._given_back: dict[int, str] = {}
        self._rearmed: set[int] = set()  # given back, then watched again under a new one
        self._last_active = -1  # the last folder marked active in this read (bursts hit one)
        self._said = False  # the first watch given back was logged
        # Folders the kernel's limit refused (and none idle enough), by their path's hash: a
        # folder refused again at each rescan is one folder (a hash, not the path, keeps this
        # small past the limit; a collision only undercounts a figure shown to the user).
        self._refused: set[int] = set()
        #: Folders whose watch was given back (finished; covered by scans), less re-armed ones.
        self.released = 0

    @property
    def unwatched(self) -> int:
        """Folders that could not be watched (the kernel's limit, and none idle enough)."""
        return len(self._refused)

    @property
    def cap(self) -> int | None:
        """Most folders watched at once: the cap given, or the kernel's limit once met."""
        return self._cap if self._cap < _NO_CAP else None

    def watch_root(self, path: str) -> None:
        """Watch the root, which is never given back.

        Raises
        ------
        OSError
            It cannot be watched.
        """
        wd = self._add(path)
        if wd < 0:
            raise OSError(-wd, f"cannot watch {path}: {os.strerror(-wd)}")
        self.paths[wd] = path

    def _add(self, path: str) -> int:
        """``inotify_add_watch``: the descriptor, or minus the error number."""
        wd = self._lib.add_watch(self._fd, os.fsencode(path), MASK)
        return wd if wd >= 0 else -ctypes.get_errno()

    def watch(self, path: str, *, idle: bool = False) -> int | None:
        """Watch one folder; its descriptor, or None when it cannot be watched (or already
        is). ``idle``: it counts as idle already (it was there before the copy began)."""
        if len(self.paths) >= self._cap:
            self._release_idle()
        wd = self._add(path)
        if wd == -errno.ENOSPC and self.paths:
            # The kernel's limit (shared by this user's processes) came before ours: it is
            # ours from now on, and idle folders make room.
            self._cap = min(self._cap, len(self.paths))
            if self._release_idle():
                wd = self._add(path)
        if wd < 0:
            err = -wd
            if err == errno.ENOSPC:
                self._refused.add(hash(path))
                if len(self._refused) == 1:
                    log.warning(
                        "cannot watch %s: the inotify watch limit (fs.inotify.max_user_watches) "
                        "is reached and every watched folder is still being written; folders "
                        "beyond it are found by rescans",
                        path,
                    )
                self._on_unwatched()
            elif err not in (errno.ENOENT, errno.ENOTDIR):  # gone again: nothing to watch
                log.warning("cannot watch %s: %s", path, os.strerror(err))
                self._on_unwatched()
            return None
        self._refused.discard(hash(path))
        if self.paths.get(wd) == path:
            return None  # already watched (its own event and a walk both found it)
        self.paths[wd] = path
        now = time.monotonic()
        self._recent[wd] = now - self._idle_s if idle else now
        self._recent.move_to_end(wd)
        return wd

    def _release_idle(self) -> int:
        """Give back the watches of the least recently active folders, an eighth of the cap
        at most, each idle for at least ``release_idle_s``; how many were given back."""
        want = max(1, min(self._cap, len(self.paths)) // 8)
        horizon = time.monotonic() - self._idle_s
        newest_wd = next(reversed(self._recent), None)
        newest = self.paths.get(newest_wd)
        released = 0
        for _ in range(len(self._recent)):
            if released >= want:
                break
            wd, last = next(iter(self._recent.items()))
            if last > horizon:
                break  # the rest were active more recently still
            path = self.paths.get(wd)
            if path is not None and newest is not None and newest.startswith(path + "/"):
                # Above the newest folder: kept, as recent as it (the order stays the order
                # of activity).
                self._recent[wd] = self._recent[newest_wd]
                self._recent.move_to_end(wd)
                continue
            self._recent.popitem(last=False)
            if path is None:
                continue
            del self.paths[wd]
            self._lib.rm_watch(self._fd, wd)
            self._given_back[wd] = path
            released += 1
        if released and not self._said:  # (once, at the level a copy's log shows)
            self._said = True
            log.warning(
                "watching at most %d folders at once: a folder without a new entry for %.0f s "
                "gives its watch back, and is covered by the periodic rescan and the final "
                "verification",
                min(self._cap, len(self.paths) + released),
                self._idle_s,
            )
        self.released += released
        return released

    def new_read(self) -> None:
        """Events of a new read follow (their folders' activity is marked once per read)."""
        self._last_active = -1

    def folder_of(self, wd: int, mask: int) -> str | None:
        """The folder an event of ``wd`` happened in, None when it is no longer known (or
        the event is the last word of a watch). Keeps the table up to date: a folder with a
        new entry becomes the most recently active; a watch's ``IN_IGNORED`` drops it."""
        folder = self.paths.get(wd)
        if folder is not None:
            if mask & IN_IGNORED:
                del self.paths[wd]  # its folder is gone (or unmounted)
                self._recent.pop(wd, None)
                return None
            if mask & CONTENT and wd != self._last_active and wd in self._recent:
                self._recent[wd] = time.monotonic()
                self._recent.move_to_end(wd)
                self._last_active = wd
            return folder
        folder = self._given_back.get(wd)
        if folder is None:
            return None  # a watch already dropped
        if mask & IN_IGNORED:
            del self._given_back[wd]  # the last word of a watch given back
            self._rearmed.discard(wd)
            return None
        if mask & CONTENT and wd not in self._rearmed:
            # Queued before its watch was given back: the folder is active again. What was
            # written between the release and the new watch has no event (`on_rearmed`).
            self._rearmed.add(wd)
            self.released -= 1
            if self.watch(folder) is not None:
                self._on_rearmed(folder)
        return folder

    def forget(self, top: str, *, unwatch: bool) -> None:
        """Drop the watches of ``top`` and below (moved out of the tree, or deleted)."""
        prefix = top + "/"
        for wd, path in list(self.paths.items()):
            if path == top or path.startswith(prefix):
                del self.paths[wd]
                self._recent.pop(wd, None)
                if unwatch:
                    self._lib.rm_watch(self._fd, wd)

    def rename(self, src: str, dest: str) -> None:
        """A watched folder moved within the tree: its watches now name the new place."""
        prefix = src + "/"
        for wd, path in list(self.paths.items()):
            if path == src:
                self.paths[wd] = dest
            elif path.startswith(prefix):
                self.paths[wd] = dest + path[len(src) :]

"""Which folders hold an inotify watch: the C library's calls and a table of watches.

One watch per folder, and a day of acquisition makes a hundred thousand folders or more.
A folder that keeps its watch until the finish is vouched for there by its events; one that
gave it back must be looked at after the marker (docs/architecture.md, "A proven folder that
gave its watch back"), about 40 us of CPU a folder: 94,208 such looks were 3 s of a 1,000,000
file day's 4.3 s drain. So a day's folders keep their watch where the kernel allows it:

- **The cap comes from the kernel's limit** (`default_max_watches`): three quarters of the
  watches this user may hold (``fs.inotify.max_user_watches``, or a user namespace's lower
  ``/proc/sys/user/max_inotify_watches``; kernels scale it with the RAM, 1 % of it at about
  1 KiB a watch, from 8,192 to 1,048,576): the limit is per user, and the quarter left is for
  the user's other programs (editors, napari, another copy). At most `MAX_WATCHES`, where
  this process's memory would pass issue 22's bound. The kernel's own cost of a watch
  (its mark, and the folder's inode and dentry it keeps in memory) is what its limit bounds.
- **A watch is cheap here** (`WatchTable`): a path below the root, a dict entry from folder
  to descriptor and a list slot back (`watch_slots`), 126 bytes of this process's resident
  memory at 33,151 watches (`benchmarks.watch_cost`; 171 with a dict each way, 346 with the
  absolute path and a recency entry a folder before that), and nothing copies the
  table: the engine looks a folder's watch up in a live view (`WatchTable.by_folder`), where
  a copy of it took 21-43 ms of CPU at each look, twice a second while proving.

Past the cap (or where the kernel refuses a watch, ``ENOSPC``, whose count then becomes the
cap) a time series' finished folders make room: once `WatchTable` holds the cap, the
folders idle for `RELEASE_IDLE_S` give their watch back, those watched first first, an
eighth of the cap at a time. The root, the folders active since, and the folders above the
newest one keep theirs (the next timepoint's folders appear there, once per timepoint, so
they look idle sooner). The cap is soft: when no folder is idle enough, a new folder is
watched all the same, and only when the kernel refuses it is it left unwatched
(``on_unwatched`` asks for a rescan).

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
from collections.abc import Callable, Mapping
from types import MappingProxyType

from .platform import IS_LINUX, degrade
from .watch_slots import WatchSlots

log = logging.getLogger(__name__)

#: Most folders watched at once whatever the kernel allows (`default_max_watches`): 126
#: bytes a watch here, so 131,072 hold 16 MiB (23 at 181 bytes before), and a day's copier
#: (65.7 MiB at the end of 1,000,000 files in 110,500 folders with 16,384 watches of 346
#: bytes) stays under issue 22's 100 MiB. That day's folders fit; beyond, finished folders
#: make room.
MAX_WATCHES = 131_072
#: Folders the kernel refused a watch counted at most (`WatchTable.unwatched`): a hash each
#: (about 70 bytes with its set entry), so 65,536 hold under 5 MiB, past the kernel's limit
#: at any number of folders. Beyond it the count stops (said once): every such folder is
#: still found by the rescans it asks for, only the figure shown is a lower bound.
MAX_REFUSED = 65_536
#: The share of the kernel's watch limit taken by default: the limit is per user, shared by
#: all of that user's programs (a quarter is left for them).
KERNEL_SHARE = 0.75
#: Where the kernel's watch limit is read: the machine's, and this user namespace's (the
#: lower one holds: a watch counts in every namespace up to the first).
LIMIT_FILES = ("/proc/sys/fs/inotify/max_user_watches", "/proc/sys/user/max_inotify_watches")
#: A watch is given back only by a folder without a new entry for this long: a folder still
#: being written keeps its watch.
RELEASE_IDLE_S = 10.0


def kernel_watch_limit() -> int | None:
    """The inotify watches this user may hold (`LIMIT_FILES`); None where it cannot be read
    (not Linux)."""
    limits = []
    for name in LIMIT_FILES:
        try:
            with open(name) as f:
                limits.append(int(f.read().strip()))
        except (OSError, ValueError):
            continue
    return min(limits) if limits else None


def default_max_watches() -> int:
    """The folders watched at once by default: `KERNEL_SHARE` of the kernel's limit, at most
    `MAX_WATCHES` (read at each call: a benchmark lowers it to measure a day past the cap)."""
    limit = kernel_watch_limit()
    if limit is None:
        return MAX_WATCHES
    return max(1, min(MAX_WATCHES, int(limit * KERNEL_SHARE)))


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
    """The watches of one inotify instance, in the order their folders were watched.

    Kept lean, since a day's folders keep their watch where the kernel allows
    (`default_max_watches`): each folder is one path below the root and an entry in each
    direction (descriptor -> folder for the events, a list slot: `WatchSlots`; folder ->
    descriptor for the engine's proofs, `by_folder`); what was active in the last
    `release_idle_s` is a small table of its own, not an entry a folder (see
    `_release_idle`).

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
    max_refused : int, optional
        Refused folders counted at most (default `MAX_REFUSED`, read when the table is made).
    """

    def __init__(
        self,
        fd: int,
        on_unwatched: Callable[[], None],
        *,
        max_watches: int | None = MAX_WATCHES,
        release_idle_s: float = RELEASE_IDLE_S,
        on_rearmed: Callable[[str], None] | None = None,
        max_refused: int | None = None,
    ) -> None:
        if max_watches is not None and max_watches < 1:
            raise ValueError(f"max_watches must be at least 1, not {max_watches}")
        self._lib = inotify()
        self._fd = fd
        self._on_unwatched = on_unwatched
        self._on_rearmed = on_rearmed or (lambda _folder: on_unwatched())
        self._cap = max_watches if max_watches is not None else _NO_CAP
        self._idle_s = release_idle_s
        self._root = self._prefix = "/"  # the root's path, and it with a slash (`watch_root`)
        # Watch descriptor -> folder below the root ("": the root), in the order they were
        # watched: a time series' finished folders come first. (Paths below the root: the
        # root's path a folder was about 50 bytes of the 110 of an absolute one. A list by
        # descriptor, not a dict: 8 bytes a folder instead of about 47, `WatchSlots`.)
        self._folders = WatchSlots()
        # Folder -> watch descriptor: `by_folder`, a live view (nothing copied to look up).
        self._wds: dict[str, int] = {}
        # Descriptor -> monotonic time of its folder's last new entry (or its watch), least
        # recent first, of the folders active in the last `release_idle_s` only: the ones a
        # release must not take. Pruned as they age, so it holds the folders of the last
        # seconds (a few thousand at 2,000 files a second), not one entry a folder watched.
        self._active: OrderedDict[int, float] = OrderedDict()
        self._newest = -1  # the folder watched or active last (its parents keep their watch)
        self._now = time.monotonic()  # the current read's (one float shared by its folders)
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
        self._max_refused = MAX_REFUSED if max_refused is None else max_refused
        self._refused_full = False  # (the cap met: said once)
        #: Folders whose watch was given back (finished; covered by scans), less re-armed ones.
        self.released = 0
        #: Each watched folder below the root (``""``: the root) to its watch descriptor now:
        #: a read-only live view (thread-safe to ask from another thread). A descriptor
        #: unchanged between two looks was watched all along in between: one given back and
        #: taken again is a new one (the kernel does not reuse them).
        self.by_folder: Mapping[str, int] = MappingProxyType(self._wds)

    def __len__(self) -> int:
        """Folders watched now (the root included)."""
        return len(self._folders)

    @property
    def unwatched(self) -> int:
        """Folders that could not be watched (the kernel's limit, and none idle enough); at
        most ``max_refused`` (a lower bound once met: said once in the log)."""
        return len(self._refused)

    @property
    def cap(self) -> int | None:
        """Most folders watched at once: the cap given, or the kernel's limit once met."""
        return self._cap if self._cap < _NO_CAP else None

    def path(self, folder: str) -> str:
        """The absolute path of ``folder`` (below the root)."""
        return self._prefix + folder if folder else self._root

    def _below(self, path: str) -> str | None:
        """``path`` below the root (``""``: the root); None when it is not in the tree."""
        if path == self._root:
            return ""
        return path[len(self._prefix) :] if path.startswith(self._prefix) else None

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
        self._root = path.rstrip("/") or "/"
        self._prefix = self._root.rstrip("/") + "/"
        self._folders[wd] = ""
        self._wds[""] = wd

    def _add(self, path: str) -> int:
        """``inotify_add_watch``: the descriptor, or minus the error number."""
        wd = self._lib.add_watch(self._fd, os.fsencode(path), MASK)
        return wd if wd >= 0 else -ctypes.get_errno()

    def watch(self, path: str, *, idle: bool = False) -> int | None:
        """Watch one folder (absolute path, below the root); its descriptor, or None when it
        cannot be watched (or already is). ``idle``: it counts as idle already (it was
        there before the copy began)."""
        folder = self._below(path)
        if not folder:
            return None  # (the root is watched by `watch_root`; nothing outside the tree)
        if len(self._folders) >= self._cap:
            self._release_idle()
        wd = self._add(path)
        if wd == -errno.ENOSPC and self._folders:
            # The kernel's limit (shared by this user's processes) came before ours: it is
            # ours from now on, and idle folders make room.
            self._cap = min(self._cap, len(self._folders))
            if self._release_idle():
                wd = self._add(path)
        if wd < 0:
            err = -wd
            if err == errno.ENOSPC:
                self._refuse(hash(folder))
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
        self._refused.discard(hash(folder))
        if self._folders.get(wd) == folder:
            return None  # already watched (its own event and a walk both found it)
        # (a folder deleted and made again: its old watch stays until its IN_IGNORED is read,
        # its last events still name the folder; the new one is the folder's now)
        self._folders[wd] = folder
        self._wds[folder] = wd
        self._newest = wd
        if not idle:
            self._active[wd] = time.monotonic()
        return wd

    def _refuse(self, key: int) -> None:
        """Count the refused folder whose path hashes to ``key``, up to ``max_refused``."""
        refused = self._refused
        if key in refused:
            return
        if len(refused) < self._max_refused:
            refused.add(key)
        elif not self._refused_full:
            self._refused_full = True
            # (in the log, the status's notices and the widget: the figure shown is a floor)
            degrade(
                "an exact count of the folders without a watch",
                f"more than {self._max_refused:,} folders could not be watched: their count "
                "stops there (each is still found by the rescans it asks for)",
            )

    def _release_idle(self) -> int:
        """Give back the watches of folders idle for ``release_idle_s``, an eighth of the cap
        at most, those watched first first; how many were given back.

        A folder is idle when it is not in ``_active`` (active entries older than the idle
        time are pruned first). Kept: the root, the folders active since, and the folders
        above the newest one (where the next timepoint's folders appear). The scan starts at
        the folders watched first (in a time series, the finished ones) and stops once it
        has given back enough, or seen every idle folder: it looks at the kept folders in
        its way (those active, a few parents) and the ones it gives back, not at the table."""
        active, folders = self._active, self._folders
        self._prune(time.monotonic())
        idle = len(folders) - 1 - len(active)  # (the root is never given back)
        want = min(idle, max(1, min(self._cap, len(folders)) // 8))
        if want <= 0:
            return 0
        newest = folders.get(self._newest)
        above = newest.split("/")[:-1] if newest else []
        parents = {"/".join(above[: i + 1]) for i in range(len(above))}
        give: list[int] = []
        seen_idle = 0
        for wd, folder in folders.items():
            if len(give) >= want or seen_idle >= idle:
                break
            if wd in active or not folder:
                continue
            seen_idle += 1
            if folder not in parents:
                give.append(wd)
        for wd in give:
            self._given_back[wd] = self._drop(wd)
            self._lib.rm_watch(self._fd, wd)
        released = len(give)
        if released and not self._said:  # (once, at the level a copy's log shows)
            self._said = True
            log.warning(
                "watching at most %d folders at once: a folder without a new entry for %.0f s "
                "gives its watch back, and is covered by the periodic rescan and the final "
                "verification",
                min(self._cap, len(folders) + released),
                self._idle_s,
            )
        self.released += released
        return released

    def _drop(self, wd: int) -> str:
        """Forget the watch ``wd``; its folder."""
        folder = self._folders.pop(wd)
        if self._wds.get(folder) == wd:  # (not a newer watch of a folder made again)
            del self._wds[folder]
        self._active.pop(wd, None)
        return folder

    def _prune(self, now: float) -> None:
        """Forget the activity older than ``release_idle_s`` (those folders are idle)."""
        active, horizon = self._active, now - self._idle_s
        while active and next(iter(active.values())) <= horizon:
            active.popitem(last=False)

    def new_read(self) -> None:
        """Events of a new read follow (their folders' activity is marked once per read).
        The activity table is pruned here too, not only when a release needs it: below the
        cap no release comes, and it would keep an entry for every folder watched."""
        self._last_active = -1
        self._now = time.monotonic()
        self._prune(self._now)

    def folder_of(self, wd: int, mask: int) -> str | None:
        """The folder (below the root, ``""``: the root) an event of ``wd`` happened in, None
        when it is no longer known (or the event is the last word of a watch). Keeps the
        table up to date: a folder with a new entry is active; a watch's ``IN_IGNORED``
        drops it."""
        folder = self._folders.get(wd)
        if folder is not None:
            if mask & IN_IGNORED:
                self._drop(wd)  # its folder is gone (or unmounted)
                return None
            if mask & CONTENT and wd != self._last_active and folder:
                active = self._active
                active[wd] = self._now
                active.move_to_end(wd)
                self._last_active = self._newest = wd
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
            path = self.path(folder)
            if self.watch(path) is not None:
                self._on_rearmed(path)
        return folder

    def forget(self, top: str, *, unwatch: bool) -> None:
        """Drop the watches of ``top`` (absolute) and below (moved out of the tree, or
        deleted)."""
        below = self._below(top)
        if not below:
            return
        prefix = below + "/"
        for wd, folder in [*self._folders.items()]:
            if folder == below or folder.startswith(prefix):
                self._drop(wd)
                if unwatch:
                    self._lib.rm_watch(self._fd, wd)

    def rename(self, src: str, dest: str) -> None:
        """A watched folder moved within the tree (absolute paths): its watches now name the
        new place."""
        old, new = self._below(src), self._below(dest)
        if not old or not new:
            return
        prefix = old + "/"
        for wd, folder in [*self._folders.items()]:
            if folder == old or folder.startswith(prefix):
                moved = new + folder[len(old) :]
                self._folders[wd] = moved
                if self._wds.get(folder) == wd:
                    del self._wds[folder]
                self._wds[moved] = wd

"""Everything OS-specific, in one place: IO/CPU priority, watchdog's overflow hook, flushing.

Linux gets every feature. Elsewhere the engine runs with watchdog's other observers and a
warning names what is missing. (File events: `napari_softcopy.watcher`.)
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import select
import sys
import threading
from collections.abc import Callable
from pathlib import Path

# `hashlib` loads OpenSSL's libcrypto: about 4 MiB of RSS in each of a copy's processes (the
# engine and each helper) for two small digests of names, which CPython's built-in modules
# make the same.
try:  # (``as``: re-exported, for `destinations.records` and `jobs`)
    from _blake2 import blake2b as blake2b
    from _sha1 import sha1 as sha1
except ImportError:  # (an interpreter without them)
    from hashlib import blake2b as blake2b
    from hashlib import sha1 as sha1


log = logging.getLogger(__name__)

IS_LINUX = sys.platform.startswith("linux")

# ioprio_set(2): the IO priority is per thread on Linux, so each engine thread lowers its
# own and the process that embeds the engine (napari, a test runner) keeps its priority.
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13
_PR_SET_PDEATHSIG = 1
_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314, "ppc64le": 273}
# The C library is already loaded: CDLL(None) finds its symbols without find_library, which
# runs `ldconfig -p` in a subprocess (35 ms of every start).
_libc = ctypes.CDLL(None, use_errno=True) if IS_LINUX else None


class Notices:
    """What does not apply to one copy: a tuning, a capability or a fast path that is off
    here, one line per feature, each logged once (`degrade`).

    Each engine has its own, installed in the threads it runs (`thread_target`), so that an
    in-process API user running two engines sees in each one's status only what applies to
    it. What runs outside any engine reports to one for the whole process.
    """

    def __init__(self) -> None:
        self._why: dict[str, str] = {}  # feature -> why it is off here
        self._lock = threading.Lock()

    def degrade(self, feature: str, why: str) -> None:
        """Record, and log the first time, that ``feature`` does not apply."""
        with self._lock:
            if feature in self._why:
                return
            self._why[feature] = why
        log.warning("%s is off: %s", feature, why)

    def lines(self) -> list[str]:
        """One line each: ``"idle IO priority is off: ..."``."""
        with self._lock:
            return [f"{feature} is off: {why}" for feature, why in self._why.items()]

    def thread_target(self, target: Callable[[], object]) -> Callable[[], None]:
        """``target``, reporting to these notices in the thread that runs it (a thread starts
        without the notices of the thread that started it)."""

        def run() -> None:
            previous = getattr(_current, "notices", None)
            _current.notices = self
            try:
                target()
            finally:
                _current.notices = previous

        return run


_current = threading.local()  # .notices: the calling thread's copy's `Notices`, if any
_process_notices = Notices()  # what runs outside any engine (a probe, a verification)


def current_notices() -> Notices:
    """The `Notices` of the calling thread's copy (of the whole process outside any engine)."""
    notices = getattr(_current, "notices", None)
    return _process_notices if notices is None else notices


def degrade(feature: str, why: str) -> None:
    """Record, and log once, that ``feature`` does not apply to the calling thread's copy
    (`current_notices`)."""
    current_notices().degrade(feature, why)


def degraded() -> list[str]:
    """What does not apply to the calling thread's copy, one line each ("idle IO priority
    is off: ...").

    The engine adds these to its status's ``notices``: a copy that runs without a tuning is
    still correct, but the user is told once instead of finding out from a slow acquisition.
    """
    return current_notices().lines()


def lower_thread_priority(nice: int = 10) -> None:
    """Put the calling thread in the idle IO class and raise its nice value.

    On Linux both are per-thread, so only engine threads are affected. What cannot be done
    is recorded once (`degraded`).
    """
    if not IS_LINUX:
        degrade("idle IO priority", f"not supported on {sys.platform}")
        return
    nr = _SYS_IOPRIO_SET.get(os.uname().machine)
    tid = threading.get_native_id()
    if nr is not None and _libc is not None:
        if _libc.syscall(nr, _IOPRIO_WHO_PROCESS, tid, _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT):
            degrade("idle IO priority", f"ioprio_set: {os.strerror(ctypes.get_errno())}")
    else:
        degrade("idle IO priority", f"unknown ioprio_set syscall on {os.uname().machine}")
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        degrade("lower CPU priority", f"setpriority: {exc.strerror or exc}")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def autogroup_scheduling() -> bool:
    """Whether the kernel shares the CPU between sessions first (see `lower_session_priority`)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def noting_handler(received: list[int]) -> Callable[[int, object], None]:
    """A signal handler that only appends its signal to ``received``, for a loop to act on.

    A handler runs in the main thread between two of its steps: one that took a lock there
    would wait for itself forever where that step held it (a second Ctrl-C while the first's
    ``Event.set`` held the event's lock: seen, a copy that never stopped)."""

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)

    return handler


class StopFlag:
    """A stop request that a signal handler may set: `threading.Event`'s ``set``, ``is_set``
    and ``wait``, without a lock.

    An Event's ``set`` takes the lock its ``wait`` holds between steps, and a handler runs in
    the main thread between two of them: a SIGTERM landing there would wait for itself
    forever (`noting_handler`). Here ``set`` only writes a flag and a byte into a pipe that
    ``wait`` polls; the byte is never read, so every later ``wait`` returns at once.
    """

    def __init__(self) -> None:
        self._set = False
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        """Request the stop (safe in a signal handler, from any thread)."""
        self._set = True
        with contextlib.suppress(OSError):  # (full: a byte is there already)
            os.write(self._write, b"x")

    def is_set(self) -> bool:
        """Whether the stop was requested."""
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the stop is requested or ``timeout`` seconds passed; whether it was."""
        if not self._set:  # (poll, not select: a descriptor may be above 1024)
            poller = select.poll()
            poller.register(self._read, select.POLLIN)
            poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
        return self._set


def end_with_parent(signum: int) -> None:
    """Have the kernel send ``signum`` to the calling process when its parent exits."""
    if IS_LINUX and _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)


def session_group_nice(pid: int | str = "self") -> int | None:
    """Nice value of a process's scheduling group (see `lower_session_priority`).

    None where the kernel has no such groups, and for a process of the system-wide default
    group, whose file reads empty (the processes of the first session, such as those a
    container's or a CI runner's first process starts without a session of their own).
    """
    try:
        text = Path(f"/proc/{pid}/autogroup").read_text()  # "/autogroup-780 nice 0"
        return int(text.split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def lower_session_priority(nice: int = 10) -> bool:
    """Raise the nice value of this process's scheduling group, when the group is its own.

    With autogroup scheduling (``kernel.sched_autogroup_enabled``, on by default in most
    distributions) the kernel first shares the CPU between sessions, then between the
    threads of a session: a thread's nice value only counts against threads of its own
    session. An engine in a session of its own (started by the widget, or by ``setsid``)
    got as much CPU as the acquisition's whole session whatever its threads' nice value.
    Only a session leader changes its group: any other would lower the shell or napari it
    shares the session with. Returns True when the group's nice value is now ``nice`` or
    more.
    """
    if not IS_LINUX or os.getsid(0) != os.getpid():
        return False
    current = session_group_nice()
    if current is None:
        return False  # no groups: thread nice values already apply
    if current >= nice:
        return True
    try:
        Path("/proc/self/autogroup").write_text(str(nice))
    except OSError:
        return False
    return True


def io_priority_class() -> int | None:
    """IO priority class of the calling thread (3 = idle), or None where unknown."""
    if not IS_LINUX or _libc is None:
        return None
    nr_get = {"x86_64": 252, "aarch64": 31}.get(os.uname().machine)
    if nr_get is None:
        return None
    value = _libc.syscall(nr_get, _IOPRIO_WHO_PROCESS, threading.get_native_id())
    return None if value < 0 else value >> _IOPRIO_CLASS_SHIFT


def drop_cache(fd: int) -> None:
    """Ask the kernel to drop the cached pages of ``fd`` (clean pages go, dirty ones are
    queued for writeback and stay: on a file just written, it only starts the writeback)."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


#: Filesystems where every operation waits on another machine or a user-space daemon: several
#: copy threads hide that latency. (Local ones answer in microseconds; there, more threads
#: only contend for the interpreter lock and the directory's lock.)
_LATENCY_BOUND_FS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "9p",
    "afs",
    "lustre",
    "gpfs",
    "beegfs",
    "glusterfs",
    "ocfs2",
    "gfs2",
    "fuse",
)


def filesystem_type(fd: int) -> str | None:
    """Type of the filesystem holding the open file ``fd`` (``"ext4"``, ``"nfs4"``,
    ``"fuse.sshfs"``...), from /proc/self/mountinfo; None where unknown."""
    if not IS_LINUX:
        return None
    dev = os.fstat(fd).st_dev
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == wanted and "-" in fields:
                    return fields[fields.index("-") + 1]
    except OSError:
        pass
    return None


def default_workers(fd: int) -> int:
    """Copy threads for a destination (``fd``: its root): 4 on a network or FUSE
    filesystem, 1 on a local one (where a second thread made a 50,000-file copy 20-50 %
    slower and a 4,096-file one no faster; see docs/benchmarks.md)."""
    fs = filesystem_type(fd)
    if fs is None or fs.split(".")[0] in _LATENCY_BOUND_FS:
        return 4
    return 1


def syncfs(fd: int) -> None:
    """Flush every dirty page of the filesystem that holds ``fd`` (falls back to `os.sync`)."""
    if IS_LINUX and _libc is not None and hasattr(_libc, "syncfs"):
        if _libc.syncfs(fd) == 0:
            return
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs failed: {os.strerror(err)}")
    os.sync()


class _OverflowHandler(logging.Handler):
    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.callback()


def on_event_overflow(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` whenever watchdog reports that the kernel dropped events.

    watchdog only logs an inotify queue overflow (logger ``watchdog.observers.inotify_c``);
    it does not tell the handler. Returns a function that removes the hook.
    """
    logger = logging.getLogger("watchdog.observers.inotify_c")  # "events were lost"
    if logger.level == logging.NOTSET or logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)
    # The engine handles an overflow (a rescan) and counts it in its status; watchdog's own
    # warnings, two per overflow, would flood the user's terminal.
    hooks = [(logger, _OverflowHandler(callback))]
    hooks.append((logging.getLogger("watchdog.observers.inotify"), logging.NullHandler()))
    previous = [lg.propagate for lg, _ in hooks]
    for lg, handler in hooks:
        lg.addHandler(handler)
        lg.propagate = False

    def remove() -> None:
        for (lg, handler), propagate in zip(hooks, previous, strict=True):
            lg.removeHandler(handler)
            lg.propagate = propagate

    return remove


def try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on an open file; False when another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def set_xattr(fd: int, name: str, value: bytes) -> bool:
    """Set an extended attribute on ``fd``; False where the filesystem refuses them."""
    try:
        os.setxattr(fd, name, value)
        return True
    except (OSError, AttributeError):
        return False


def get_xattr(
    path: str | os.PathLike | int, name: str, *, dir_fd: int | None = None
) -> bytes | None:
    """Read an extended attribute of a file, or None when absent or unsupported.

    A path's last component is never followed when it is a symbolic link.
    """
    try:
        if isinstance(path, int):
            return os.getxattr(path, name)
        if dir_fd is None:
            return os.getxattr(path, name, follow_symlinks=False)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            return os.getxattr(fd, name)
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        return None


#: Opening a folder: read-only, a folder, never through a symbolic link, not inherited.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_folder_below(root_fd: int, rel: str) -> int:
    """A descriptor of the folder ``rel`` (``/``-separated; ``""``: the root itself) below the
    open folder ``root_fd``, reached one name at a time without following a symbolic link (a
    link on the way raises OSError ELOOP or ENOTDIR): nothing outside the root is reached."""
    fd = os.open(".", DIR_FLAGS, dir_fd=root_fd)
    try:
        for part in rel.split("/") if rel else ():
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd

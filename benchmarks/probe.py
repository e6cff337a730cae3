"""Cheap observers: the backlog between two trees, and the resources of a process tree.

The backlog sampler runs every 100 ms beside the writer and the copier on a 2-core machine,
so it must cost little. `_Tree` keeps, per directory, its mtime and each file's identity
(inode, ctime) and size. A refresh stats every known directory and lists again only those
whose mtime moved (a file was created, renamed or removed). A small directory is listed with
``scandir`` and its files statted (a rewrite renamed into place has a new inode and ctime); a
large one (the 50,000 files of one folder) with ``listdir`` and set differences, statting only
new names (the benchmarks never rewrite a file there). Files written in place change no
directory mtime: a destination file whose size differs from its source is statted again at
every sample until it matches. `TreeProbe` keeps the backlog incrementally, so a sample costs
about what changed, not the size of the trees.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field

import psutil

# Writers' and copiers' temporary names, never counted: tensorstore (`K.__lock`), zarr-python
# (`K.<hex>.partial`), napari-softcopy (`.K.<hex>.softcopy-tmp`), rsync (`.K.XXXXXX`).
_TEMP_RE = re.compile(r"(\.__lock|\.partial|\.softcopy-tmp)$|^\..+\.[A-Za-z0-9]{6}$")

#: A directory modified more recently than this is listed again at the next refresh: a
#: second change in the same filesystem clock tick would not move its mtime.
_RECENT_NS = 50_000_000
#: Directories with more entries than this are listed by name only (see the module doc).
_LARGE = 2_000


def is_temp(name: str) -> bool:
    """True for a temporary file of any writer or copier benchmarked here."""
    return _TEMP_RE.search(name) is not None


class _Tree:
    """The files of one tree, refreshed incrementally."""

    def __init__(self, root: str, skip: frozenset[str]) -> None:
        self.root = root
        self.skip = skip
        self.mtimes: dict[str, int] = {}  # rel_dir -> mtime_ns
        self.files: dict[str, dict[str, list]] = {}  # rel_dir -> {name: [(ino, ctime), size]}
        self.total_files = 0
        self.total_bytes = 0

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def refresh(self) -> dict[str, tuple[dict[str, int], set[str]]]:
        """Bring the picture up to date; per changed directory ``({name: new size}, {gone})``
        (a name whose file was replaced appears with its new size)."""
        changes: dict[str, tuple[dict[str, int], set[str]]] = {}
        todo = list(self.mtimes) if self.mtimes else [""]
        seen: set[str] = set()
        now_ns = time.time_ns()
        while todo:
            rel = todo.pop()
            if rel in seen:
                continue
            seen.add(rel)
            path = self._path(rel)
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                self._forget(rel, changes)
                continue
            known = self.mtimes.get(rel)
            if known == mtime and now_ns - mtime > _RECENT_NS:
                continue
            files = self.files.setdefault(rel, {})
            try:
                if len(files) > _LARGE:
                    subdirs = self._list_large(rel, path, files, changes)
                else:
                    subdirs = self._list_small(rel, path, files, changes)
            except (FileNotFoundError, NotADirectoryError):
                self._forget(rel, changes)
                continue
            self.mtimes[rel] = mtime
            for child in subdirs:
                if child not in self.mtimes:
                    todo.append(child)
        return changes

    def _forget(self, rel: str, changes) -> None:
        self.mtimes.pop(rel, None)
        files = self.files.pop(rel, None)
        if files:
            changes[rel] = ({}, set(files))
            self.total_files -= len(files)
            self.total_bytes -= sum(info[1] for info in files.values())

    def _keep(self, rel: str, name: str) -> bool:
        return not is_temp(name) and (rel or name not in self.skip)

    def _list_small(self, rel, path, files, changes) -> list[str]:
        added: dict[str, int] = {}
        subdirs = []
        present = set()
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(f"{rel}/{name}" if rel else name)
                    continue
                if not self._keep(rel, name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                present.add(name)
                ino, size = (st.st_ino, st.st_ctime_ns), st.st_size
                old = files.get(name)
                if old is not None and old[0] == ino and old[1] == size:
                    continue
                if old is None:
                    self.total_files += 1
                else:
                    self.total_bytes -= old[1]
                self.total_bytes += size
                files[name] = [ino, size]
                added[name] = size
        self._record(rel, files, added, set(files) - present, changes)
        return subdirs

    def _list_large(self, rel, path, files, changes) -> list[str]:
        names = set(os.listdir(path))  # set operations in C: no per-name Python work
        gone = files.keys() - names
        added: dict[str, int] = {}
        subdirs = []
        for name in names - files.keys():
            if not self._keep(rel, name):
                continue
            full = f"{path}/{name}"
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if st.st_mode & 0o170000 == 0o040000:
                subdirs.append(f"{rel}/{name}" if rel else name)
                continue
            files[name] = [(st.st_ino, st.st_ctime_ns), st.st_size]
            added[name] = st.st_size
            self.total_files += 1
            self.total_bytes += st.st_size
        self._record(rel, files, added, gone, changes)
        return subdirs

    def _record(self, rel, files, added, gone, changes) -> None:
        """Forget the files ``gone`` from a folder; note what changed in it."""
        for name in gone:
            self.total_files -= 1
            self.total_bytes -= files.pop(name)[1]
        if added or gone:
            changes[rel] = (added, gone)

    def restat(self, rel_dir: str, name: str) -> int | None:
        """Size of one file now (for files written in place); None when gone."""
        try:
            st = os.stat(f"{self._path(rel_dir)}/{name}")
        except OSError:
            return None
        entry = self.files.get(rel_dir, {}).get(name)
        if entry is not None:
            self.total_bytes += st.st_size - entry[1]
            entry[0], entry[1] = (st.st_ino, st.st_ctime_ns), st.st_size
        return st.st_size


class TreeProbe:
    """Bytes at ``source`` not yet (identically sized) at ``destination``.

    Parameters
    ----------
    source, destination : str
        Tree roots; the destination need not exist yet.
    skip : iterable of str
        Root-level names left out (the finish marker).
    """

    def __init__(self, source: str, destination: str, skip=("complete",)) -> None:
        skip = frozenset(skip)
        self.src = _Tree(source, skip)
        self.dst = _Tree(destination, skip)
        self.backlog = 0  # bytes
        self.source_bytes = 0
        self.source_files = 0
        # (rel_dir, name) -> source size, for files not (or not fully) at the destination
        self._missing: dict[tuple[str, str], int] = {}
        self._first_byte = False

    def first_byte(self) -> bool:
        """True once any final-named file with data exists at the destination (cheap)."""
        if not self._first_byte:
            self._apply_dst(self.dst.refresh())
            self._first_byte = any(
                info[1] > 0 for files in self.dst.files.values() for info in files.values()
            )
        return self._first_byte

    def _set(self, key: tuple[str, str], size: int | None) -> None:
        """Record whether ``key`` is missing: ``size`` is its source size, None if it is not."""
        old = self._missing.pop(key, None)
        if old is not None:
            self.backlog -= old
        if size is not None:
            self._missing[key] = size
            self.backlog += size

    def _check(self, key: tuple[str, str]) -> None:
        rel, name = key
        src = self.src.files.get(rel, {}).get(name)
        if src is None:
            self._set(key, None)
            return
        dst = self.dst.files.get(rel, {}).get(name)
        self._set(key, None if dst is not None and dst[1] == src[1] else src[1])

    def _apply_dst(self, changes) -> None:
        for rel, (added, gone) in changes.items():
            for name in added:
                if (rel, name) in self._missing:
                    self._check((rel, name))
            for name in gone:
                if (rel, name) in self.src.files.get(rel, {}):
                    self._check((rel, name))

    def sample(self) -> dict:
        """One measurement: backlog bytes, source files and bytes."""
        src_changes = self.src.refresh()
        self._apply_dst(self.dst.refresh())
        for rel, (added, gone) in src_changes.items():
            for name in gone:
                self._set((rel, name), None)
            for name in added:
                self._check((rel, name))
        # Destination files written in place: look again at every size mismatch.
        for rel, name in list(self._missing):
            dst = self.dst.files.get(rel, {}).get(name)
            if dst is not None:
                self.dst.restat(rel, name)
                self._check((rel, name))
        self.source_files = self.src.total_files
        self.source_bytes = self.src.total_bytes
        return {
            "backlog_bytes": self.backlog,
            "source_files": self.source_files,
            "source_bytes": self.source_bytes,
        }


@dataclass
class TreeUsage:
    """Peak resident memory of a process tree, sampled from /proc."""

    peak_rss: int = 0
    peak_processes: int = 0
    samples: int = 0
    cpu_seen_s: float = 0.0
    _seen: dict = field(default_factory=dict)

    def sample(self, root: psutil.Process) -> None:
        """Add one observation of ``root`` and all its descendants."""
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        alive = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    t = proc.cpu_times()
                self._seen[proc.pid] = t.user + t.system
                alive += 1
            except psutil.Error:
                continue
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_processes = max(self.peak_processes, alive)
        self.cpu_seen_s = sum(self._seen.values())


class Monitor(threading.Thread):
    """Samples a process tree's memory every ``interval`` s until `stop`."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(name="bench-monitor", daemon=True)
        self.usage = TreeUsage()
        self.interval = interval
        self._stop_event = threading.Event()
        try:
            self._proc = psutil.Process(pid)
        except psutil.Error:
            self._proc = None

    def run(self) -> None:
        while self._proc is not None and not self._stop_event.is_set():
            self.usage.sample(self._proc)
            self._stop_event.wait(self.interval)

    def stop(self) -> TreeUsage:
        """Stop sampling and return what was seen."""
        self._stop_event.set()
        self.join()
        return self.usage


def wait_rusage(pid: int) -> tuple[int, float, float, int, float]:
    """``os.wait4`` a child: ``(exit code, user s, system s, max RSS bytes, wall time)``.

    The rusage covers the child and every descendant it waited for.
    """
    _pid, status, ru = os.wait4(pid, 0)
    t = time.time()
    code = os.waitstatus_to_exitcode(status)
    return code, ru.ru_utime, ru.ru_stime, ru.ru_maxrss * 1024, t

"""Shared helpers: running a measured child process, comparing trees, statistics, a live
acquisition written in a thread beside an in-process engine."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .probe import Monitor, is_temp, wait_rusage

REPO = Path(__file__).resolve().parent.parent
RAW = REPO / "benchmarks" / "results" / "raw"  # logs of every run (not committed)
MIB = 2**20


@dataclass
class Outcome:
    """What a measured child did."""

    exit_code: int | None
    started_at: float
    ended_at: float | None
    cpu_s: float
    peak_rss: int  # whole process tree, sampled
    max_rss_one: int  # largest single process (rusage)
    processes: int
    timed_out: bool = False

    @property
    def wall_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


class Measured:
    """A child process whose CPU time, tree RSS and exit time are recorded.

    The child gets a session of its own so a timeout can end its whole tree.
    """

    def __init__(self, argv: list[str], log_path: Path, env: dict | None = None) -> None:
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in `result`
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.monitor = Monitor(self.proc.pid)
        self.monitor.start()
        self._rusage: tuple | None = None
        self._waiter = threading.Thread(target=self._wait, name="bench-wait4", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        self._rusage = wait_rusage(self.proc.pid)
        self.proc.returncode = self._rusage[0]  # keep Popen from waiting again

    def running(self) -> bool:
        return self._waiter.is_alive()

    def result(self, timeout: float | None = None) -> Outcome:
        """Wait for the child (ending its tree after ``timeout`` s) and return the outcome."""
        self._waiter.join(timeout)
        timed_out = self._waiter.is_alive()
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self._waiter.join()
        usage = self.monitor.stop()
        self.log.close()
        code, user, system, maxrss, ended = self._rusage
        cpu = user + system
        return Outcome(
            exit_code=None if timed_out else code,
            started_at=self.started_at,
            ended_at=None if timed_out else ended,
            cpu_s=max(cpu, usage.cpu_seen_s),
            # Sampled only: the child's ru_maxrss starts at the harness's own size, inherited
            # through fork (a `sleep` reads as large as this Python process).
            peak_rss=usage.peak_rss,
            max_rss_one=maxrss,
            processes=usage.peak_processes,
            timed_out=timed_out,
        )


def compare_trees(src: Path, dst: Path, skip=("complete",)) -> dict:
    """Every source file (temporary files and ``skip`` aside) byte-identical at the
    destination, and nothing else there? Counts of missing, different and extra files."""
    missing = different = extra = files = nbytes = 0
    examples: list[str] = []
    for dirpath, _dirnames, names in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        rel_dir = "" if rel_dir == "." else rel_dir
        other_dir = dst / rel_dir
        try:
            other = {n for n in os.listdir(other_dir) if not (other_dir / n).is_dir()}
        except FileNotFoundError:
            other = set()
        for name in names:
            if is_temp(name) or (not rel_dir and name in skip):
                other.discard(name)
                continue
            files += 1
            other.discard(name)
            a, b = Path(dirpath) / name, other_dir / name
            try:
                data = a.read_bytes()
            except FileNotFoundError:
                continue
            nbytes += len(data)
            try:
                same = b.read_bytes() == data
            except FileNotFoundError:
                missing += 1
                if len(examples) < 5:
                    examples.append(f"missing {rel_dir}/{name}")
                continue
            if not same:
                different += 1
                if len(examples) < 5:
                    examples.append(f"different {rel_dir}/{name}")
        for name in other:
            if rel_dir or name not in skip:
                extra += 1
                if len(examples) < 5:
                    examples.append(f"extra {rel_dir}/{name}")
    return {
        "ok": missing == different == extra == 0 and files > 0,
        "files": files,
        "bytes": nbytes,
        "missing": missing,
        "different": different,
        "extra": extra,
        "examples": examples,
    }


def warm(root: Path) -> int:
    """Read every file below ``root`` (a warm page cache for everyone); return bytes."""
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    while chunk := f.read(1 << 20):
                        total += len(chunk)
            except OSError:
                continue
    return total


def rmtree(path: Path) -> None:
    """Remove a tree quickly (``rm -rf``)."""
    if path.exists():
        subprocess.run(["rm", "-rf", str(path)], check=False)


class Workdir:
    """Where runs happen: fresh directories, deletions deferred to the very end.

    On this machine's ext4 (no journal) creating a file costs time proportional to the inodes
    deleted nearby in the last seconds to minutes (the kernel's ``recently_deleted`` check in
    the inode allocator): 18 us per create in a fresh place, 400 us after an ``rm -rf`` of a
    few thousand files next door. Deleting each run's trees before the next would charge
    that to every writer and copier. So every run gets a new directory, spread over the
    disk by the ``T`` (top of hierarchy) attribute of the root, and finished runs are only
    renamed into ``trash/``, emptied when the invocation ends.
    """

    def __init__(self, root: Path, raw: Path = RAW) -> None:
        self.root = root
        self.raw = raw
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chattr", "+T", str(root)], check=False, capture_output=True)
        self.trash_dir = root / "trash"
        self.trash_dir.mkdir(exist_ok=True)
        self._n = 0

    def fresh(self, name: str) -> Path:
        """A new, empty directory for one run."""
        self._n += 1
        path = self.root / f"{self._n:03d}-{name}-{os.getpid()}"
        path.mkdir()
        return path

    def trash(self, path: Path) -> None:
        """Keep the run's logs (in ``raw``, by default ``benchmarks/results/raw/``), then set
        the run aside (a rename: nothing is deleted now)."""
        if not path.exists():
            return
        self.raw.mkdir(parents=True, exist_ok=True)
        for log in path.glob("*.log"):
            shutil.copyfile(log, self.raw / f"{path.name}-{log.name}")
        os.rename(path, self.trash_dir / path.name)

    def empty_trash(self) -> None:
        """Delete everything set aside."""
        rmtree(self.trash_dir)
        self.trash_dir.mkdir(exist_ok=True)


def create_cost_us(parent: Path, n: int = 2000) -> float:
    """Microseconds to create one empty file here: a probe of the environment (see
    `Workdir`). The probe files are left in place and deleted with the trash."""
    d = parent / f"create-probe-{time.monotonic_ns()}"
    d.mkdir()
    t = time.perf_counter()
    for i in range(n):
        os.close(os.open(d / str(i), os.O_CREAT | os.O_WRONLY, 0o644))
    return (time.perf_counter() - t) / n * 1e6


def child_result(argv: list[str], code, *, check: bool = True, **env: str) -> dict:
    """Run a benchmark's child process ``argv`` with the package of the folder ``code`` (a
    checkout's ``src``) first on its path, in turns with another's; the JSON of its last line
    of output, with the load average before it (``load_1min_before``).

    Raises
    ------
    subprocess.CalledProcessError
        The child failed (with ``check``; without, its last line is read all the same).
    """
    load = os.getloadavg()[0]
    done = subprocess.run(
        argv,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=f"{code}{os.pathsep}{REPO}", **env),
        capture_output=True,
        text=True,
        check=check,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_1min_before"] = round(load, 2)
    return result


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def python() -> str:
    return sys.executable


def dump(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def which(name: str) -> bool:
    return shutil.which(name) is not None


def time_find(*roots, stat: bool = False) -> float:
    """Wall time of ``find ROOTS`` (output discarded); the second of two runs. With
    ``stat``, ``-printf '%s %T@'`` makes find stat every file, as a size + mtime check must."""
    argv = ["find", *map(str, roots)] + (["-printf", "%s %T@\n"] if stat else [])
    best = None
    for _ in range(2):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
        best = time.perf_counter() - t
    return best


class ManifestLog(logging.Handler):
    """The manifest's log lines (logger ``napari_softcopy.manifest``), caught in a run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def search(self, pattern: str | re.Pattern) -> re.Match | None:
        """The last line's match of ``pattern`` (the manifest of the copy's finish)."""
        for line in reversed(self.lines):
            if found := re.search(pattern, line):
                return found
        return None


@contextlib.contextmanager
def live_acquisition(src: Path, preset: str = "lightsheet") -> Iterator[ManifestLog]:
    """Write ``preset`` into ``src`` at its real rate in a thread of this process, and catch
    the manifest's log lines meanwhile; entered once the archive's root metadata is there (a
    copy started then starts with the acquisition). On the way out: the writer has ended
    (within a minute), and a writer's failure is raised."""
    from napari_softcopy.simulate import simulate  # (numpy: only the runs that write)

    failed: list[BaseException] = []

    def write() -> None:
        try:
            simulate(src, preset)
        except BaseException as exc:  # (raised below, in the benchmark's thread)
            failed.append(exc)

    handler = ManifestLog()
    logger = logging.getLogger("napari_softcopy.manifest")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    writer = threading.Thread(target=write, name="benchmark-acquisition", daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while not (src / "zarr.json").exists():
            if failed or time.monotonic() > deadline:
                raise RuntimeError(f"the writer did not start: {failed[:1]}")
            time.sleep(0.01)
        yield handler
    finally:
        writer.join(60)
        logger.removeHandler(handler)
        logger.setLevel(level)
    if writer.is_alive() or failed:
        raise RuntimeError(f"the simulated acquisition did not end well: {failed[:1]}")

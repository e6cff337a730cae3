"""Where running copies are recorded: the user's state directory.

- ``locks/``: one lock per destination, so two engines never write into one folder.
- ``jobs/``: one JSON record per engine process (``pid``, paths, status file), so a widget
  opened later can list running copies and re-attach to them.
- ``status/``: default location of status files.

``NAPARI_SOFTCOPY_STATE_DIR`` overrides the location (tests use it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .checks import InputError
from .destinations.s3_settings import is_s3_url
from .platform import sha1, try_lock


def state_dir() -> Path:
    """The state directory (created on first use)."""
    env = os.environ.get("NAPARI_SOFTCOPY_STATE_DIR")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "napari-softcopy"
    for sub in ("locks", "jobs", "status"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


def job_id(destination: str | os.PathLike) -> str:
    """A short stable id for a destination path."""
    real = os.fspath(destination)
    if not is_s3_url(real):  # (a URL names the same place from any folder)
        real = os.path.realpath(real)
    return sha1(real.encode()).hexdigest()[:12]


def default_status_file(destination: str | os.PathLike) -> Path:
    """Default status file of a copy into ``destination``."""
    return state_dir() / "status" / f"{job_id(destination)}.json"


class DestinationLock:
    """An exclusive lock on a destination path, held for the life of one engine."""

    def __init__(self, destination: str | os.PathLike) -> None:
        self.destination = Path(destination)
        self.path = state_dir() / "locks" / f"{job_id(destination)}.lock"
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock; `InputError` when another engine holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if not try_lock(fd):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InputError(
                f"another napari-softcopy (pid {holder}) is already copying into "
                f"{self.destination}; stop it first or choose another destination"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass
class JobRecord:
    """A running (or ended) engine process."""

    pid: int
    source: str
    destination: str
    status_file: str
    started_at: float

    @property
    def path(self) -> Path:
        return state_dir() / "jobs" / f"{job_id(self.destination)}.json"

    def alive(self) -> bool:
        """True while the engine process exists."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a zombie (our own child that exited) is not running
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return True


def register_job(
    source: str | os.PathLike, destination: str | os.PathLike, status_file: str | os.PathLike
) -> JobRecord:
    """Record the current process as the engine copying ``source`` into ``destination``."""
    record = JobRecord(
        os.getpid(), os.fspath(source), os.fspath(destination), os.fspath(status_file), time.time()
    )
    tmp = record.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, record.path)
    return record


def unregister_job(record: JobRecord) -> None:
    """Remove a job record (only if it is still ours)."""
    try:
        data = json.loads(record.path.read_text())
        if data.get("pid") == record.pid:
            record.path.unlink()
    except (OSError, ValueError):
        pass


def list_jobs(*, alive_only: bool = True) -> list[JobRecord]:
    """Every recorded job; dead ones are pruned when ``alive_only``."""
    jobs = []
    for path in sorted((state_dir() / "jobs").glob("*.json")):
        try:
            record = JobRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if alive_only and not record.alive():
            continue
        jobs.append(record)
    return jobs

"""The status channel: a snapshot of the engine, written atomically as a JSON file.

Another process (the napari widget, a script) follows a copy by reading this file whenever it
likes; the writer replaces it with `os.replace`, so a reader never sees half a file. The
fields are documented in ``docs/status.md``; ``schema`` changes when a field changes meaning.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA = 1


class JobState(str, Enum):
    """A copy's state (``docs/status.md``). A `str`: it is its value in the JSON status and
    equal to it (``JobState.VERIFIED == "verified"``), so readers of the file need no enum."""

    STARTING = "starting"
    WAITING = "waiting"  # for the source to appear
    COPYING = "copying"  # also while a requested finish waits for the source to stay quiet
    FINISHING = "finishing"  # the last copies of a finish
    VERIFYING = "verifying"
    FREEING = "freeing"  # --move: the verified copy's source being checked and deleted
    VERIFIED = "verified"
    STOPPED = "stopped"
    FAILED = "failed"

    # (`str` and `format` of a str-mixin Enum name the member, e.g. "JobState.VERIFIED", in
    # Python 3.11 and later: messages and the widget show the value)
    __str__ = str.__str__
    __format__ = str.__format__


#: States in which the engine has ended.
FINAL_STATES = frozenset({JobState.VERIFIED, JobState.STOPPED, JobState.FAILED})


@dataclass
class Status:
    """One snapshot of a copy. See ``docs/status.md`` for every field."""

    source: str
    destination: str
    state: JobState = JobState.STARTING
    pid: int = field(default_factory=os.getpid)
    schema: int = SCHEMA
    started_at: float = 0.0
    updated_at: float = 0.0
    elapsed_s: float = 0.0
    files_copied: int = 0
    bytes_copied: int = 0
    files_deleted: int = 0
    files_pending: int = 0
    bytes_pending: int = 0
    files_at_destination: int = 0
    bytes_at_destination: int = 0
    chunks_expected: int = 0
    chunks_at_destination: int = 0
    rate_bytes_s: float = 0.0
    rate_files_s: float = 0.0
    lag_s: float = 0.0
    temp_files: int = 0
    event_overflows: int = 0
    scans: int = 0
    last_scan_s: float = 0.0
    scan_folders_skipped: int = 0
    scan_folders_looked_at: int = 0
    marker_seen: bool = False
    finish_reason: str | None = None
    marker_to_verified_s: float | None = None
    error_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    verification: dict[str, Any] | None = None
    message: str = ""
    waiting_for: str | None = None
    destination_away: str | None = None
    notices: list[str] = field(default_factory=list)
    freed: dict[str, Any] | None = None
    destination_info: str | None = None
    folders_watched: int | None = None
    folders_unwatched: int = 0

    @property
    def done(self) -> bool:
        """True once the engine has ended (verified, stopped or failed)."""
        return self.state in FINAL_STATES

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Status:
        """Build a snapshot from parsed JSON, ignoring fields a newer engine added."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        with contextlib.suppress(KeyError, ValueError):  # (a newer engine's state stays a str)
            known["state"] = JobState(known["state"])
        return cls(**known)


def write_status_file(path: str | os.PathLike, status: Status) -> None:
    """Replace ``path`` atomically with ``status`` as JSON."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(status.to_json())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status_file(path: str | os.PathLike) -> Status | None:
    """Read a status file; None when it does not exist (yet)."""
    try:
        with open(path) as f:
            return Status.from_dict(json.load(f))
    except FileNotFoundError:
        return None

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
from pathlib import Path
from typing import Any

SCHEMA = 1

#: States in which the engine has ended.
FINAL_STATES = frozenset({"verified", "stopped", "failed"})


@dataclass
class Status:
    """One snapshot of a copy. See ``docs/status.md`` for every field."""

    source: str
    destination: str
    state: str = "starting"
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
    marker_seen: bool = False
    finish_reason: str | None = None
    marker_to_verified_s: float | None = None
    error_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    verification: dict[str, Any] | None = None
    message: str = ""
    waiting_for: str | None = None
    notices: list[str] = field(default_factory=list)
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

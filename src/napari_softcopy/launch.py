"""Start, follow and control engine processes: what the widget does, without Qt.

The widget never copies a file itself. It starts ``python -m napari_softcopy.cli copy`` as its
own process in a new session (so closing napari does not end it), reads the engine's JSON
status file on a timer, and controls it with signals: ``SIGUSR1`` = finish once the source
is quiet, ``SIGUSR2`` = finish now even if the acquisition may still be writing,
``SIGTERM`` = stop (resumable). Copies started elsewhere (a terminal, another napari) are
found through the job registry (`napari_softcopy.jobs`) and followed the same way.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .destinations.s3_settings import is_s3_url
from .jobs import JobRecord, default_status_file, job_id, list_jobs, state_dir
from .option_flags import option_args
from .options import CopyOptions
from .status import FINAL_STATES, JobState, Status, read_status_file

KEEP, STOP, CANCEL = "keep", "stop", "cancel"


def copy_command(
    source: str | os.PathLike, destination: str | os.PathLike, options: CopyOptions
) -> list[str]:
    """The command line of an engine process copying ``source`` to ``destination`` with
    ``options``: only the options that are not their default (`option_flags.option_args`), so
    the ``copy`` command parses it back into ``options``."""
    return [
        sys.executable,
        "-m",
        "napari_softcopy.cli",
        "copy",
        os.fspath(source),
        os.fspath(destination),
        *option_args(options),
    ]


@dataclass
class CopyProcess:
    """An engine process followed through its status file.

    ``popen`` is set for processes this one started (so their exit is reaped); re-attached
    copies have only a pid.
    """

    pid: int
    source: str
    destination: str
    status_file: str
    log_file: str | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False)
    started_here: bool = False
    _last: Status | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """Stable identity of the copy (one engine per destination)."""
        return job_id(self.destination)

    def alive(self) -> bool:
        """True while the engine process runs."""
        if self.popen is not None:
            return self.popen.poll() is None
        return JobRecord(self.pid, self.source, self.destination, self.status_file, 0.0).alive()

    def exit_code(self) -> int | None:
        """The exit code of a process started here (None while it runs or when unknown)."""
        return self.popen.poll() if self.popen is not None else None

    def read_status(self) -> Status | None:
        """The latest status of *this* process (a file left by an older run is ignored)."""
        try:
            status = read_status_file(self.status_file)
        except (OSError, ValueError, TypeError):
            return self._last  # unreadable right now: keep the last good one
        if status is not None and status.pid == self.pid:
            self._last = status
        return self._last

    def _signal(self, signum: int) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def finish(self, force: bool = False) -> bool:
        """Finish: copy the rest, verify, write the marker (`CopyEngine.finish`).

        Parameters
        ----------
        force : bool
            False (``SIGUSR1``): without the acquisition's marker, first wait until the source
            has been quiet for longer than its pauses so far (the status's ``waiting_for``
            says what it waits for). True (``SIGUSR2``): no such wait. Either way a change at
            the source before the marker is written cancels the marker and the copy goes on.

        Returns
        -------
        bool
            False when the process has ended (nothing was sent).
        """
        return self._signal(signal.SIGUSR2 if force else signal.SIGUSR1)

    def stop(self) -> bool:
        """Stop (``SIGTERM``): promptly, nothing partial left; the same copy resumes later."""
        return self._signal(signal.SIGTERM)

    def last_log_line(self) -> str:
        """The last non-empty line the process printed (its error message on bad input)."""
        if not self.log_file:
            return ""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
                lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
        except OSError:
            return ""
        lines = [ln for ln in lines if ln]
        return lines[-1] if lines else ""


def start_copy(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    options: CopyOptions | None = None,
    *,
    env: dict[str, str] | None = None,
) -> CopyProcess:
    """Start an engine process copying ``source`` to ``destination`` with ``options``.

    The process runs in its own session (closing napari does not end it); its output goes to
    a log file beside its status file (``options.status_file``, by default the state
    directory's file for this destination, where other napari sessions find it). Validate
    the input first (`checks.check_pair`): this only starts the process.
    """
    options = options or CopyOptions()
    src = os.path.abspath(os.fspath(source))
    dst = os.fspath(destination)
    if not is_s3_url(dst):  # (an s3:// URL is not a path)
        dst = os.path.abspath(dst)
    if options.status_file is None:
        status_file = default_status_file(dst)
    else:
        status_file = Path(os.path.abspath(options.status_file))
    log_file = status_file.with_suffix(".log")
    cmd = copy_command(src, dst, replace(options, status_file=status_file))
    with open(log_file, "wb") as log:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    return CopyProcess(
        popen.pid, src, dst, os.fspath(status_file), os.fspath(log_file), popen, started_here=True
    )


def attach(record: JobRecord) -> CopyProcess:
    """Follow a copy from the job registry (started elsewhere or by an earlier napari)."""
    log = Path(record.status_file).with_suffix(".log")
    return CopyProcess(
        record.pid,
        record.source,
        record.destination,
        record.status_file,
        os.fspath(log) if log.is_file() else None,
    )


def running_copies() -> list[CopyProcess]:
    """Every running engine in the job registry."""
    return [attach(r) for r in list_jobs(alive_only=True)]


def apply_close_decision(answer: str, processes: list[CopyProcess]) -> bool:
    """What closing napari does to running copies; True when napari may close.

    ``KEEP`` leaves them running (they are their own processes and the widget re-attaches
    to them next time), ``STOP`` stops them (resumable), ``CANCEL`` keeps napari open.

    Pass only the copies the user decides about: the widget passes those it started itself,
    never copies it merely re-attached to (a terminal's or another napari's copy is not the
    closing napari's to stop).
    """
    if answer == CANCEL:
        return False
    if answer == STOP:
        for p in processes:
            p.stop()
    return True


def split_by_origin(
    processes: list[CopyProcess], launched: set[int]
) -> tuple[list[CopyProcess], list[CopyProcess]]:
    """``(started here, started elsewhere)``: ``launched`` holds the pids this widget started."""
    own = [p for p in processes if p.pid in launched]
    return own, [p for p in processes if p.pid not in launched]


def background_message(count: int) -> str:
    """What the widget says about copies that outlive napari (empty when there are none)."""
    if count <= 0:
        return ""
    return (
        f"{count} cop{'y keeps' if count == 1 else 'ies keep'} running in the background; "
        "reopen the widget to follow them"
    )


def logs_dir() -> Path:
    """Where engine logs live (beside the status files)."""
    return state_dir() / "status"


# ---------------------------------------------------------------------------- display
def human_bytes(n: float) -> str:
    """``1.5 GiB``-style sizes."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float | None) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour); ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def eta_s(status: Status) -> float | None:
    """Seconds until everything pending is copied, once a finish was requested.

    None before the finish (an acquisition's end is unknown), while verifying, or when
    nothing moves.
    """
    if status.done or status.finish_reason is None:
        return None
    if status.state == JobState.VERIFYING:
        return None
    if status.files_pending == 0:
        return 0.0
    if status.bytes_pending and status.rate_bytes_s > 0:
        return status.bytes_pending / status.rate_bytes_s
    if status.rate_files_s > 0:
        return status.files_pending / status.rate_files_s
    return None


@dataclass
class StatusView:
    """A status snapshot as the widget shows it (all strings, except the progress)."""

    state: str
    progress: int
    progress_max: int
    progress_text: str
    bytes_text: str
    rate: str
    lag: str
    backlog: str
    elapsed: str
    eta: str
    message: str
    errors: list[str]
    #: What a requested finish still waits for ("" when nothing), as a sentence; before it,
    #: the destination the copy waits for (full, read-only, its connection lost).
    waiting: str = ""
    #: One short line about the notices ("" when none); ``notices`` holds them all.
    notice_text: str = ""
    notices: list[str] = field(default_factory=list)
    #: How the source's changes are followed: the folders watched, and how the rest are
    #: covered ("" where the engine does not say).
    watching: str = ""


def watching_text(status: Status) -> str:
    """The folders watched, and how the others are covered, in one short line."""
    if status.folders_watched is None:
        return ""
    text = f"{status.folders_watched:,} watched"
    if status.folders_unwatched:
        text += f"; {status.folders_unwatched:,} finished: by rescans and the final check"
    return text


def waiting_text(waiting_for: str | None, destination_away: str | None = None) -> str:
    """The engine's ``waiting_for`` as a sentence for the panel ("" when it waits for nothing);
    its ``destination_away`` first (nothing goes on until the destination is back)."""
    if destination_away:
        return f"Waiting for the destination: {destination_away.strip()}"
    if not waiting_for:
        return ""
    text = waiting_for.strip()
    if not text.lower().startswith("waiting"):
        text = f"waiting for {text}"
    return text[0].upper() + text[1:]


def notice_text(notices: list[str]) -> str:
    """One line for the engine's notices: the first in full, and how many more there are."""
    notices = [n for n in notices if n]
    if not notices:
        return ""
    more = f" (+{len(notices) - 1} more)" if len(notices) > 1 else ""
    return f"Note: {notices[0]}{more}"


def status_view(status: Status | None, *, now: float | None = None) -> StatusView:
    """What the widget shows for ``status`` (None: the engine has not written one yet)."""
    if status is None:
        return StatusView(
            JobState.STARTING,
            0,
            0,
            "waiting for the engine's first status",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "",
            [],
        )
    expected = max(status.chunks_expected, status.chunks_at_destination)
    if status.state == JobState.VERIFIED:
        expected = max(status.chunks_at_destination, 1)
    pct = f" ({100 * status.chunks_at_destination / expected:.0f}%)" if expected else ""
    elapsed = status.elapsed_s
    if not status.done and status.updated_at:
        now = time.time() if now is None else now
        elapsed += max(0.0, min(now - status.updated_at, 5.0))
    eta = eta_s(status)
    # Short enough for one line of a narrow dock: "copied this run" only for a resumed copy
    # (the two counters are taken at different moments, so a fresh copy's differ a little),
    # the pending bytes beside the pending files.
    bytes_text = f"{human_bytes(status.bytes_at_destination)} at destination"
    if status.bytes_copied < 0.99 * status.bytes_at_destination:
        bytes_text += f", {human_bytes(status.bytes_copied)} copied this run"
    backlog = f"{status.files_pending:,} file{'' if status.files_pending == 1 else 's'}"
    if status.bytes_pending:  # unknown (0) for files only announced by an event so far
        backlog += f", {human_bytes(status.bytes_pending)}"
    errors = [f"{e.get('path') or '-'}: {e.get('message', '')}" for e in status.errors]
    return StatusView(
        state=status.state,
        progress=min(status.chunks_at_destination, expected),
        progress_max=expected,
        progress_text=f"{status.chunks_at_destination:,} / {expected:,} chunk files{pct}",
        bytes_text=bytes_text,
        rate=(f"{human_bytes(status.rate_bytes_s)}/s, {status.rate_files_s:.0f} files/s"),
        lag=f"{status.lag_s:.1f} s",
        backlog=backlog,
        elapsed=human_duration(elapsed),
        eta=human_duration(eta) if eta is not None else "-",
        message=status.message,
        errors=errors,
        # A finished engine waits for nothing: an old field must not linger on the panel.
        waiting="" if status.done else waiting_text(status.waiting_for, status.destination_away),
        notice_text=notice_text(status.notices or []),
        notices=[n for n in status.notices or [] if n],
        watching=watching_text(status),
    )


def is_final(status: Status | None) -> bool:
    """True when the status says the engine has ended."""
    return status is not None and status.state in FINAL_STATES

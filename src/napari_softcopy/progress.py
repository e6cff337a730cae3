"""The command line's progress display: a line per copy on a terminal, plain lines in a
log, JSON lines with ``--json``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .engine import CopyEngine
from .status import JobState, Status


class Progress:
    """A progress line per copy on a terminal; plain lines otherwise; JSON lines with --json.

    Parameters
    ----------
    engines : list of CopyEngine
        The copies, started.
    mode : {"bar", "plain", "json", "none"}
        A tqdm line per copy (stderr), a plain line every 10 s or a JSON line per `update`
        (stdout), or nothing.
    """

    def __init__(self, engines: list[CopyEngine], mode: str) -> None:
        self.engines = engines
        self.mode = mode
        self.bars = []
        self._last_line = 0.0
        self._waiting = [False] * len(engines)  # (a finish's wait is told once, as it begins)
        self._away = [False] * len(engines)  # (so is a wait for the destination)
        self._told_destination = [False] * len(engines)  # (what the probe found: once)
        if mode == "bar":
            from tqdm import tqdm

            for i, engine in enumerate(engines):
                # (tqdm draws a first line at once: ours, not its own format)
                first = bar_format(engine.status(), 80)
                self.bars.append(
                    tqdm(total=0, position=i, dynamic_ncols=True, leave=True, bar_format=first)
                )

    def update(self, final: bool = False) -> None:
        now = time.monotonic()
        if (
            self.mode in ("plain", "silent", "none")
            and not final
            and now - self._last_line < 10
            and all(self._told_destination)
        ):
            return  # (nothing to print: no status made for nothing four times a second)
        for i, engine in enumerate(self.engines):
            s = engine.status()
            if s.destination_info and not self._told_destination[i] and self.mode != "json":
                self._told_destination[i] = True  # (a JSON reader has it in every line)
                line = f"{s.destination}: destination: {s.destination_info}"
                if self.bars:
                    self.bars[i].write(line, file=sys.stderr)
                elif self.mode == "plain":
                    print(line, file=sys.stderr, flush=True)
            if self.mode == "json":
                self._print(s.to_json())
            elif self.mode == "bar":
                bar = self.bars[i]
                if bool(s.waiting_for) != self._waiting[i]:
                    self._waiting[i] = bool(s.waiting_for)
                    if s.waiting_for:  # (the line itself has room for "settling" only)
                        bar.write(f"{Path(s.source).name}: the finish waits for {s.waiting_for}")
                away = bool(s.destination_away) and not s.done
                if away != self._away[i]:
                    self._away[i] = away
                    if away:  # (the line itself has room for "retrying" only)
                        bar.write(f"{Path(s.source).name}: {s.destination_away}")
                bar.total = max(s.chunks_expected, s.chunks_at_destination)
                bar.n = s.chunks_at_destination
                # (tqdm measures the terminal again for each line: a resize is followed)
                bar.bar_format = bar_format(s, bar.format_dict["ncols"] or 80)
                bar.refresh()
            elif self.mode == "plain" and (final or now - self._last_line >= 10):
                self._print(_plain(s))
        if self.mode == "plain" and now - self._last_line >= 10:
            self._last_line = now

    def _print(self, line: str) -> None:
        try:
            print(line, flush=True)
        except BrokenPipeError:
            # Whoever read the lines went away (`| head`): the copy goes on without them.
            stdout_to_devnull()
            self.mode = "silent"

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


def bar_format(s: Status, width: int) -> str:
    """tqdm's ``bar_format`` for one copy's line in ``width`` columns.

    Every figure is always there (chunks, state (``settling`` while a finish waits for the
    source to stay quiet, ``retrying`` while the destination cannot take data), bytes
    copied, rate, lag, files pending, errors); the bar takes what is left and goes first
    when the terminal is narrow, then the archive's name is shortened in its middle (where
    dated names differ least).
    """
    done = s.chunks_at_destination
    total = max(s.chunks_expected, done)
    state = "settling" if s.waiting_for and s.state == JobState.COPYING else s.state
    if s.destination_away and not s.done:
        state = "retrying"  # (the destination cannot take data: the line above says why)
    rate, lag = f"{_size(s.rate_bytes_s)}/s", _duration(s.lag_s)
    name = Path(s.source).name
    for pending, errors in (("pending", "errors"), ("pend", "err")):
        figures = (
            f"{done}/{total} {state} {_size(s.bytes_copied)} {rate} lag {lag} "
            f"{pending} {s.files_pending} {errors} {s.error_count}"
        )
        room = width - len(figures) - 1  # (for the name and a space)
        if room >= min(len(name), 16):
            break
    if len(name) > room:
        keep = room - 1  # (characters around the ellipsis)
        name = f"{name[: (keep + 1) // 2]}…{name[len(name) - keep // 2 :]}" if keep >= 4 else ""
    line = f"{name} {figures}".strip().replace("{", "{{").replace("}", "}}")
    if width - len(line) - 3 >= 10:
        line += " |{bar}|"
    return line


def _size(n: float) -> str:
    """Bytes in 4 characters at most and a binary unit: ``512B``, ``9.99KiB``, ``123GiB``."""
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1023.5 or unit == "PiB":
            break
        n /= 1024
    if unit == "B" or n >= 99.95:
        return f"{n:.0f}{unit}"
    return f"{n:.1f}{unit}" if n >= 9.995 else f"{n:.2f}{unit}"


def _duration(s: float) -> str:
    """Seconds in 4 characters at most: ``1.2s``, ``42s``, ``17m``, ``3h``."""
    if s < 9.95:
        return f"{s:.1f}s"
    if s < 99.5:
        return f"{s:.0f}s"
    if s < 99.5 * 60:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.0f}h"


def mib(n: float) -> str:
    """Bytes as ``"1,234.5 MiB"`` (summaries and log lines)."""
    return f"{n / 2**20:,.1f} MiB"


def stdout_to_devnull() -> None:
    """Send what is still to be printed nowhere (its reader is gone): neither a print nor the
    flush at exit then fails again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _plain(s: Status) -> str:
    return (
        f"{s.source}: {s.state}, {s.chunks_at_destination}/{s.chunks_expected} chunks, "
        f"{s.files_copied} files / {mib(s.bytes_copied)} copied, "
        f"{s.rate_bytes_s / 2**20:.1f} MiB/s, lag {s.lag_s:.1f} s, {s.error_count} errors"
        + (f"; the finish waits for {s.waiting_for}" if s.waiting_for else "")
        + (f"; {s.destination_away}" if s.destination_away and not s.done else "")
    )

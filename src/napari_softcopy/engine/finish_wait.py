"""When a requested finish may begin: the source quiet for long enough, confirmed by a scan,
no writer's temporary file left (`Finish` begins it)."""

from __future__ import annotations

import logging
import time

from ..quiet import PAUSE_FACTOR
from .state import EngineState

log = logging.getLogger(__package__)  # (one logger for the engine, as before the split)

#: `CopyEngine._finish_wait`'s answer "quiet by the events: a scan must confirm it".
_CONFIRM_BY_SCAN = "scan"


class FinishWait(EngineState):
    """When a finish may begin (`CopyEngine._loop` asks), and what it waits for meanwhile."""

    def _finish_needs_quiet(self) -> bool:
        """True while a requested finish must first see the source quiet: the acquisition may
        still be going on. Not on the acquisition's marker, not when forced, not for the
        first try of a finish on `CopyOptions.finish_when_idle` (a quiet rule already)."""
        if self._marker_seen or self._force_finish:
            return False
        if self._finish_reason in ("idle", "marker", "already-complete"):
            return self._finish_cancelled
        return self._finish_reason is not None

    def _finish_wait(self) -> str | None:
        """What a requested finish still waits for (one line), `_CONFIRM_BY_SCAN`, or None
        when it may begin.

        The source must have been quiet for longer than the longest pause between two of
        its changes so far (`quiet.PAUSE_FACTOR` times it, at least `finish_quiet`, at most
        `finish_quiet_max` s; after a cancelled marker of a finish on `finish_when_idle`,
        at least that long), and a whole scan started after its last change must have found
        no writer's temporary file.
        """
        if not self._finish_needs_quiet():
            return None
        opts = self.options
        activity = self._activity
        needed = activity.quiet_needed(opts.finish_quiet, opts.finish_quiet_max)
        capped = needed < PAUSE_FACTOR * activity.longest_pause
        if self._finish_reason == "idle" and opts.finish_when_idle is not None:
            needed = max(needed, opts.finish_when_idle)
        now = time.monotonic()
        if activity.quiet_for(now) < needed:
            return activity.describe_wait(needed, capped=capped, now=now)
        if self._last_scan_started <= activity.last_change:
            return _CONFIRM_BY_SCAN
        temp = self._counters.temp_files
        if temp:
            return (
                f"the writers' temporary files in the source to go ({temp} at the last scan; "
                "a finish forced by SIGUSR2 does not wait for them)"
            )
        return None

    def _set_waiting(self, waiting: str | None) -> None:
        """Publish what the finish waits for; log it when that changes (not its seconds)."""
        previous = self._waiting_for
        with self._lock:
            self._waiting_for = waiting
        if waiting is not None and (previous or "")[:24] != waiting[:24]:
            log.info("finish requested; waiting for %s", waiting)

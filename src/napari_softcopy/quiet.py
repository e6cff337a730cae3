"""When may a requested finish believe that the acquisition is over?

A microscope pauses between timepoints (seconds to minutes); a "finish" requested in such a
pause must not verify the copy and write the ``complete`` marker while the writer is about
to go on. Without the acquisition's own marker, the only evidence is the source itself:
`SourceActivity` counts the changes seen there (file events, changes a scan found that events
missed), remembers when the last one was and the longest pause between two, and says how long
the source must now stay quiet before the finish may go ahead (`SourceActivity.quiet_needed`).

The same change counter makes the marker safe against a writer that resumes during the
finish: taken when the verification starts and compared again right before the marker is
written, any change in between cancels the marker (`CopyEngine._finish`).
"""

from __future__ import annotations

import threading
import time

#: A pause counts as the end of the acquisition only once it is this much longer than the
#: longest pause between two changes seen so far: the intervals of a time-lapse jitter by a
#: few percent, and a pause exactly as long as the last ones is the acquisition going on.
PAUSE_FACTOR = 1.2


class SourceActivity:
    """Changes seen at the source: how many, the last one, and the longest pause between two.

    Safe to call from any thread (the file-event thread and the engine's control thread both
    note changes).

    Parameters
    ----------
    now : float, optional
        Monotonic time the watching began (default: now). Until a change is seen, the source
        counts as quiet since then; the time before the first change is not a pause of the
        acquisition (the copy may have been started long before it), so it is not measured.
    """

    def __init__(self, now: float | None = None) -> None:
        self._lock = threading.Lock()
        self._changes = 0
        self._last_change = time.monotonic() if now is None else now
        self._longest_pause = 0.0
        self._seen_any = False

    @property
    def changes(self) -> int:
        """Changes seen so far: compare two readings to learn whether any came in between."""
        return self._changes

    @property
    def last_change(self) -> float:
        """Monotonic time of the last change (the start of watching before the first)."""
        return self._last_change

    @property
    def longest_pause(self) -> float:
        """The longest time between two changes seen so far, in seconds."""
        return self._longest_pause

    def note(self, at: float | None = None) -> None:
        """Count a change that happened at monotonic time ``at`` (default: now).

        A change dated at or before the last one counted (a scan finding what an event
        already reported), or before the watching began, is not counted: it is no evidence
        of anything new.
        """
        now = time.monotonic()
        at = now if at is None else min(at, now)
        with self._lock:
            if at <= self._last_change:
                return
            if self._seen_any:
                self._longest_pause = max(self._longest_pause, at - self._last_change)
            self._last_change = at
            self._seen_any = True
            self._changes += 1

    def quiet_for(self, now: float | None = None) -> float:
        """Seconds since the last change."""
        return max(0.0, (time.monotonic() if now is None else now) - self._last_change)

    def quiet_needed(self, minimum: float, maximum: float) -> float:
        """Seconds of quiet that make a pause longer than any seen so far: `PAUSE_FACTOR`
        times the longest pause, at least ``minimum``, at most ``maximum`` (which is raised
        to ``minimum`` if lower)."""
        return min(max(maximum, minimum), max(minimum, PAUSE_FACTOR * self._longest_pause))

    def describe_wait(self, needed: float, *, capped: bool, now: float | None = None) -> str:
        """One line for the status: what a finish waiting for ``needed`` s of quiet waits for."""
        parts = [f"last change {self.quiet_for(now):.0f} s ago"]
        if self._longest_pause > 0:
            parts.append(f"its pauses so far reached {self._longest_pause:.0f} s")
        cap = ", the most it waits" if capped else ""
        return f"the source to stay quiet for {needed:.0f} s{cap} ({'; '.join(parts)})"

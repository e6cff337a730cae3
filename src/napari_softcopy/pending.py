"""The pending set: paths waiting to be synced, one entry per path.

A path is handed to one worker at a time. A hint that arrives while it is being copied marks
it dirty, and it is copied again afterwards, so two versions of one file never race and the
last copy always starts after the last change.

Memory follows the backlog, not the archive: an entry lives from its hint until its copy, and
the set's tables are made anew once a backlog is gone (a Python dict keeps the size of its
largest moment otherwise: 4 MiB after a backlog of 70,000 files, for ever). Beyond a caller's
``limit`` (a writer far ahead of the copy), new paths wait in compact chunks instead, about
60 bytes each against 250 for an entry, and become entries, oldest first, as room comes;
beyond ``spill`` of those too, a path is refused and the caller leaves it to a scan.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

QUEUED, DELAYED, IN_FLIGHT, GONE = 0, 1, 2, 3


class Ready(NamedTuple):
    """A path handed to a worker, or put in a copy helper's batch."""

    path: str
    force: bool  # copy even where the copy looks current (a scan found it stale by its stamp)


class PendingSnapshot(NamedTuple):
    """The pending set at a glance (`PendingSet.snapshot`)."""

    count: int
    known_bytes: int
    oldest_age_s: float  # how long the oldest ready path has waited: the copy's lag


@dataclass(slots=True)
class _Entry:
    since: float  # when the path first became ready (monotonic): drives the lag figure
    size: int
    state: int = QUEUED
    dirty: bool = False
    force: bool = False

    def __lt__(self, other: _Entry) -> bool:  # (the order of `PendingSet._ages`)
        return self.since < other.since


#: A set that held at least this many entries is made anew once it is down to a sixteenth.
_COMPACT_FROM = 1024
#: Paths waiting beyond the limit are kept in chunks of this many, one bytes object each.
_CHUNK = 1024


class PendingSet:
    """Thread-safe, deduplicated work set with delays and in-flight tracking."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._entries: dict[str, _Entry] = {}
        self._high = 0  # the most entries since the tables were last made anew
        self._ready: deque[str] = deque()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._closed = False
        # Paths beyond the limit: (since, NUL-joined paths) chunks, oldest first, and the
        # chunk being filled.
        self._waiting: deque[tuple[float, bytes]] = deque()
        self._filling: list[str] = []
        self._filling_since = 0.0
        self._n_waiting = 0
        self._limit = 0  # the limit the waiting paths wait for (room below half of it)
        # What `_add` queued since the workers were last woken (`_wake`).
        self._queued_since_wake = self._delayed_since_wake = False
        # The figures of `snapshot`, kept as entries come and go: a status several times a
        # second summed a backlog of 20,000 entries each time (7 % of a bulk copy's CPU).
        self._known_bytes = 0
        # Every entry, oldest first (a heap of the entries themselves: no object more per
        # entry); an entry gone is dropped when it reaches the top.
        self._ages: list[_Entry] = []

    def __len__(self) -> int:
        return len(self._entries) + self._n_waiting

    def add(
        self,
        path: str,
        *,
        size: int = 0,
        delay: float = 0.0,
        force: bool = False,
        limit: int | None = None,
        spill: int = 0,
    ) -> bool:
        """Ask for ``path`` to be synced (after ``delay`` seconds); ``force`` copies even when
        size and mtime already match. A new path beyond ``limit`` entries waits in compact
        form (up to ``spill`` paths; delay, size and force are not kept) until there is room.
        False (nothing added) beyond both: the caller must see that a scan finds it."""
        now = time.monotonic()
        with self._cond:
            added = self._add(path, size, delay, force, limit, spill, now)
            self._wake()
        return added

    def add_hints(
        self, hints: Iterable[tuple[str, float]], *, limit: int | None = None, spill: int = 0
    ) -> int:
        """`add` each ``(path, delay)`` of a batch of file events, under one lock and with
        one wake-up of the workers (not one per path: a writer's burst is thousands of
        events a second). Returns how many were refused (beyond ``limit`` and ``spill``)."""
        now = time.monotonic()
        refused = 0
        with self._cond:
            for path, delay in hints:
                if not self._add(path, 0, delay, False, limit, spill, now):
                    refused += 1
            self._wake()
        return refused

    def _add(
        self,
        path: str,
        size: int,
        delay: float,
        force: bool,
        limit: int | None,
        spill: int,
        now: float,
    ) -> bool:
        """`add` with the lock held; the workers are woken by the caller (`_wake`)."""
        entry = self._entries.get(path)
        if entry is None and limit is not None and len(self._entries) >= limit:
            if path in self._filling[-8:]:
                return True  # (a file's events come in pairs: a rename, then a close)
            if self._n_waiting >= spill:
                return False
            if not self._filling:
                self._filling_since = now
            self._filling.append(path)
            if len(self._filling) >= _CHUNK:
                self._seal()
            self._n_waiting += 1
            self._limit = limit
            return True
        if entry is None:
            self._entries[path] = entry = _Entry(now + delay, size, force=force)
            self._known(entry)
            self._high = max(self._high, len(self._entries))
            self._schedule(path, entry, now + delay, notify=False)
        elif entry.state == IN_FLIGHT:
            entry.dirty = True
            entry.force |= force
        else:
            entry.force |= force
            if size > entry.size:
                self._known_bytes += size - entry.size
                entry.size = size
            if entry.state == DELAYED and delay == 0.0:
                entry.state = QUEUED  # the heap entry goes stale; `take` skips it
                self._ready.append(path)
                self._queued_since_wake = True
        return True

    def _wake(self) -> None:
        """Wake the workers for what `_add` queued (lock held): one for ready paths, all
        when a delay was added (a sleeping worker's wait may now be too long)."""
        if self._delayed_since_wake:
            self._cond.notify_all()
        elif self._queued_since_wake:
            self._cond.notify(len(self._ready))
        self._queued_since_wake = self._delayed_since_wake = False

    def _schedule(self, path: str, entry: _Entry, due: float, *, notify: bool = True) -> None:
        if due <= time.monotonic():
            entry.state = QUEUED
            self._ready.append(path)
            if notify:
                self._cond.notify()
            else:
                self._queued_since_wake = True
        else:
            entry.state = DELAYED
            heapq.heappush(self._delayed, (due, next(self._seq), path))
            if notify:
                self._cond.notify_all()
            else:
                self._delayed_since_wake = True

    def take(self, timeout: float | None = None) -> Ready | None:
        """Hand the next ready path to a worker; None on close/timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, path = heapq.heappop(self._delayed)
                    entry = self._entries.get(path)
                    if entry is not None and entry.state == DELAYED:
                        entry.state = QUEUED
                        self._ready.append(path)
                item = self._next_ready()
                if item is not None:
                    return item
                wait = None if deadline is None else deadline - now
                if self._delayed:
                    due = self._delayed[0][0] - now
                    wait = due if wait is None else min(wait, due)
                if wait is not None and wait <= 0:
                    if deadline is not None and now >= deadline:
                        return None
                    continue
                self._cond.wait(wait)

    def take_many(self, limit: int, timeout: float | None = None) -> list[Ready]:
        """Up to ``limit`` ready paths at once, handed out as `take` hands out one (a batch
        for a helper process); waits up to ``timeout`` for the first. Empty on timeout or
        close."""
        first = self.take(timeout)
        if first is None:
            return []
        batch = [first]
        with self._cond:
            while len(batch) < limit and (item := self._next_ready()) is not None:
                batch.append(item)
        return batch

    def _next_ready(self) -> Ready | None:
        """Hand out the next queued path, skipping stale queue entries
        (called with the lock held); None when none is ready."""
        while self._ready:
            path = self._ready.popleft()
            entry = self._entries.get(path)
            if entry is not None and entry.state == QUEUED:
                entry.state = IN_FLIGHT
                force, entry.force = entry.force, False
                return Ready(path, force)
        return None

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    def done(self, path: str, *, retry_after: float | None = None) -> None:
        """A worker finished ``path``; it goes again if dirty or if ``retry_after`` is given."""
        with self._cond:
            entry = self._entries[path]
            if entry.dirty or retry_after is not None:
                entry.dirty = False
                self._schedule(path, entry, time.monotonic() + (retry_after or 0.0))
            else:
                del self._entries[path]
                entry.state = GONE
                self._known_bytes -= entry.size
                if self._n_waiting and len(self._entries) <= self._limit // 2:
                    self._admit()
                if self._high >= _COMPACT_FROM and len(self._entries) * 16 <= self._high:
                    self._compact()
                elif len(self._ages) > 2 * len(self._entries) + _COMPACT_FROM:
                    self._drop_gone_ages()
                if not self._entries:
                    self._ages.clear()
                    self._cond.notify_all()

    def _seal(self) -> None:
        """The chunk being filled joins the waiting ones (called with the lock held)."""
        data = "\0".join(self._filling).encode("utf-8", "surrogateescape")
        self._waiting.append((self._filling_since, data))
        self._filling = []

    def _admit(self) -> None:
        """Waiting paths become entries, oldest first, up to the limit (lock held). They keep
        the time they first waited: the lag counts from then."""
        while self._n_waiting and len(self._entries) < self._limit:
            if not self._waiting:
                self._seal()
            since, data = self._waiting.popleft()
            for path in data.decode("utf-8", "surrogateescape").split("\0"):
                self._n_waiting -= 1
                if path not in self._entries:
                    self._entries[path] = entry = _Entry(since, 0)
                    self._known(entry)
                    self._schedule(path, entry, since)
            self._high = max(self._high, len(self._entries))

    def _compact(self) -> None:
        """Make the tables anew at the size of what they hold (called with the lock held):
        neither a dict nor a deque gives back the room of a backlog that is gone."""
        self._entries = dict(self._entries)
        self._ready = deque(p for p in self._ready if p in self._entries)
        self._delayed = [d for d in self._delayed if d[2] in self._entries]
        heapq.heapify(self._delayed)
        self._drop_gone_ages()
        self._high = len(self._entries)

    def _drop_gone_ages(self) -> None:
        """Keep only the ages of entries still there (lock held): entries gone below a
        long-waiting top are not popped by `snapshot`, so this bounds them."""
        self._ages = [entry for entry in self._ages if entry.state != GONE]
        heapq.heapify(self._ages)

    def _known(self, entry: _Entry) -> None:
        """Count a new entry in `snapshot`'s figures (lock held)."""
        self._known_bytes += entry.size
        heapq.heappush(self._ages, entry)

    def wait_for_room(self, limit: int, stop: threading.Event) -> None:
        """Block while more than ``limit`` paths are pending (the scans' backpressure; the
        finish's wait for the last copies)."""
        with self._cond:
            while len(self) > limit and not stop.is_set() and not self._closed:
                self._cond.wait(0.1)

    def snapshot(self) -> PendingSnapshot:
        """How many paths, their known bytes, and the age of the oldest entry (in constant
        time: a status asks several times a second, whatever the backlog)."""
        now = time.monotonic()
        with self._cond:
            ages = self._ages
            while ages and ages[0].state == GONE:
                heapq.heappop(ages)
            oldest = ages[0].since if ages else now
            if self._n_waiting:
                oldest = min(oldest, self._waiting[0][0] if self._waiting else self._filling_since)
            return PendingSnapshot(
                len(self._entries) + self._n_waiting, self._known_bytes, max(0.0, now - oldest)
            )

    def close(self) -> None:
        """Wake every waiting worker with None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

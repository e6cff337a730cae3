"""The copy-helper pump: hand batches of a large backlog to a second process
(`copy_helper.CopyHelper`) and book its outcomes as the engine's own copies."""

from __future__ import annotations

import logging
import threading
from collections import deque

from ..copy_helper import BATCH, COPIED, CURRENT, UNTRIED, CopyHelper, HelperOutcome
from ..destinations import LocalDestination
from ..pending import Ready
from ..platform import available_cores, degrade, lower_thread_priority
from ..transfer import RACY_S, CopyResult, Stopped
from .state import EngineState

log = logging.getLogger(__package__)  # (one logger for the engine, as before the split)


class HelperPump(EngineState):
    """Starts a copy helper process for a large backlog at a finish and feeds it."""

    def _start_copy_helper_if_worth_it(self) -> None:
        """Start a copy helper process for a large backlog at a finish (see `copy_helper`).
        Called for every file a scan queues then: what cannot change is decided once."""
        if self._copy_helper_decided or len(self._pending) < self.tuning.copy_helper_files:
            return
        self._copy_helper_decided = True
        if self._limiter is not None or available_cores() < 2:
            return  # (a bandwidth cap is shared by this process's threads only)
        if not isinstance(self._dest, LocalDestination):
            # (the helper is handed the root's descriptor; an object store has none)
            degrade(
                "the copy helper process",
                f"{self.destination} is not a folder: its backlog is uploaded by this "
                "process's threads alone (obstore releases the interpreter lock)",
            )
            return
        t = threading.Thread(
            target=self._degraded.thread_target(self._helper_worker),
            name="softcopy-worker-h",
            daemon=True,
        )
        t.start()
        self._threads.append(t)

    def _helper_worker(self) -> None:
        """Hand batches of pending paths to a copy helper process and book its outcomes;
        paths it hands back are synced here. Ends when the engine stops, when the backlog is
        copied once the final walk has begun, or when the helper fails (its paths go back
        to the pending set)."""
        if self.options.low_priority:
            lower_thread_priority()  # (the helper inherits this thread's priority)
        helper = CopyHelper(
            self._src_fd,
            self._dest,
            settle_s=RACY_S,
            fsync=self.options.fsync == "each",
            uncache=self.options.drop_cache,
            digest=self._hash_as_copied(),
        )
        self._copy_helper = helper
        in_flight: deque[list[Ready]] = deque()
        copied = 0
        try:
            while helper.running and not self._stop.is_set():
                # Two batches in flight: the helper starts the next while this thread books
                # the last (it may wait for the interpreter lock meanwhile).
                while len(in_flight) < 2:
                    self._wait_backoff()
                    batch = self._pending.take_many(BATCH, timeout=0.0 if in_flight else 0.1)
                    if not batch:
                        break
                    in_flight.append(batch)
                    if not helper.submit(batch):
                        break
                if not in_flight:
                    # Once the final walk has begun, the backlog is copied: the helper ends
                    # (the walk's own helper needs the memory more).
                    if self._pending.closed or self._final_walk:
                        return
                    continue
                batch = in_flight.popleft()
                outcomes = helper.outcomes(len(batch))
                if outcomes is None:
                    in_flight.appendleft(batch)
                    return
                copied += self._book_helper_outcomes(batch, outcomes)
        finally:
            for batch in in_flight:  # (never answered: the engine's workers copy them)
                for rel, force in batch:
                    self._pending.add(rel, force=force)
                    self._pending.done(rel)
            helper.close()
            log.info("copy helper process copied %d files", copied)

    def _book_helper_outcomes(self, batch: list[Ready], outcomes: list[HelperOutcome]) -> int:
        """Book a helper's outcomes for ``batch``; sync here what it handed back. Every path
        is done once, whatever happens (a path never done would hold up the finish)."""
        copied = 0
        for (rel, force), outcome in zip(batch, outcomes, strict=True):
            kind = outcome.kind
            retry_after = None
            try:
                if kind == COPIED:
                    replaced = outcome.replaced_size
                    result = CopyResult(
                        True,
                        outcome.size,
                        outcome.mtime_ns,
                        replaced is None,
                        outcome.digest,
                        outcome.stamp,
                    )
                    self._copied(rel, result, replaced)
                    copied += 1
                elif kind == UNTRIED:
                    self._pending.add(rel, force=force)  # (in flight: it goes again when done)
                elif kind != CURRENT:
                    retry_after = self._sync(rel, force)
            except Stopped:
                pass
            except Exception as exc:  # never let one file kill a worker
                log.exception("unexpected error syncing %s", rel)
                self._error(rel, f"unexpected error: {exc!r}")
            finally:
                self._pending.done(rel, retry_after=retry_after)
        return copied

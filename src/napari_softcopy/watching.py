"""Which watcher delivers the source's file events: the engine's own inotify reader
(`watcher.InotifyWatcher`) where it can be used, else watchdog's observer through its public
API, said once (`Watching.notices`).

Either way, events reach ``handler.dispatch`` as watchdog's public event classes from one
thread. The fallback keeps the copy complete (events are hints; scans are the truth) but
takes more CPU beside a busy writer: no batched reads, no quick rename pairing.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from watchdog.events import FileSystemEvent

from .platform import IS_LINUX, on_event_overflow
from .watcher import WATCHER_ENV, InotifyWatcher
from .watches import MAX_WATCHES, RELEASE_IDLE_S

log = logging.getLogger(__name__)

__all__ = ["Watching", "start_watching"]


@dataclass
class Watching:
    """What `start_watching` started: stop it with `stop`, then `join`.

    Attributes
    ----------
    kind : str
        ``"inotify"`` (the engine's own reader) or ``"watchdog"`` (its observer).
    notices : list of str
        What does not apply here, one line each (empty when everything does).
    """

    kind: str
    notices: list[str] = field(default_factory=list)
    _watcher: object = None
    _remove_hook: Callable[[], None] | None = None

    def stop(self) -> None:
        """Stop delivering events."""
        self._watcher.stop()
        if self._remove_hook is not None:
            self._remove_hook()
            self._remove_hook = None

    def join(self, timeout: float | None = None) -> None:
        """Wait for the watching threads to end."""
        self._watcher.join(timeout)

    @property
    def watched_folders(self) -> int | None:
        """Folders watched now (None where watchdog keeps that to itself)."""
        return getattr(self._watcher, "watched", None)

    @property
    def unwatched_folders(self) -> int:
        """Folders without a watch: given back (finished) or beyond the watch limit; found by
        the periodic rescan and the final verification only."""
        return getattr(self._watcher, "unwatched", 0) + getattr(self._watcher, "released", 0)

    @property
    def max_watches(self) -> int | None:
        """Most folders watched at once (None: no cap known, or watchdog's observer)."""
        return getattr(self._watcher, "max_watches", None)

    def delivered_all(self) -> bool | None:
        """Whether every event queued before this call has been handled
        (`InotifyWatcher.delivered_all`); None where that cannot be known (watchdog)."""
        delivered = getattr(self._watcher, "delivered_all", None)
        return None if delivered is None else delivered()

    def folder_watches(self) -> Mapping[str, int] | None:
        """Each watched folder below the root (``""``: the root) and its watch descriptor
        now, a live read-only view (`InotifyWatcher.folder_watches`); None where watchdog
        keeps them to itself."""
        watches = getattr(self._watcher, "folder_watches", None)
        return None if watches is None else watches()


def start_watching(
    root: str,
    handler,
    on_overflow: Callable[[], None],
    on_unwatched: Callable[[], None] = lambda: None,
    *,
    max_watches: int | None = MAX_WATCHES,
    release_idle_s: float = RELEASE_IDLE_S,
) -> Watching:
    """Start delivering the file events below ``root`` to ``handler.dispatch``.

    The engine's own inotify reader where it can be used; otherwise watchdog's observer,
    with a notice saying what that costs. ``on_overflow`` is called when events were lost,
    ``on_unwatched`` when a folder could not be watched; ``max_watches`` caps the folders
    watched at once, ``release_idle_s`` is how long a folder must be idle to give its watch
    back (`watches.WatchTable`).
    """
    why = None
    if os.environ.get(WATCHER_ENV, "").strip().lower() == "watchdog":
        why = f"{WATCHER_ENV}=watchdog is set"
    elif not IS_LINUX:
        why = "inotify is Linux only"
    else:
        try:
            watcher = InotifyWatcher(
                root,
                handler,
                on_overflow,
                on_unwatched,
                max_watches=max_watches,
                release_idle_s=release_idle_s,
            )
        except OSError as exc:
            why = f"inotify cannot be used here ({exc.strerror or exc})"
        else:
            watcher.start()
            return Watching("inotify", _watcher=watcher)
    notice = (
        f"batched event reads and quick rename pairing are off: {why}; watchdog's observer "
        "is used instead (the copy stays complete, but uses more CPU beside a busy writer, "
        "and its finish walks every folder: only the engine's own reader can say which "
        "folders changed since they were verified)"
    )
    log.warning("%s", notice)
    observer, remove_hook = _watchdog_observer(root, handler, on_overflow)
    return Watching("watchdog", [notice], observer, remove_hook)


def _watchdog_observer(root: str, handler, on_overflow: Callable[[], None]):
    """watchdog's own observer, through its public API only."""
    from watchdog import events
    from watchdog.observers import Observer

    from .readiness import EVENT_FILTER

    lost = getattr(events, "EventsLostEvent", None)  # watchdog >= 7.1.1 reports overflows

    class Forward:
        def dispatch(self, event: FileSystemEvent) -> None:
            if lost is not None and isinstance(event, lost):
                on_overflow()
            else:
                handler.dispatch(event)

    # watchdog warns when a folder it already watches is reported again (common while a
    # writer creates nested folders quickly); harmless, but it would flood the terminal.
    warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
    observer = Observer()
    observer.schedule(
        Forward(), root, recursive=True, event_filter=[*EVENT_FILTER, *([lost] if lost else [])]
    )
    # Before 7.1.1 watchdog only logs an overflow.
    remove_hook = None if lost is not None else on_event_overflow(on_overflow)
    observer.start()
    return observer, remove_hook

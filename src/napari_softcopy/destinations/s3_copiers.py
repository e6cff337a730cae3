"""The S3 destination each copy in this process writes to, so that a verification opening the
same root again in this process (the copy's final verification and its rechecks open their
own `S3Destination`) reads the copy's object tree instead of listing the prefix again.

Why the copy's tree may stand for a listing there: the copy is the only writer below its
prefix (one engine per destination, `jobs.DestinationLock`), and its tree is what the server
answered for: every object listed at the copy's start, then each PUT the server acknowledged
(durable once answered, with its CRC64NVME checked on arrival) and each DELETE, as they were
answered. At 50,000 objects a listing took 2-5 s, and the finish made two (this process and
a walk helper); now it makes none. What the tree cannot see is a change by another party
below the prefix while the copy runs (an object deleted or overwritten by hand, a server
losing acknowledged writes): the root's identity object is read back before the marker (a
prefix emptied or a bucket re-created is caught), and ``napari-softcopy verify`` lists the
server and catches the rest (docs/s3.md, "Faults").
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .s3 import S3Destination

# One per root (the engine is the only writer below its prefix); weak: a destination closed
# or dropped is never consulted.
_copiers: weakref.WeakValueDictionary[tuple[str, str], S3Destination] = (
    weakref.WeakValueDictionary()
)
_lock = threading.Lock()


def _key(dest: S3Destination) -> tuple[str, str]:
    return dest.endpoint, dest.location.url


def register(dest: S3Destination) -> None:
    """``dest`` is the one a copy in this process writes to."""
    with _lock:
        _copiers[_key(dest)] = dest


def unregister(dest: S3Destination) -> None:
    """``dest`` is closed: no longer consulted."""
    with _lock:
        if _copiers.get(_key(dest)) is dest:
            del _copiers[_key(dest)]


def copier_of(dest: S3Destination) -> S3Destination | None:
    """The open destination a copy in this process writes to at ``dest``'s root (the same
    endpoint and URL), if any, but ``dest`` itself."""
    with _lock:
        copier = _copiers.get(_key(dest))
    return None if copier is dest or copier is None or copier._closed else copier

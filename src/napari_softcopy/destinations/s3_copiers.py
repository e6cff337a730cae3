"""The S3 destination each copy in this process writes to, so that a verification opening the
same root again (`verify` opens its own `S3Destination`) takes what the copy knows of the
objects it published since its last index write, instead of a HEAD per object: before, one
each for the objects of a copy's last seconds, most of the time from the marker to
"verified". The index's rule holds: an object counts only with the ETag and size it was
published with (anything else is looked at with a HEAD).
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


def take_metadata(dest: S3Destination) -> None:
    """Give the objects of ``dest`` listed with the size and ETag the copier of the same root
    published them with the copier's record: the very record (`ObjectInfo`) and path string,
    shared, so the process holds one of each per object, not one per tree (the index's
    entry, where ``dest`` read one, says the same: it was written from that record). Shared
    safely: a record with its mtime known is never changed in place (a publish makes a new
    one, a HEAD fills only one without)."""
    with _lock:
        copier = _copiers.get(_key(dest))
    if copier is None or copier is dest:
        return
    mine = dest._tree.objects
    with copier._lock:
        shared = {}
        for rel, known in copier._tree.objects.items():  # (its keys: the strings shared)
            obj = mine.get(rel)
            if (
                obj is not None
                and known.mtime_ns is not None
                and (known.size, known.etag) == (obj.size, obj.etag)
            ):
                shared[rel] = known
    if shared:
        # (a new dict, not entries replaced in place: those would keep both key strings)
        shared.update((rel, obj) for rel, obj in mine.items() if rel not in shared)
        dest._tree.objects = shared

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
    """Give the objects of ``dest`` without a known source mtime the one the copier of the
    same root recorded, where size and ETag are those it published."""
    with _lock:
        copier = _copiers.get(_key(dest))
    if copier is None or copier is dest:
        return
    with copier._lock:
        known = {
            rel: (obj.size, obj.etag, obj.mtime_ns, obj.stamp)
            for rel, obj in copier._objects.items()
            if obj.mtime_ns is not None
        }
    for rel, obj in dest._objects.items():
        entry = known.get(rel) if obj.mtime_ns is None else None
        if entry is not None and entry[:2] == (obj.size, obj.etag):
            obj.mtime_ns, obj.stamp = entry[2], entry[3]

"""Errors that mean a destination is away for a while, not that a file is at fault.

A copy meeting one waits (a backoff, said once a round: `engine.live`) and goes on by
itself when the destination is back; the hash journal keeps its records until it can
write them (`hashes.HashJournal`). A destination that is gone for good (its root leads
elsewhere) raises `base.DestinationChanged` from `Destination.check` instead.
"""

from __future__ import annotations

import errno

__all__ = ["CONNECTION_ERRNOS", "RETRY_ERRNOS"]

#: A network share whose server or link went away: sshfs answers ENOTCONN once its
#: connection is gone. While the mount's root still answers `Destination.check` (the kernel
#: keeps the root's attributes a while, about a second) the share is away, not gone.
CONNECTION_ERRNOS = frozenset(
    {
        errno.ENOTCONN,
        errno.ECONNABORTED,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
    }
)

#: "The destination cannot take data right now" (full, read-only, refused, unreachable):
#: retried with backoff.
RETRY_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.EAGAIN,
        *CONNECTION_ERRNOS,
    }
)

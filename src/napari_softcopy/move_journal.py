"""The journal of ``copy --move``: ``.softcopy/move.json`` at the destination.

`move.free_source` writes ``{"state": "freeing", "source": ...}`` before its first deletion
and ``{"state": "freed", ...}`` (with the report's counts) after its last. A journal still
"freeing" for the same source means a run crashed mid-deletion: the copy was verified, so a
rerun finishes the deletion instead of copying again (`move_in_progress`).
"""

from __future__ import annotations

import json
import os

from .destinations import STATE_DIR, Destination

__all__ = ["JOURNAL", "move_in_progress", "read_journal", "write_journal"]

#: The move's journal below the destination root.
JOURNAL = f"{STATE_DIR}/move.json"


def move_in_progress(dest: Destination, source: str | os.PathLike) -> bool:
    """True when a move of ``source`` into ``dest`` began deleting and did not end (a crash):
    the copy is verified, and the deletion is to be finished, not the copy redone."""
    journal = read_journal(dest)
    return (
        journal is not None
        and journal.get("state") == "freeing"
        and journal.get("source") == os.path.abspath(source)
    )


def read_journal(dest: Destination) -> dict | None:
    """The journal's fields, or None when there is none (or it cannot be read)."""
    try:
        with dest.read(JOURNAL) as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # (unreadable: treated as no move begun; the copy's checks decide)
    return data if isinstance(data, dict) else None


def write_journal(dest: Destination, **fields: object) -> None:
    """Replace the journal with ``fields`` (published atomically, like every destination file)."""
    dest.write_file(JOURNAL, (json.dumps(fields, indent=1) + "\n").encode())

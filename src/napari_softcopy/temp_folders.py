"""The temporary folders of a process: the spools of the proofs (`proofs.ProofSpool`) and of
a verification's listing (`listing.spool_folder`).

Each is named after the process that made it (``<prefix><pid>-<random>``) and deleted by it
when done. A process killed by SIGKILL cannot delete its own, and a 24-hour copy may be
stopped that way more than once; so each new folder of a kind is made after deleting those of
its kind whose process is gone. A folder whose process still runs, or belongs to another user
(``kill`` refused), is left. (Copies in containers that share one temporary folder but not
their process IDs would take each other's folders for orphans: give each its own ``TMPDIR``.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

__all__ = ["process_temp_folder", "remove_orphans"]


def process_temp_folder(prefix: str) -> str:
    """A new temporary folder ``<prefix><this pid>-...``, made after `remove_orphans`."""
    remove_orphans(prefix)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")


def remove_orphans(prefix: str) -> None:
    """Delete the temporary folders ``<prefix><pid>-...`` of processes that are gone."""
    root = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(root):
            pid = name[len(prefix) :].partition("-")[0]
            if not (name.startswith(prefix) and pid.isdigit()):
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            except OSError:
                pass  # (alive, another user's)

"""The copy engine: mirror a Zarr tree that is still being written, then prove the copy.

Threads, all at idle IO priority and a raised nice value:

- *control*: start-up, scans (at start, periodic, on overflow), a requested finish's wait
  for the source to stay quiet (`quiet`), the finish sequence (whose verification is the
  final walk; a change at the source before the marker is written cancels it);
- *status*: every ``status_interval`` s writes the status file and checks that the source
  and the destination are still the folders the copy started with; every
  `Tuning.marker_poll_s` looks for the marker;
- *workers*: take paths from the `PendingSet` and sync them (copy, or mirror a deletion);
- the watcher (`napari_softcopy.watcher`), whose file events become hints in the pending set
  (and changes counted by `quiet.SourceActivity`).

The engine keeps no record per copied file: the destination itself (size and mtime equal to
the source's) is the record, so memory does not grow with the archive.

The package, one idea per module: `state` (the shared attributes, counters, state machine,
status snapshot), `live` (hints, workers, syncing one path, mirrored deletes, back-off),
`scan` (the resume scan), `helpers` (the copy-helper pump), `finish` (quiet wait, drain,
verification, marker, cancel), `walks` (the finish's verification walks, and the folders
proven during the copy that spare most of them), `core` (`CopyEngine`: the public API,
control and status threads) and `tuning` (`Tuning`).
"""

from ..options import CopyOptions
from .core import CopyEngine, copy
from .tuning import Tuning
from .walks import verify_processes

__all__ = ["CopyEngine", "CopyOptions", "Tuning", "copy", "verify_processes"]

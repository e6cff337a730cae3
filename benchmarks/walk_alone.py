"""The engine's final verification walk alone, over two finished trees.

``python -m benchmarks.walk_alone SOURCE DEST`` prints the walk's wall time in seconds as
JSON. It walks as the engine's finish does (`CopyEngine._finish`): at the engine's low
priority, with the source stamps compared, and split between two processes from 10,000
files on where two cores are available, its helper started ahead. Beside a live copy's
drain it tells how much of that drain is the walk itself: the part that does not depend on
how far behind the copy was at the marker.
"""

from __future__ import annotations

import json
import os
import sys
import time

from napari_softcopy.engine import verify_processes
from napari_softcopy.platform import lower_session_priority, lower_thread_priority
from napari_softcopy.verify import start_helpers, verify_tree

#: The engine starts its helper when its finish begins, about this long before its walk
#: (benchmarks/notes.md item 30: the walk starts 0.15-0.25 s after the marker).
HELPER_AHEAD_S = 0.2


def main(argv: list[str] | None = None) -> int:
    source, destination = argv or sys.argv[1:]
    lower_session_priority()  # (started as a session leader, as the engine is)
    lower_thread_priority()  # (the helper inherits it, as the engine's does)
    files = sum(len(names) for _, _, names in os.walk(source))
    helpers = start_helpers(verify_processes(files) - 1)
    time.sleep(HELPER_AHEAD_S)  # (as the engine: the helper's interpreter starts meanwhile)
    began = time.perf_counter()
    report = verify_tree(source, destination, marker="complete", stamps=True, helpers=helpers)
    took = time.perf_counter() - began
    if not report.ok:
        print(f"the trees differ: {report.summary()}", file=sys.stderr)
        return 1
    print(json.dumps({"walk_s": round(took, 3), "files": report.files_checked}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

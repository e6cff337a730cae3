"""A periodic rescan's CPU, whole against skipping the folders proven during the copy.

``python -m benchmarks.rescan [--timepoints N] [--max-watches W] [--reps R]``

An archive of `benchmarks.day`'s many-files geometry (a timepoint: 2,000 files of 4.5 KiB in
221 folders ``t/z/y``, Zarr v2 with ``/`` keys) is written by plain file writes while an
engine copies it (so its folders are watched as they appear, and past ``--max-watches`` the
idle ones give their watch back, as in a day); once every folder is proven, the engine's own
rescan is run in turns, whole and skipping (`engine.scan._Proven`), each timed by the CPU of
the thread that runs it (`time.thread_time`, so the machine's load moves it less than the
wall time). Prints one JSON line: ``[cpu_s, wall_s]`` of each rescan, the folders skipped
and looked at on their source side, the load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from napari_softcopy.engine import CopyEngine, CopyOptions, Tuning


def write_timepoints(array: Path, timepoints: int) -> None:
    """``timepoints`` x 20 x 10 folders of 10 files of 4.5 KiB."""
    blob = os.urandom(4608)
    for t in range(timepoints):
        for z in range(20):
            for y in range(10):
                folder = array / str(t) / str(z) / str(y)
                folder.mkdir(parents=True)
                for x in range(10):
                    (folder / str(x)).write_bytes(blob)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.rescan", description=__doc__.split("\n")[0]
    )
    p.add_argument("--timepoints", type=int, default=30)
    p.add_argument("--max-watches", type=int, default=1024)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="softcopy-rescan-"))
    src, dst = work / "src.zarr", work / "dst.zarr"
    array = src / "a"
    array.mkdir(parents=True)
    (src / ".zgroup").write_text('{"zarr_format": 2}')
    meta = {
        "zarr_format": 2,
        "shape": [args.timepoints, 20, 640, 640],
        "chunks": [1, 1, 64, 64],
        "dtype": "<u1",
        "compressor": None,
        "fill_value": 0,
        "order": "C",
        "filters": None,
        "dimension_separator": "/",
    }
    (array / ".zarray").write_text(json.dumps(meta))
    tuning = Tuning(
        prove_quiet_s=0.3,
        prove_interval_s=0.05,
        max_watches=args.max_watches,
        watch_release_idle_s=0.5,
    )
    options = CopyOptions(low_priority=False, rescan_interval=3600)  # (only ours run)
    e = CopyEngine(src, dst, options, tuning)
    e.start()
    try:
        deadline = time.monotonic() + 600
        while e._proofs is None and time.monotonic() < deadline:
            time.sleep(0.05)  # (a benchmark's poll: the engine watches before it proves)
        write_timepoints(array, args.timepoints)
        files = args.timepoints * 2000 + 2
        while True:
            s, proofs = e.status(), e._proofs
            if s.files_pending == 0 and s.files_copied >= files - 2 and proofs.counts[1] == 0:
                break
            if time.monotonic() > deadline:
                sys.exit(f"not every folder proven: {s.files_copied} copied, {proofs.counts}")
            time.sleep(0.2)
        s = e.status()
        out = {
            "files": files,
            "folders": args.timepoints * 221 + 2,
            "watched": s.folders_watched,
            "unwatched": s.folders_unwatched,
            "proven": e._proofs.counts[0],
            "whole": [],
            "skipping": [],
        }
        for _ in range(args.reps):
            for kind, periodic in (("whole", False), ("skipping", True)):
                cpu, wall = time.thread_time(), time.monotonic()
                e._scan(periodic=periodic)
                out[kind].append(
                    [round(time.thread_time() - cpu, 4), round(time.monotonic() - wall, 4)]
                )
        s = e.status()
        out["skipped"], out["looked_at"] = s.scan_folders_skipped, s.scan_folders_looked_at
        out["files_at_destination"] = s.files_at_destination
        out["load"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        e.stop()
        e.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

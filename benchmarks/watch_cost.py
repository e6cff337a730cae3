"""What an inotify watch costs the copier: memory a watch, and the CPU of what grows with them.

``python -m benchmarks.watch_cost [--timepoints N] [--turns K]``

A tree of `benchmarks.day`'s many-files folders (a timepoint: 221 folders ``t/z/y``; 500
timepoints make 110,500, a day of 1,000,000 files) is made once, empty, below a path as long
as a day run's. Each measurement is a child process that imports the package on its
``PYTHONPATH`` and watches the whole tree with an `InotifyWatcher` (no cap: every folder
watched, as its constructor's first walk does at a resume), then reports:

- ``rss_per_watch_b``: the child's resident memory after the walk less before it, a watch
  (the Python allocator's arenas included: what the copier's RSS shows);
- ``traced_per_watch_b``: the same by ``tracemalloc`` (another child: it slows the walk);
- ``slab_per_watch_b``: ``/proc/meminfo``'s ``Slab`` after less before, a watch: the kernel's
  side (its ``inotify_inode_mark`` and the pinned inodes' cache; ``/proc/slabinfo`` needs
  root). Other processes move it: a rough figure;
- ``watch_us``: CPU a folder of the walk that watched it;
- ``watch_ids_us``: CPU of one ``watch_ids()`` (which copied every watch into a new dict
  before; the engine calls it every 0.5 s while proving, at each rescan and at the finish),
  and ``lookup_us``: CPU of looking one folder's watch up in what it returned.

With ``$BENCH_BASELINE_SRC`` (another checkout's ``src``) and ``--turns K``, that code and
this one (``--src``, default this checkout's) alternate, K children each; else this code
once. Prints one JSON line per child, then a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .common import REPO, child_result, python


def make_tree(root: Path, timepoints: int) -> int:
    """``timepoints`` x (1 + 20 + 200) empty folders below ``root``; how many."""
    made = 0
    for t in range(timepoints):
        for z in range(20):
            for y in range(10):
                (root / str(t) / str(z) / str(y)).mkdir(parents=True)
        made += 221
    return made


def _meminfo(field: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(root: str, trace: bool) -> dict:
    """Watch every folder below ``root``; what it cost (see the module docstring)."""
    import gc
    import tracemalloc

    from napari_softcopy.watcher import InotifyWatcher

    class Handler:
        def dispatch(self, event) -> None:
            pass

    gc.collect()
    if trace:
        tracemalloc.start()
    rss0, slab0 = _rss(), _meminfo("Slab")
    traced0 = tracemalloc.get_traced_memory()[0] if trace else 0
    cpu0 = time.process_time()
    watcher = InotifyWatcher(root, Handler(), lambda: None, max_watches=None)
    cpu = time.process_time() - cpu0
    gc.collect()
    n = watcher.watched
    out = {"watched": n, "watch_us": round(cpu / n * 1e6, 2)}
    if trace:
        out["traced_per_watch_b"] = round((tracemalloc.get_traced_memory()[0] - traced0) / n, 1)
    else:
        out["rss_per_watch_b"] = round((_rss() - rss0) / n, 1)
        out["slab_per_watch_b"] = round((_meminfo("Slab") - slab0) / n, 1)
        # (the engine's look: `folder_watches`, a live view by folder below the root; before
        # it, `watch_ids`, a new dict by absolute path at each call)
        live = getattr(watcher, "folder_watches", None)
        paths = [f"{t}/3/4" for t in range(0, 500, 5)]
        if live is None:
            paths = [os.path.join(root, p) for p in paths]
        times = []
        for _ in range(5):
            c0 = time.process_time()
            ids = live() if live is not None else watcher.watch_ids()
            times.append(time.process_time() - c0)
        out["watch_ids_us"] = [round(t * 1e6) for t in times]
        c0 = time.process_time()
        for _ in range(10):
            for path in paths:
                ids.get(path)
        out["lookup_us"] = round((time.process_time() - c0) / (10 * len(paths)) * 1e6, 3)
        out["found"] = sum(ids.get(p) is not None for p in paths)
        out["rss_mib"] = round(_rss() / 2**20, 1)
    watcher.stop()
    watcher.join(5)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.watch_cost", description=__doc__.split("\n")[0]
    )
    p.add_argument("--timepoints", type=int, default=500)
    p.add_argument("--turns", type=int, default=1)
    p.add_argument("--src", type=Path, default=REPO / "src", help="this code's package sources")
    p.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)
    p.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.trace)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="softcopy-watchcost-"))
    root = work / "run" / "acquisition.zarr" / "0"
    try:
        folders = make_tree(root, args.timepoints)
        codes = [("this", args.src)]
        baseline = os.environ.get("BENCH_BASELINE_SRC")
        if baseline:
            codes.insert(0, ("baseline", Path(baseline)))
        runs: dict[str, list[dict]] = {label: [] for label, _ in codes}
        for turn in range(args.turns):
            for label, code in codes:
                for trace in (False, True):
                    argv = [python(), "-m", "benchmarks.watch_cost", "--child", str(root)]
                    result = child_result([*argv, *(["--trace"] if trace else [])], code)
                    runs[label].append(result)
                    print(f"turn {turn}: {label}: {json.dumps(result)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {"folders": folders}
    for label, rs in runs.items():
        summary[label] = {
            key: statistics.median(r[key] for r in rs if key in r)
            for key in ("rss_per_watch_b", "traced_per_watch_b", "slab_per_watch_b", "watch_us")
        }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

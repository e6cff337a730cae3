"""Bulk mode: copy a finished archive with each tool in turn (A B C A B C ...).

The source is written once per workload as fast as the writer can (same data and layout as
the live workload, marker included) and read once before every copy, so each tool starts
from a warm page cache. Wall time runs from the start of the process to its exit.
"""

from __future__ import annotations

import os
import subprocess

from .common import REPO, Measured, compare_trees, python, warm
from .copiers import Copier


def make_source(workload, workdir, timepoints: int | None = None):
    """Write the finished archive of ``workload`` (rate unlimited); return its path."""
    run_dir = workdir.fresh(f"bulk-source-{workload.name}")
    src = run_dir / "acquisition.zarr"
    argv = [
        python(),
        "-m",
        "benchmarks.writer",
        str(src),
        "--preset",
        workload.preset,
        "--rate",
        "inf",
    ]
    tp = timepoints or workload.timepoints
    if tp:
        argv += ["--timepoints", str(tp)]
    subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    os.sync()
    return src


def run_once(src, copier: Copier, run_dir, *, timeout: float = 900.0, trash=None) -> dict:
    """Copy ``src`` with ``copier`` into the new, empty ``run_dir``; measure; compare."""
    dst = run_dir / "copy.zarr"
    env = dict(os.environ, NAPARI_SOFTCOPY_STATE_DIR=str(run_dir / "state"))
    os.sync()  # earlier runs' dirty pages are not this run's to write
    warm(src)
    child = Measured(copier.argv("bulk", str(src), str(dst)), run_dir / f"{copier.name}.log", env)
    outcome = child.result(timeout=timeout)
    result = {
        "copier": copier.name,
        "exit_code": outcome.exit_code,
        "timed_out": outcome.timed_out,
        "wall_s": None if outcome.wall_s is None else round(outcome.wall_s, 3),
        "cpu_s": round(outcome.cpu_s, 3),
        "peak_rss_bytes": outcome.peak_rss,
        "max_rss_one_bytes": outcome.max_rss_one,
        "processes": outcome.processes,
        "correctness": compare_trees(src, dst),
    }
    if trash is not None:
        trash(run_dir)
    return result

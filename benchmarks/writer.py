"""The acquisition, in a process of its own: ``python -m benchmarks.writer ARGS``.

The writer runs apart from the harness so that neither the harness's sampler nor its
bookkeeping share a GIL with the writer whose slowdown is measured. It writes the archive
with `napari_softcopy.simulate.simulate` (tensorstore, ``lockfile`` locking, at the preset's
acquisition rate) and then creates the ``complete`` marker by a plain ``open(O_CREAT)``.

Why a plain creation rather than the simulator's atomic rename: softcopy 0.0.13 only
notices a marker that is *created* under its final name (a watchdog ``FileCreatedEvent``); a
marker renamed into place would leave it waiting for ever. napari-softcopy handles both.

Its last act is one JSON line on stdout: the simulator's report plus wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def write_marker(root: str, name: str = "complete") -> float:
    """Create the marker in place and return the wall-clock time it appeared."""
    fd = os.open(os.path.join(root, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    t = time.time()
    try:
        os.write(fd, b"complete\n")
    finally:
        os.close(fd)
    return t


def _threads_schedstat() -> tuple[float, float]:
    """CPU time and run-queue wait (seconds) summed over this process's live threads."""
    cpu = wait = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                fields = f.read().split()
            cpu += int(fields[0])
            wait += int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return cpu / 1e9, wait / 1e9


def main(argv: list[str] | None = None) -> int:
    """Write one simulated acquisition; print its report as JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.writer")
    p.add_argument("dest")
    p.add_argument("--preset", required=True)
    p.add_argument("--timepoints", type=int, default=None)
    p.add_argument("--rate", type=float, default=None, help="timepoints per second")
    p.add_argument("--no-marker", action="store_true")
    args = p.parse_args(argv)

    from napari_softcopy.simulate import simulate

    t_start = time.time()
    report = simulate(
        args.dest,
        args.preset,
        writer="tensorstore",
        locking="lockfile",
        rate=args.rate,
        timepoints=args.timepoints,
        marker=None,
    )
    t_end = time.time()
    marker_at = None if args.no_marker else write_marker(args.dest)
    cpu_s, runqueue_s = _threads_schedstat()
    out = {
        "preset": report.preset,
        "timepoints": report.timepoints,
        "files": report.files + (0 if args.no_marker else 1),
        "bytes": report.bytes,
        "write_busy_s": report.write_busy_s,
        "duration_s": report.duration_s,
        "completed": report.completed,
        "started_at": t_start,
        "written_at": t_end,
        "marker_at": marker_at,
        "cpu_s": round(cpu_s, 3),  # live threads at the end (the writer's pool), and main
        "runqueue_wait_s": round(runqueue_s, 3),  # time runnable but waiting for a core
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0 if report.completed else 1


if __name__ == "__main__":
    sys.exit(main())

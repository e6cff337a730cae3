"""The resume scan of a finished copy against ``find``, versions in turns (issue 22 item 6).

``python -m benchmarks.resume_scan SRC_DIR [SRC_DIR ...] [--workdir DIR] [--rounds 3]``

Each ``SRC_DIR`` is a ``src`` folder holding a ``napari_softcopy`` package (say, one from
``git archive``). In ``--workdir`` (kept: a million files take minutes to make) the scale
mode's archive (`scale.generate`, ``--grid``; 1,024,002 files by default) and its copy are
made once, the copy by ``napari-softcopy copy`` with the first version's code, and reused
by later invocations. Then, per round, for each version in turn:

- ``find SRC`` (output discarded, the second of two runs: warm);
- ``napari-softcopy copy SRC DST --status-file F`` with that version on ``PYTHONPATH`` (at
  its default idle priority, as `scale` runs it; ``--normal-priority`` with ``--normal``),
  stopped (SIGTERM) once its status counts the first scan: that scan's ``last_scan_s``
  (the resume scan of `scale`), its ratio to ``find``, the CPU of the copy's processes
  until then (ended helpers included, by their parents' children times; None where the
  copy had ended before it was read), the load average
  (1 min) before and after.

One JSON line a measurement. On a machine shared with other work, only pairs measured in
turns compare two versions; the load says how far a wall time is the scheduler's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .common import time_find
from .copiers import ours_executable
from .scale import FULL_GRID, generate


def _tree_cpu_s(pid: int) -> float:
    """CPU of ``pid`` and its descendants, with their reaped children's (psutil)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _copy(src_dir: str, src: Path, dst: Path, status: Path, extra: list[str]):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src_dir))
    env["NAPARI_SOFTCOPY_STATE_DIR"] = str(status.parent / "state")
    argv = [ours_executable(), "copy", str(src), str(dst), "--status-file", str(status), *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def first_scan(src_dir: str, src: Path, dst: Path, status: Path, normal: bool) -> dict:
    """One run of the command over the finished copy, stopped after its first scan."""
    status.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    child = _copy(src_dir, src, dst, status, ["--normal-priority"] if normal else [])
    scan = cpu = None
    try:
        while True:
            ended = child.poll() is not None  # (a tiny copy may end before a poll sees it)
            try:
                s = json.loads(status.read_text())
            except (OSError, ValueError):
                s = {}
            if s.get("scans"):
                scan, cpu = s["last_scan_s"], None if ended else _tree_cpu_s(child.pid)
                break
            if ended:
                break
            time.sleep(0.02)  # (a poll of the status file, as `scale._scans`)
    finally:
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=300)
    if scan is None:
        raise RuntimeError(f"{src_dir}: no scan counted: {err.decode()[-2000:]}")
    return {"scan_s": scan, "cpu_s": cpu and round(cpu, 2), "load": round(load, 2)}


def prepare(workdir: Path, grid: tuple[int, int, int, int], src_dir: str, log=print):
    """The archive and its complete copy in ``workdir``, made unless there already."""
    src, dst = workdir / "acquisition.zarr", workdir / "copy.zarr"
    if not (dst / "complete").exists():
        if not src.exists():
            t = time.perf_counter()
            files = generate(src, grid)
            log(f"generated {files:,} files in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        child = _copy(src_dir, src, dst, workdir / "copy-status.json", ["--normal-priority"])
        _, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"the copy failed: {err.decode()[-2000:]}")
        log(f"copied in {time.perf_counter() - t:.0f} s")
    return src, dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.resume_scan", description=__doc__)
    p.add_argument("versions", nargs="+", help="src folders, measured in turns")
    p.add_argument("--workdir", default="/var/tmp/resume-scan")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--grid", default=",".join(map(str, FULL_GRID)), help="t,z,y,x chunk files")
    p.add_argument("--normal", action="store_true", help="run the copies at normal priority")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    grid = tuple(int(g) for g in args.grid.split(","))
    src, dst = prepare(workdir, grid, args.versions[0], log=lambda m: print(m, file=sys.stderr))
    for round_ in range(1, args.rounds + 1):
        for version in args.versions:
            find_s = time_find(src)
            row = {"round": round_, "version": version, "find_s": round(find_s, 3)}
            row |= first_scan(version, src, dst, workdir / "resume-status.json", args.normal)
            row["over_find"] = round(row["scan_s"] / find_s, 2)
            row["load_after"] = round(os.getloadavg()[0], 2)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Profile napari-softcopy on a live workload: where its time goes.

    .venv/bin/python -m benchmarks.profile --workload manyfiles --timepoints 4
    .venv/bin/python -m benchmarks.profile --tool scan --archive SRC --copy DST

``--tool py-spy`` (default) runs ``napari-softcopy copy`` under ``py-spy record`` (all
threads, 250 Hz) while the writer writes the workload, and prints the functions with the
most samples, by themselves and inclusively. ``--tool time`` prints user and system CPU.
``--tool scan`` profiles one resume scan of an existing copy in-process with pyinstrument.
``py-spy`` and ``pyinstrument`` are not project dependencies: ``pip install py-spy
pyinstrument`` into the venv first.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import REPO, python
from .copiers import ours_executable


def _summarize(raw: Path, rate: int, top: int) -> None:
    own: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        total += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames[1:]):
            incl[f] += int(n)
    print(f"{total / rate:.2f} thread-seconds sampled")
    for title, counter in (("by themselves", own), ("inclusive", incl)):
        print(f"--- {title}")
        for frame, n in counter.most_common(top):
            print(f"{n / rate:7.2f} s  {frame}")


def live(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="softcopy-profile-", dir=args.workdir))
    src, dst = work / "acquisition.zarr", work / "copy.zarr"
    writer = subprocess.Popen(
        [
            python(),
            "-m",
            "benchmarks.writer",
            str(src),
            "--preset",
            args.workload,
            *(["--timepoints", str(args.timepoints)] if args.timepoints else []),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    while not ((src / "zarr.json").exists() or (src / ".zarray").exists()):
        time.sleep(0.005)
    env = dict(os.environ, NAPARI_SOFTCOPY_STATE_DIR=str(work / "state"))
    copy = [ours_executable(), "copy", str(src), str(dst)]
    raw = work / "py-spy.txt"
    if args.tool == "py-spy":
        argv = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--subprocesses",
            "-t",
            "-r",
            "250",
            "-f",
            "raw",
            "-o",
            str(raw),
            "--",
            *copy,
        ]
    else:
        argv = copy
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    writer.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"copier (+ writer) CPU: user {after.ru_utime - before.ru_utime:.2f} s, "
        f"system {after.ru_stime - before.ru_stime:.2f} s"
    )
    if args.tool == "py-spy" and raw.exists():
        _summarize(raw, 250, args.top)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def scan(args) -> int:
    from pyinstrument import Profiler

    from napari_softcopy import CopyEngine, CopyOptions
    from napari_softcopy.destination import Destination

    engine = CopyEngine(args.archive, args.copy, CopyOptions())
    engine._dest = Destination(args.copy)
    engine._src_fd = os.open(args.archive, os.O_RDONLY | os.O_DIRECTORY)
    engine._scan()  # warm the caches
    profiler = Profiler(interval=0.0005)
    profiler.start()
    engine._scan(deep=True)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tool", choices=["py-spy", "time", "scan"], default="py-spy")
    p.add_argument(
        "--workload", default="lightsheet", help="a simulate preset: lightsheet, manyfiles, sharded"
    )
    p.add_argument("--timepoints", type=int, default=None)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--workdir", default="/var/tmp")
    p.add_argument("--archive", help="scan: a source archive")
    p.add_argument("--copy", help="scan: its complete copy")
    args = p.parse_args(argv)
    if args.tool == "scan":
        if not (args.archive and args.copy):
            p.error("--tool scan needs --archive and --copy")
        return scan(args)
    return live(args)


if __name__ == "__main__":
    sys.exit(main())

"""The live copy's event path alone, two versions of the package side by side.

``python -m benchmarks.events SRC_DIR [SRC_DIR ...] [--files 10000] [--rounds 5]``

Each ``SRC_DIR`` holds a ``napari_softcopy`` package (say, a ``git archive`` of main's
``src``). In a fresh process each, in turns, the inotify records tensorstore's ``lockfile``
writes make (``K.__lock`` created, moved to ``K``, ``K`` closed: four events a file) are fed,
100 files a read, through the real reader (`watcher.InotifyWatcher`'s parsing and delivery),
`readiness.SourceEventHandler`, the engine's hints and its `pending.PendingSet`: the CPU of
the reader thread per file, best of ``--rounds``. Nothing is copied (no worker runs): this
is the part of the live loop's CPU that follows the number of events.
"""

from __future__ import annotations

import argparse
import inspect
import os
import struct
import subprocess
import sys
import tempfile
import time

_HEADER = struct.Struct("iIII")


def _record(wd: int, mask: int, cookie: int, name: str) -> bytes:
    data = name.encode() + b"\0"
    data += b"\0" * (-len(data) % 16)  # (the kernel pads names so)
    return _HEADER.pack(wd, mask, cookie, len(data)) + data


def measure(files: int, rounds: int) -> float:
    """CPU microseconds a file of the event path, in this process's package."""
    from napari_softcopy import CopyEngine, CopyOptions
    from napari_softcopy.quiet import SourceActivity
    from napari_softcopy.readiness import SourceEventHandler
    from napari_softcopy.watcher import InotifyWatcher
    from napari_softcopy.watches import IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_FROM, IN_MOVED_TO

    with tempfile.TemporaryDirectory() as root:
        engine = CopyEngine(root, root + "-copy", CopyOptions())
        engine._activity = SourceActivity()
        batched = "hints" in inspect.signature(SourceEventHandler).parameters
        extra = {"hints": engine._hints} if batched else {}
        handler = SourceEventHandler(
            root, engine._hint, lambda: None, lambda: None, engine._touched, **extra
        )
        watcher = InotifyWatcher(root, handler, lambda: None)  # (not started: fed by hand)
        reads = [
            b"".join(
                _record(1, IN_CREATE, 0, f"{i}.__lock")
                + _record(1, IN_MOVED_FROM, i + 1, f"{i}.__lock")
                + _record(1, IN_MOVED_TO, i + 1, str(i))
                + _record(1, IN_CLOSE_WRITE, 0, str(i))
                for i in range(first, min(files, first + 100))
            )
            for first in range(0, files, 100)
        ]
        best = float("inf")
        try:
            for _ in range(rounds):
                began = time.thread_time()
                for data in reads:
                    watcher._parse(data)
                    watcher._deliver()
                best = min(best, time.thread_time() - began)
                pending = engine._pending
                assert len(pending) == files, len(pending)
                while (item := pending.take(timeout=0)) is not None:
                    pending.done(item.path)
        finally:
            watcher._close()
    return 1e6 * best / files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.events", description=__doc__)
    p.add_argument("versions", nargs="+", help="src folders")
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--turns", type=int, default=2, help="processes per version, interleaved")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(f"{measure(args.files, args.rounds):.2f}")
        return 0
    for turn in range(args.turns):
        for version in args.versions:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(version))
            argv = [sys.executable, "-m", "benchmarks.events", version, "--one"]
            argv += ["--files", str(args.files), "--rounds", str(args.rounds)]
            out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            print(f"turn {turn + 1}  {version:40.40}  {out.stdout.strip()} us CPU a file")
    return 0


if __name__ == "__main__":
    sys.exit(main())

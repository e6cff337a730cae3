"""Trying a copy without a microscope: the ``simulate`` and ``demo`` commands of the command
line (`cli`), which write a realistic acquisition (`simulate`) and, for ``demo``, copy it live
and verify the copy by checksums."""

from __future__ import annotations

import argparse
import functools
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .checks import InputError
from .engine import CopyEngine
from .exit_codes import EXIT_FAILED, EXIT_OK, EXIT_SIGINT
from .options import DEFAULT_MARKER, CopyOptions
from .platform import noting_handler
from .progress import Progress, mib
from .status import JobState
from .verify import verify_tree


def add_demo_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` and ``demo`` commands to the command line's subparsers ``sub``."""
    p = sub.add_parser(
        "simulate",
        help="write a realistic simulated acquisition",
        description="Write a simulated acquisition into DEST as a microscope would, "
        "timepoint by timepoint, then the marker: try a copy without a microscope.",
    )
    p.add_argument("destination")
    _add_simulation_options(p)
    p.add_argument(
        "--locking",
        choices=["lockfile", "os", "none", "non_atomic"],
        default="lockfile",
        help="tensorstore's file locking mode",
    )
    p.add_argument("--grow", action="store_true", help="grow the time axis as it goes")
    p.add_argument("--marker", default=DEFAULT_MARKER)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_simulate, parser=p)

    p = sub.add_parser(
        "demo",
        help="simulate an acquisition, copy it live, verify",
        description="Simulate an acquisition into a new temporary folder, copy it live into "
        "the same folder, verify the copy by checksums and print a summary. The folder is "
        "removed at the end unless --keep.",
    )
    _add_simulation_options(p)
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the acquisition and its copy to look at (the folder is printed)",
    )
    p.set_defaults(func=cmd_demo, parser=p)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate

    dest = Path(args.destination)
    if dest.exists() and not args.overwrite:
        raise InputError(f"{dest} already exists; choose a new path or pass --overwrite")
    report = simulate(
        dest,
        args.preset,
        writer=args.writer,
        locking=args.locking,
        rate=args.rate,
        grow=args.grow,
        marker=args.marker,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {report.timepoints} timepoints, {report.files} files, "
        f"{mib(report.bytes)} to {dest} in {report.duration_s:.1f} s"
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="napari-softcopy-demo-"))
    try:
        return _demo(folder, args)
    finally:
        if args.keep:
            print(f"demo: the acquisition and its copy are in {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            print(f"demo: removed {folder} (--keep keeps it)", file=sys.stderr)


def _demo(folder: Path, args: argparse.Namespace) -> int:
    from .simulate import simulate

    source, destination = folder / "acquisition.zarr", folder / "copy.zarr"
    writer_error: list[BaseException] = []

    def acquire():
        try:
            simulate(source, args.preset, writer=args.writer, rate=args.rate)
        except BaseException as exc:  # reported below
            writer_error.append(exc)

    print(f"demo: simulating a {args.preset!r} acquisition into {source}", file=sys.stderr)
    writer = threading.Thread(target=acquire, daemon=True)
    writer.start()
    engine = CopyEngine(source, destination, CopyOptions(wait_for_source=True))
    t0 = time.monotonic()
    engine.start()
    stopped: list[int] = []  # (`platform.noting_handler` says why only noted)
    previous = signal.signal(signal.SIGINT, noting_handler(stopped))
    progress = Progress([engine], "bar" if sys.stderr.isatty() else "none")
    try:
        while not engine.wait(0.25):
            if stopped:
                engine.stop()
            progress.update()
        progress.update(final=True)
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
    writer.join()
    elapsed = time.monotonic() - t0
    s = engine.status()
    if writer_error:
        print(f"demo: the simulated writer failed: {writer_error[0]!r}", file=sys.stderr)
        return EXIT_FAILED
    report = verify_tree(source, destination, checksum=True)
    print(f"files copied:          {s.files_copied} ({s.chunks_at_destination} chunk files)")
    print(f"data copied:           {mib(s.bytes_copied)}")
    print(
        f"throughput:            {s.bytes_copied / 2**20 / max(elapsed, 1e-9):.1f} MiB/s "
        f"over {elapsed:.1f} s (live, paced by the acquisition)"
    )
    if s.marker_to_verified_s is not None:
        print(f"marker to verified:    {s.marker_to_verified_s:.3f} s")
    print(f"engine verification:   {s.state} ({s.message})")
    print(
        f"checksum verification: {'identical' if report.ok else 'DIFFERENT'} "
        f"({report.files_checked} files, xxh3-128 of every file)"
    )
    if stopped:
        return EXIT_SIGINT
    return EXIT_OK if s.state == JobState.VERIFIED and report.ok else EXIT_FAILED


def _add_simulation_options(p: argparse.ArgumentParser) -> None:
    """What ``simulate`` and ``demo`` both take: the preset, the writer, the pace."""
    p.add_argument(
        "--preset",
        choices=_PresetNames(),
        default="demo",
        metavar="NAME",
        help="what to simulate: %(choices)s (default: %(default)s)",
    )
    p.add_argument("--writer", choices=["tensorstore", "zarr-python"], default="tensorstore")
    p.add_argument("--rate", type=float, default=None, help="timepoints per second")


class _PresetNames(Sequence[str]):
    """The names of `simulate.PRESETS` as argparse ``choices``, read when argparse needs
    them: importing the simulator (numpy) would add 0.15 s to every ``copy`` and ``verify``."""

    @functools.cached_property
    def _names(self) -> list[str]:
        from .simulate import PRESETS

        return list(PRESETS)

    def __getitem__(self, index):
        return self._names[index]

    def __len__(self) -> int:
        return len(self._names)

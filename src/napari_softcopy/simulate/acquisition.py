"""The acquisition loop: timepoints written in real time, then the marker.

:func:`simulate` writes a time series, one timepoint after another at the acquisition rate of
a preset (each timepoint in z-slabs spread over its interval, lower resolution levels once
the full-resolution timepoint is complete), through one of the writers, and writes a marker
file (``complete`` by default) in the archive root, atomically, once every timepoint is
written.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..options import DEFAULT_MARKER
from .data import downsample, frame, noise_bank, structure
from .presets import Preset, n_images, resolve_preset
from .writers import LOCKING_MODES, WRITERS, array_specs, groups, open_writer


@dataclass
class SimulationReport:
    """What :func:`simulate` did.

    Attributes
    ----------
    path : Path
        The archive root (absolute).
    preset : str
        Name of the preset.
    writer : str
        ``"tensorstore"`` or ``"zarr-python"``.
    timepoints : int
        Timepoints written completely.
    files, bytes : int
        Files (metadata, chunks, marker) and their bytes in the archive at the end.
    write_busy_s : float
        Wall time spent inside the writer's calls (array/group creation, chunk writes,
        resizes), summed; data generation and waiting are not included.
    duration_s : float
        Wall time from the first write to the end (marker included).
    locking : str or None
        tensorstore's ``file_io_locking`` mode; None for zarr-python.
    completed : bool
        True when every timepoint was written (and the marker, if any); False when stopped.
    spec : Preset or None
        The effective preset (overrides applied, chunks fitted to the shape); pass it to
        :func:`frame` to recompute the data.
    seed : int
        The seed of the data.
    """

    path: Path
    preset: str
    writer: str
    timepoints: int
    files: int
    bytes: int
    write_busy_s: float
    duration_s: float
    locking: str | None = None
    completed: bool = False
    spec: Preset | None = None
    seed: int = 0


def _slab_bounds(p: Preset) -> list[tuple[int, int]]:
    """z ranges of the slabs of one timepoint (one slab when there is no z axis)."""
    if len(p.shape) < 4:
        return [(0, 1)]
    nz = p.shape[-3]
    k = max(1, min(p.slabs, nz))
    cuts = [round(i * nz / k) for i in range(k + 1)]
    return list(itertools.pairwise(cuts))


def _wait_until(deadline: float, stop: threading.Event) -> bool:
    """Sleep until ``deadline`` (monotonic); True as soon as ``stop`` is set."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        return stop.wait(remaining)
    return stop.is_set()


def _write_marker(root: Path, name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"the marker must be a plain file name, not {name!r}")
    final = root / name
    temp = root / f"{name}.{uuid.uuid4().hex}.partial"
    with open(temp, "w", encoding="utf-8") as f:
        f.write("complete\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, final)


def _tree_size(root: Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
            files += 1
    return files, total


def simulate(
    dest: str | os.PathLike[str],
    preset: str | Preset = "demo",
    *,
    writer: str = "tensorstore",
    locking: str = "lockfile",
    rate: float | None = None,
    timepoints: int | None = None,
    shape: tuple[int, ...] | None = None,
    grow: bool = False,
    marker: str | None = DEFAULT_MARKER,
    overwrite: bool = False,
    seed: int = 0,
    stop: threading.Event | None = None,
    on_timepoint: Callable[[int], None] | None = None,
) -> SimulationReport:
    """Write a simulated acquisition into ``dest``, one timepoint at a time, in real time.

    Parameters
    ----------
    dest : str or os.PathLike
        The archive root to create. It must not exist unless ``overwrite`` is true.
    preset : str or Preset
        A name from :data:`PRESETS` or a :class:`Preset`.
    writer : str
        ``"tensorstore"`` or ``"zarr-python"``.
    locking : str
        tensorstore's ``file_io_locking`` mode: ``"lockfile"``, ``"os"``, ``"none"`` or
        ``"non_atomic"`` (chunks written in place). Ignored by zarr-python.
    rate : float, optional
        Timepoints per second; overrides the preset's ``interval_s``. ``float("inf")`` writes
        as fast as possible.
    timepoints : int, optional
        Number of timepoints; overrides the preset's.
    shape : tuple of int, optional
        Full shape; overrides the preset's (chunks and shards are clipped to it).
    grow : bool
        Create the arrays with one timepoint and enlarge the time axis before each further
        timepoint (the array metadata are rewritten during the acquisition). Otherwise the
        arrays are created with their full shape up front.
    marker : str or None
        File name written atomically in the archive root once everything is written; None
        for no marker.
    overwrite : bool
        Delete ``dest`` first if it exists.
    seed : int
        Seed of the data (see :func:`frame`).
    stop : threading.Event, optional
        Set it (from any thread) to end the acquisition promptly: no further write, no marker.
    on_timepoint : callable, optional
        Called with the index of each timepoint once it is completely written.

    Returns
    -------
    SimulationReport

    Raises
    ------
    FileExistsError
        If ``dest`` exists and ``overwrite`` is false.
    ValueError
        For an unknown preset, writer or locking mode, or an invalid override.
    """
    p = resolve_preset(preset, timepoints=timepoints, shape=shape)
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r}; choose one of {', '.join(WRITERS)}")
    if writer == "tensorstore" and locking not in LOCKING_MODES:
        raise ValueError(
            f"unknown locking mode {locking!r}; choose one of {', '.join(LOCKING_MODES)}"
        )
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be a positive number of timepoints per second, not {rate!r}")
    if marker is not None and (not marker or "/" in marker or marker in (".", "..")):
        raise ValueError(f"the marker must be a plain file name, not {marker!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, not {seed}")
    if rate is not None:
        # The effective interval also goes into the OME-NGFF time scale and report.spec.
        p = dataclasses.replace(p, interval_s=0.0 if math.isinf(rate) else 1.0 / rate)
    interval = p.interval_s

    root = Path(os.path.abspath(os.fspath(dest)))
    if root.exists() or root.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"{root} already exists; choose a new path or pass overwrite=True to replace it"
            )
        if root.is_dir() and not root.is_symlink():
            shutil.rmtree(root)
        else:
            root.unlink()

    stop = stop if stop is not None else threading.Event()
    specs = array_specs(p)
    slabs = _slab_bounds(p)
    has_z = len(p.shape) >= 4
    image_count = n_images(p)
    # Precompute the smooth structure and the noise before the clock starts.
    for image in range(image_count):
        structure(p.shape[1:], seed, image)
    noise_bank(math.prod(p.shape[1:]), seed)

    w = open_writer(writer, root, p, locking)

    busy = 0.0
    done = 0
    stopped = False
    t_start = time.monotonic()
    try:
        tick = time.perf_counter()
        for path, attributes in groups(p):
            w.create_group(path, attributes)
        first = (1, *p.shape[1:]) if grow else p.shape
        handles = [w.create_array(s, (first[0], *s.shape[1:])) for s in specs]
        busy += time.perf_counter() - tick

        for t in range(p.timepoints):
            if stop.is_set():
                stopped = True
                break
            data = [frame(p, t, seed, image=i) for i in range(image_count)]
            for k, (z0, z1) in enumerate(slabs):
                due = t_start + (t + k / len(slabs)) * interval
                if _wait_until(due, stop):
                    stopped = True
                    break
                tick = time.perf_counter()
                if grow and t > 0 and k == 0:
                    handles = [
                        w.resize(h, (t + 1, *s.shape[1:]))
                        for h, s in zip(handles, specs, strict=True)
                    ]
                for h, s in zip(handles, specs, strict=True):
                    if s.level != 0:
                        continue
                    block = data[s.image]
                    if has_z:
                        index = (t, *(slice(None),) * (len(p.shape) - 4), slice(z0, z1))
                        block = block[..., z0:z1, :, :]
                    else:
                        index = (t,)
                    w.write(h, index, block)
                busy += time.perf_counter() - tick
            if stopped:
                break
            # Lower resolution levels once the full-resolution timepoint is complete.
            pyramids = {i: [data[i]] for i in range(image_count)} if p.levels > 1 else {}
            for pyramid in pyramids.values():
                while len(pyramid) < p.levels:
                    pyramid.append(downsample(pyramid[-1]))
            tick = time.perf_counter()
            for h, s in zip(handles, specs, strict=True):
                if s.level != 0:
                    w.write(h, (t,), pyramids[s.image][s.level])
            busy += time.perf_counter() - tick
            done += 1
            if on_timepoint is not None:
                on_timepoint(t)
            if stop.is_set():
                stopped = True
                break
    finally:
        w.close()

    if not stopped and marker is not None:
        _write_marker(root, marker)
    duration = time.monotonic() - t_start
    files, nbytes = _tree_size(root) if root.exists() else (0, 0)
    return SimulationReport(
        path=root,
        preset=p.name,
        writer=writer,
        timepoints=done,
        files=files,
        bytes=nbytes,
        write_busy_s=busy,
        duration_s=duration,
        locking=locking if writer == "tensorstore" else None,
        completed=not stopped,
        spec=p,
        seed=seed,
    )

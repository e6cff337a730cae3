"""A realistic simulated acquisition: a Zarr archive written the way a microscope writes it.

The simulator writes a time series, one timepoint after another at the acquisition rate of a
:class:`Preset`, through a real Zarr writer:

- ``"tensorstore"``: tensorstore's ``zarr`` (v2) / ``zarr3`` drivers over the ``file``
  kvstore, with the kvstore's ``file_io_locking`` mode chosen by ``locking`` (``"lockfile"``,
  ``"os"``, ``"none"`` or ``"non_atomic"``). Group metadata (OME-NGFF) goes through a
  tensorstore ``file`` kvstore with the same locking, so it shows the same temp-file pattern.
- ``"zarr-python"``: zarr-python 3 with a ``LocalStore``.

Both writers handle Zarr v2 (``.`` or ``/`` chunk keys), Zarr v3 (``default`` or ``v2`` chunk
key encoding) and v3 sharding. The data look like fluorescence microscopy: a few broad blobs
over a low-frequency background that drifts a little from timepoint to timepoint, photon and
read noise, and a camera offset, so no chunk ever equals the fill value 0 and the default
codecs compress it to roughly half its size. :func:`frame` recomputes, bit for bit, the data
any timepoint received, so tests can compare what a copy holds with what was written.

When every timepoint is written the simulator writes a marker file (``complete`` by default)
in the archive root, atomically.

This module imports neither Qt nor napari.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LOCKING_MODES",
    "PRESETS",
    "WRITERS",
    "Preset",
    "SimulationReport",
    "array_paths",
    "frame",
    "level_shape",
    "resolve_preset",
    "simulate",
]

WRITERS: tuple[str, ...] = ("tensorstore", "zarr-python")
"""Names accepted by ``simulate(writer=...)``."""

LOCKING_MODES: tuple[str, ...] = ("lockfile", "os", "none", "non_atomic")
"""tensorstore ``file_io_locking`` modes accepted by ``simulate(locking=...)``."""

_KINDS = ("array", "multiscale", "plate")

# Codecs every simulated array uses (both writers write the same configuration).
_BLOSC_V2 = {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1, "blocksize": 0}
_ZSTD_LEVEL = 3

# Data model (arbitrary units = camera counts).
_OFFSET = 100.0  # camera bias: keeps every voxel far above the fill value 0
_GAIN = 1.0  # photon noise: variance = gain * signal
_READ_NOISE = 2.0  # read noise standard deviation
_BACKGROUND = 40.0  # mean of the low-frequency background before attenuation
_BLOBS = 6  # broad gaussian blobs per channel
_BLOB_AMPLITUDE = (250.0, 1500.0)
_MARGIN = 4  # largest drift in y and x, in pixels
_NOISE_CLIP = 6.0  # noise is clipped to +-6 sigma: values stay within [~85, ~10,000]

# Independent random streams derived from the seed.
_STREAM_STRUCTURE = 1
_STREAM_NOISE = 2
_STREAM_FRAME = 3
_STREAM_DRIFT = 4


@dataclass(frozen=True)
class Preset:
    """The shape, layout and pace of a simulated acquisition.

    Parameters
    ----------
    name : str
        Short name (the key in :data:`PRESETS`).
    description : str
        One line for humans.
    zarr_format : int
        2 or 3. For ``"multiscale"`` and ``"plate"`` this also picks OME-NGFF 0.4 (2) or 0.5 (3).
    shape : tuple of int
        Full shape; the first axis is time. The axes are ``t, y, x`` (3 dimensions),
        ``t, z, y, x`` (4) or ``t, c, z, y, x`` (5).
    chunks : tuple of int
        Chunk shape (the inner chunk shape when sharded).
    shards : tuple of int or None
        Shard shape of Zarr v3 ``sharding_indexed``, a multiple of ``chunks``; None for no
        sharding.
    separator : str
        Chunk key separator: ``"."`` or ``"/"`` (v2 ``dimension_separator``; v3 separator of
        the chunk key encoding).
    v3_key_encoding : str
        Zarr v3 chunk key encoding: ``"default"`` (``c/0/0/0``) or ``"v2"`` (``0.0.0``).
    interval_s : float
        Seconds between timepoints (the acquisition rate).
    slabs : int
        Each timepoint is written in this many z-slabs spread over the interval (with
        sharding, 4 slabs rewrite every shard 4 times).
    kind : str
        ``"array"`` (the archive root is one array), ``"multiscale"`` (an OME-NGFF multiscale
        image group) or ``"plate"`` (an OME-NGFF HCS plate).
    dtype : str
        Data type; only ``"uint16"`` is supported.
    levels : int
        Resolution levels of every multiscale image (each level halves y and x).
    voxel_size_um : tuple of float
        Physical z, y, x size of a level-0 voxel in micrometers (OME-NGFF scale).
    plate_rows, plate_columns : tuple of str
        Row and column names of a plate; every row/column pair is a well.
    fields : int
        Fields (images) per well of a plate.
    """

    name: str
    description: str
    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None = None
    separator: str = "/"
    v3_key_encoding: str = "default"
    interval_s: float = 1.0
    slabs: int = 1
    kind: str = "array"
    dtype: str = "uint16"
    levels: int = 1
    voxel_size_um: tuple[float, float, float] = (2.0, 0.4, 0.4)
    plate_rows: tuple[str, ...] = ("A",)
    plate_columns: tuple[str, ...] = ("1", "2")
    fields: int = 1

    @property
    def ome_version(self) -> str | None:
        """OME-NGFF version written (``"0.4"`` or ``"0.5"``), None for a bare array."""
        if self.kind == "array":
            return None
        return "0.4" if self.zarr_format == 2 else "0.5"

    @property
    def axes(self) -> tuple[str, ...]:
        """Axis names, e.g. ``("t", "c", "z", "y", "x")``."""
        return _axis_names(len(self.shape))

    @property
    def timepoints(self) -> int:
        """Number of timepoints (the length of the first axis)."""
        return self.shape[0]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "demo",
            "small and fast: 10 timepoints of 16x256x256 in about 2-3 s",
            zarr_format=3,
            shape=(10, 16, 256, 256),
            chunks=(1, 16, 64, 64),
            interval_s=0.2,
        ),
        Preset(
            "lightsheet",
            "light-sheet time series: 4,096 chunk files, about 280 MiB compressed",
            zarr_format=3,
            shape=(16, 64, 512, 512),
            chunks=(1, 16, 64, 64),
            interval_s=1.25,
        ),
        Preset(
            "manyfiles",
            "Zarr v2 with '.' keys: 50,000 small chunk files in one directory",
            zarr_format=2,
            shape=(25, 20, 640, 640),
            chunks=(1, 1, 64, 64),
            separator=".",
            interval_s=1.25,
        ),
        Preset(
            "sharded",
            "Zarr v3 sharding: 32 shards, each rewritten 4 times as its z-slabs arrive",
            zarr_format=3,
            shape=(8, 64, 512, 512),
            chunks=(1, 16, 64, 64),
            shards=(1, 64, 256, 256),
            slabs=4,
            interval_s=1.25,
        ),
        Preset(
            "nested-v2",
            "Zarr v2 with '/' keys (nested directories), small",
            zarr_format=2,
            shape=(10, 16, 128, 128),
            chunks=(1, 8, 64, 64),
            separator="/",
            interval_s=0.2,
        ),
        Preset(
            "multiscale",
            "OME-NGFF 0.5 multiscale image (t, c, z, y, x), 3 levels, small",
            zarr_format=3,
            shape=(6, 2, 16, 256, 256),
            chunks=(1, 1, 16, 64, 64),
            kind="multiscale",
            levels=3,
            interval_s=0.25,
        ),
        Preset(
            "multiscale-0.4",
            "OME-NGFF 0.4 (Zarr v2, '/' keys) multiscale image, 3 levels, small",
            zarr_format=2,
            shape=(6, 2, 16, 256, 256),
            chunks=(1, 1, 16, 64, 64),
            kind="multiscale",
            levels=3,
            interval_s=0.25,
        ),
        Preset(
            "plate",
            "OME-NGFF 0.5 HCS plate: wells A/1 and A/2, one field each, 2 levels, small",
            zarr_format=3,
            shape=(5, 1, 8, 128, 128),
            chunks=(1, 1, 8, 64, 64),
            kind="plate",
            levels=2,
            interval_s=0.25,
        ),
        Preset(
            "plate-0.4",
            "OME-NGFF 0.4 (Zarr v2, '/' keys) HCS plate, like iohub writes it, small",
            zarr_format=2,
            shape=(5, 1, 8, 128, 128),
            chunks=(1, 1, 8, 64, 64),
            kind="plate",
            levels=2,
            interval_s=0.25,
        ),
    )
}
"""Built-in presets by name."""


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


# --------------------------------------------------------------------------------------------
# presets and layout


def _axis_names(ndim: int) -> tuple[str, ...]:
    names = {3: ("t", "y", "x"), 4: ("t", "z", "y", "x"), 5: ("t", "c", "z", "y", "x")}
    if ndim not in names:
        raise ValueError(f"a simulated array has 3, 4 or 5 dimensions, not {ndim}")
    return names[ndim]


def _fit(
    shape: tuple[int, ...], chunks: tuple[int, ...], shards: tuple[int, ...] | None
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Clip chunks to ``shape``; keep shards whole multiples of the chunks."""
    fitted = tuple(max(1, min(c, n)) for c, n in zip(chunks, shape, strict=True))
    if shards is None:
        return fitted, None
    fitted_shards = []
    for s, c, n in zip(shards, fitted, shape, strict=True):
        s = min(s, math.ceil(n / c) * c)
        fitted_shards.append(max(c, math.ceil(s / c) * c))
    return fitted, tuple(fitted_shards)


def _lookup(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None


def resolve_preset(
    preset: str | Preset,
    *,
    timepoints: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> Preset:
    """Apply overrides to a preset and check it.

    Parameters
    ----------
    preset : str or Preset
        A name from :data:`PRESETS` or a :class:`Preset`.
    timepoints : int, optional
        Replaces the length of the time axis.
    shape : tuple of int, optional
        Replaces the full shape (same number of dimensions as the preset's).

    Returns
    -------
    Preset
        The effective preset: chunks clipped to the shape, shards kept multiples of chunks.

    Raises
    ------
    ValueError
        If the preset is unknown or inconsistent.
    """
    p = _lookup(preset)
    new_shape = tuple(int(n) for n in (shape if shape is not None else p.shape))
    if timepoints is not None:
        new_shape = (int(timepoints), *new_shape[1:])
    _axis_names(len(new_shape))
    if len(new_shape) != len(p.shape):
        raise ValueError(
            f"shape {new_shape} has {len(new_shape)} dimensions; preset {p.name!r} has "
            f"{len(p.shape)} ({', '.join(p.axes)})"
        )
    if any(n < 1 for n in new_shape):
        raise ValueError(f"every dimension of the shape must be at least 1, got {new_shape}")
    if len(p.chunks) != len(new_shape) or any(c < 1 for c in p.chunks):
        raise ValueError(f"chunks {p.chunks} do not fit a {len(new_shape)}-d shape")
    if p.zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, not {p.zarr_format!r}")
    if p.separator not in (".", "/"):
        raise ValueError(f"separator must be '.' or '/', not {p.separator!r}")
    if p.v3_key_encoding not in ("default", "v2"):
        raise ValueError(f"v3_key_encoding must be 'default' or 'v2', not {p.v3_key_encoding!r}")
    if p.kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}, not {p.kind!r}")
    if np.dtype(p.dtype) != np.uint16:
        raise ValueError(f"only uint16 data are simulated, not {p.dtype!r}")
    if p.shards is not None:
        if p.zarr_format != 3:
            raise ValueError("sharding needs zarr_format=3")
        if len(p.shards) != len(new_shape):
            raise ValueError(f"shards {p.shards} do not fit a {len(new_shape)}-d shape")
        if any(s % c for s, c in zip(p.shards, p.chunks, strict=True)):
            raise ValueError(f"shards {p.shards} must be multiples of chunks {p.chunks}")
    if p.slabs < 1 or p.levels < 1 or p.fields < 1:
        raise ValueError("slabs, levels and fields must be at least 1")
    if p.kind == "array" and p.levels != 1:
        raise ValueError("a bare array has one level; use kind='multiscale' for a pyramid")
    if p.kind == "plate" and (not p.plate_rows or not p.plate_columns):
        raise ValueError("a plate needs at least one row and one column")
    if not p.interval_s >= 0:
        raise ValueError(f"interval_s must be >= 0, not {p.interval_s!r}")
    chunks, shards = _fit(new_shape, p.chunks, p.shards)
    return dataclasses.replace(p, shape=new_shape, chunks=chunks, shards=shards)


def level_shape(shape: tuple[int, ...], level: int) -> tuple[int, ...]:
    """Shape of resolution ``level`` of an image of level-0 ``shape`` (y and x halved per level).

    Parameters
    ----------
    shape : tuple of int
        Level-0 shape (any number of dimensions; the last two are y and x).
    level : int
        0 for full resolution.

    Returns
    -------
    tuple of int
    """
    f = 2**level
    return (*shape[:-2], -(-shape[-2] // f), -(-shape[-1] // f))


def array_paths(preset: str | Preset) -> dict[str, tuple[int, int]]:
    """Every array of an archive, relative to its root, with its image index and level.

    Parameters
    ----------
    preset : str or Preset

    Returns
    -------
    dict
        ``{path: (image, level)}``; ``""`` is the root itself (kind ``"array"``). Image and
        level are the keyword arguments of :func:`frame` that reproduce the array's data.
        Plate fields are numbered row by row, column by column, field by field.
    """
    p = _lookup(preset)
    if p.kind == "array":
        return {"": (0, 0)}
    if p.kind == "multiscale":
        return {str(level): (0, level) for level in range(p.levels)}
    out: dict[str, tuple[int, int]] = {}
    image = 0
    for row in p.plate_rows:
        for col in p.plate_columns:
            for field in range(p.fields):
                for level in range(p.levels):
                    out[f"{row}/{col}/{field}/{level}"] = (image, level)
                image += 1
    return out


def _n_images(p: Preset) -> int:
    return 1 if p.kind != "plate" else len(p.plate_rows) * len(p.plate_columns) * p.fields


# --------------------------------------------------------------------------------------------
# OME-NGFF metadata


def _ome_axes(p: Preset) -> list[dict[str, str]]:
    kinds = {"t": ("time", "second"), "c": ("channel", None)}
    axes = []
    for name in p.axes:
        kind, unit = kinds.get(name, ("space", "micrometer"))
        axis = {"name": name, "type": kind}
        if unit:
            axis["unit"] = unit
        axes.append(axis)
    return axes


def _ome_scale(p: Preset, level: int) -> list[float]:
    vz, vy, vx = p.voxel_size_um
    f = float(2**level)
    per_axis = {"t": p.interval_s or 1.0, "c": 1.0, "z": vz, "y": vy * f, "x": vx * f}
    return [float(per_axis[name]) for name in p.axes]


def _multiscales(p: Preset, name: str) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if p.ome_version == "0.4":
        entry["version"] = "0.4"
    entry["name"] = name
    entry["axes"] = _ome_axes(p)
    entry["datasets"] = [
        {
            "path": str(level),
            "coordinateTransformations": [{"type": "scale", "scale": _ome_scale(p, level)}],
        }
        for level in range(p.levels)
    ]
    entry["type"] = "mean" if p.levels > 1 else "none"
    entry["metadata"] = {"description": "2x2 mean in y and x per level", "method": "simulate"}
    return {"multiscales": [entry]}


def _ome(p: Preset, content: dict[str, Any]) -> dict[str, Any]:
    """Wrap OME-NGFF attributes: under ``ome`` (0.5) or at the top (0.4)."""
    if p.ome_version == "0.5":
        return {"ome": {"version": "0.5", **content}}
    return content


def _groups(p: Preset) -> list[tuple[str, dict[str, Any]]]:
    """Groups to create, parents first, with their attributes."""
    if p.kind == "array":
        return []
    if p.kind == "multiscale":
        return [("", _ome(p, _multiscales(p, p.name)))]
    wells = []
    for ri, row in enumerate(p.plate_rows):
        for ci, col in enumerate(p.plate_columns):
            wells.append({"path": f"{row}/{col}", "rowIndex": ri, "columnIndex": ci})
    plate: dict[str, Any] = {}
    if p.ome_version == "0.4":
        plate["version"] = "0.4"
    plate.update(
        name=p.name,
        rows=[{"name": r} for r in p.plate_rows],
        columns=[{"name": c} for c in p.plate_columns],
        wells=wells,
        field_count=p.fields,
    )
    groups: list[tuple[str, dict[str, Any]]] = [("", _ome(p, {"plate": plate}))]
    for row in p.plate_rows:
        groups.append((row, {}))
    for row in p.plate_rows:
        for col in p.plate_columns:
            well: dict[str, Any] = {}
            if p.ome_version == "0.4":
                well["version"] = "0.4"
            well["images"] = [{"path": str(f)} for f in range(p.fields)]
            groups.append((f"{row}/{col}", _ome(p, {"well": well})))
            for f in range(p.fields):
                groups.append((f"{row}/{col}/{f}", _ome(p, _multiscales(p, f"{row}{col}/{f}"))))
    return groups


# --------------------------------------------------------------------------------------------
# data


def _split_spatial(spatial: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(channels, z, y, x) of the non-time axes."""
    y, x = spatial[-2:]
    z = spatial[-3] if len(spatial) >= 3 else 1
    lead = math.prod(spatial[:-3]) if len(spatial) > 3 else 1
    return lead, z, y, x


@functools.lru_cache(maxsize=8)
def _structure(spatial: tuple[int, ...], seed: int, image: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free expected counts (offset included) and the noise sigma, with a drift margin.

    Both have shape ``(channels, z, y + 2 * margin, x + 2 * margin)``, float32, read-only.
    """
    lead, nz, ny, nx = _split_spatial(spatial)
    py, px = ny + 2 * _MARGIN, nx + 2 * _MARGIN
    signal = np.empty((lead, nz, py, px), np.float32)
    zz = np.arange(nz, dtype=np.float64)
    yy = np.arange(py, dtype=np.float64)
    xx = np.arange(px, dtype=np.float64)
    attenuation = (1.0 - 0.3 * zz / max(nz - 1, 1)).astype(np.float32)[:, None, None]
    for c in range(lead):
        rng = np.random.default_rng([seed, image, c, _STREAM_STRUCTURE])
        fy, fx = rng.uniform(0.5, 2.5, 2)
        phy, phx = rng.uniform(0.0, 2 * np.pi, 2)
        by = 1.0 + np.cos(2 * np.pi * fy * yy / py + phy)
        bx = 1.0 + np.cos(2 * np.pi * fx * xx / px + phx)
        vol = signal[c]
        vol[...] = (_BACKGROUND * (0.25 + by[:, None] * bx[None, :])).astype(np.float32)
        for _ in range(_BLOBS):
            cz, cy, cx = rng.uniform(0.0, 1.0, 3) * (nz, py, px)
            sz = max(1.0, rng.uniform(0.15, 0.4) * nz)
            sy = max(1.5, rng.uniform(0.06, 0.2) * py)
            sx = max(1.5, rng.uniform(0.06, 0.2) * px)
            amplitude = rng.uniform(*_BLOB_AMPLITUDE)
            gz = amplitude * np.exp(-0.5 * ((zz - cz) / sz) ** 2)
            gyx = (
                np.exp(-0.5 * ((yy - cy) / sy) ** 2)[:, None]
                * np.exp(-0.5 * ((xx - cx) / sx) ** 2)[None, :]
            )
            vol += gz.astype(np.float32)[:, None, None] * gyx.astype(np.float32)[None]
        vol *= attenuation
    sigma = np.sqrt(_GAIN * signal + np.float32(_READ_NOISE**2))
    signal += np.float32(_OFFSET)
    signal.flags.writeable = False
    sigma.flags.writeable = False
    return signal, sigma


@functools.lru_cache(maxsize=4)
def _noise_bank(n: int, seed: int) -> tuple[np.ndarray, int]:
    """Standard-normal noise (float32, clipped) of length ``n + slack``, and ``slack``.

    A timepoint takes ``n`` consecutive values starting at a random offset in ``[0, slack]``:
    drawing fresh gaussian noise for every timepoint would cost more than the rest together.
    """
    slack = max(1024, min(n, 1 << 20))
    rng = np.random.default_rng([seed, _STREAM_NOISE])
    bank = rng.standard_normal(n + slack, dtype=np.float32)
    np.clip(bank, -_NOISE_CLIP, _NOISE_CLIP, out=bank)
    bank.flags.writeable = False
    return bank, slack


def _drift(t: int, seed: int) -> tuple[int, int]:
    """Offset of timepoint ``t`` into the margin-padded structure (a slow wobble in y and x)."""
    phy, phx = np.random.default_rng([seed, _STREAM_DRIFT]).uniform(0.0, 2 * np.pi, 2)
    dy = _MARGIN + round(_MARGIN * math.sin(2 * math.pi * t / 29.0 + phy))
    dx = _MARGIN + round(_MARGIN * math.sin(2 * math.pi * t / 41.0 + phx))
    return dy, dx


def _downsample(a: np.ndarray) -> np.ndarray:
    """Halve the last two axes by a rounded 2x2 mean (an odd edge is repeated)."""
    ny, nx = a.shape[-2:]
    if ny % 2 or nx % 2:
        pad = [(0, 0)] * (a.ndim - 2) + [(0, ny % 2), (0, nx % 2)]
        a = np.pad(a, pad, mode="edge")
        ny, nx = a.shape[-2:]
    blocks = a.reshape(*a.shape[:-2], ny // 2, 2, nx // 2, 2).astype(np.uint32)
    return ((blocks.sum(axis=(-3, -1)) + 2) // 4).astype(a.dtype)


def frame(
    preset: str | Preset,
    t: int,
    seed: int = 0,
    shape: tuple[int, ...] | None = None,
    *,
    image: int = 0,
    level: int = 0,
) -> np.ndarray:
    """The data written for timepoint ``t`` (deterministic).

    Parameters
    ----------
    preset : str or Preset
        The preset (only its non-time shape matters).
    t : int
        Timepoint index (>= 0).
    seed : int
        The seed given to :func:`simulate`.
    shape : tuple of int, optional
        The shape override given to :func:`simulate`, if any.
    image : int
        Image index within a plate (see :func:`array_paths`); 0 otherwise.
    level : int
        Resolution level of a multiscale image (see :func:`array_paths`).

    Returns
    -------
    numpy.ndarray
        uint16 array of the shape of one timepoint (``shape[1:]``, y and x halved per level).
        Every value is at least about 85: no chunk ever equals the fill value 0.
    """
    if t < 0 or image < 0 or level < 0:
        raise ValueError("t, image and level must be >= 0")
    p = _lookup(preset)
    spatial = tuple(int(n) for n in (shape if shape is not None else p.shape))[1:]
    lead, nz, ny, nx = _split_spatial(spatial)
    signal, sigma = _structure(spatial, seed, image)
    n = lead * nz * ny * nx
    bank, slack = _noise_bank(n, seed)
    start = int(np.random.default_rng([seed, image, t, _STREAM_FRAME]).integers(0, slack + 1))
    noise = bank[start : start + n].reshape(lead, nz, ny, nx)
    dy, dx = _drift(t, seed)
    window = (slice(None), slice(None), slice(dy, dy + ny), slice(dx, dx + nx))
    work = np.multiply(sigma[window], noise)
    work += signal[window]
    out = work.astype(np.uint16).reshape(spatial)
    for _ in range(level):
        out = _downsample(out)
    return out


# --------------------------------------------------------------------------------------------
# writers


@dataclass
class _ArraySpec:
    path: str
    image: int
    level: int
    shape: tuple[int, ...]  # final shape
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None


def _array_specs(p: Preset) -> list[_ArraySpec]:
    specs = []
    for path, (image, level) in array_paths(p).items():
        shape = level_shape(p.shape, level)
        chunks, shards = _fit(shape, p.chunks, p.shards)
        specs.append(_ArraySpec(path, image, level, shape, chunks, shards))
    return specs


class _TensorstoreWriter:
    """Arrays through tensorstore's zarr/zarr3 drivers, groups through its file kvstore."""

    def __init__(self, root: Path, p: Preset, locking: str) -> None:
        import tensorstore as ts

        self._ts = ts
        self._root = root
        self._p = p
        self._context = ts.Context({"file_io_locking": {"mode": locking}})
        self._kvstore: Any = None

    def _kv(self) -> Any:
        if self._kvstore is None:
            spec = {"driver": "file", "path": str(self._root) + "/"}
            self._kvstore = self._ts.KvStore.open(spec, context=self._context).result()
        return self._kvstore

    def create_group(self, path: str, attributes: dict[str, Any]) -> None:
        prefix = f"{path}/" if path else ""
        if self._p.zarr_format == 2:
            documents = {".zgroup": {"zarr_format": 2}, ".zattrs": attributes}
        else:
            group = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
            documents = {"zarr.json": group}
        for name, doc in documents.items():
            self._kv().write(prefix + name, json.dumps(doc, indent=2).encode()).result()

    def _metadata(self, spec: _ArraySpec, shape: tuple[int, ...]) -> dict[str, Any]:
        p = self._p
        if p.zarr_format == 2:
            return {
                "zarr_format": 2,
                "shape": list(shape),
                "chunks": list(spec.chunks),
                "dtype": "<u2",
                "compressor": dict(_BLOSC_V2),
                "fill_value": 0,
                "order": "C",
                "filters": None,
                "dimension_separator": p.separator,
            }
        inner = [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": _ZSTD_LEVEL, "checksum": False}},
        ]
        if spec.shards is None:
            grid, codecs = spec.chunks, inner
        else:
            sharding = {
                "chunk_shape": list(spec.chunks),
                "codecs": inner,
                "index_codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "crc32c"},
                ],
                "index_location": "end",
            }
            grid, codecs = spec.shards, [{"name": "sharding_indexed", "configuration": sharding}]
        return {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(shape),
            "data_type": "uint16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(grid)}},
            "chunk_key_encoding": {
                "name": p.v3_key_encoding,
                "configuration": {"separator": p.separator},
            },
            "fill_value": 0,
            "codecs": codecs,
            "dimension_names": list(p.axes),
        }

    def create_array(self, spec: _ArraySpec, shape: tuple[int, ...]) -> Any:
        path = self._root / spec.path if spec.path else self._root
        ts_spec = {
            "driver": "zarr" if self._p.zarr_format == 2 else "zarr3",
            "kvstore": {"driver": "file", "path": str(path) + "/"},
            "metadata": self._metadata(spec, shape),
        }
        return self._ts.open(ts_spec, create=True, context=self._context).result()

    def write(self, handle: Any, index: tuple[Any, ...], data: np.ndarray) -> None:
        handle[index].write(data).result()

    def resize(self, handle: Any, shape: tuple[int, ...]) -> Any:
        return handle.resize(exclusive_max=list(shape), expand_only=True).result()

    def close(self) -> None:
        self._kvstore = None


class _ZarrPythonWriter:
    """Groups and arrays through zarr-python 3 and its ``LocalStore``."""

    def __init__(self, root: Path, p: Preset) -> None:
        import zarr
        from zarr.storage import LocalStore

        self._zarr = zarr
        self._p = p
        self._store = LocalStore(str(root))

    def create_group(self, path: str, attributes: dict[str, Any]) -> None:
        self._zarr.create_group(
            store=self._store,
            path=path or None,
            zarr_format=self._p.zarr_format,
            attributes=attributes,
        )

    def create_array(self, spec: _ArraySpec, shape: tuple[int, ...]) -> Any:
        p = self._p
        if p.zarr_format == 2:
            from numcodecs import Blosc

            compressor: Any = Blosc(
                cname=_BLOSC_V2["cname"], clevel=_BLOSC_V2["clevel"], shuffle=Blosc.SHUFFLE
            )
            key_encoding = {"name": "v2", "separator": p.separator}
            dimension_names = None
        else:
            from zarr.codecs import ZstdCodec

            compressor = ZstdCodec(level=_ZSTD_LEVEL, checksum=False)
            key_encoding = {"name": p.v3_key_encoding, "separator": p.separator}
            dimension_names = list(p.axes)
        return self._zarr.create_array(
            store=self._store,
            name=spec.path or None,
            shape=shape,
            chunks=spec.chunks,
            shards=spec.shards,
            dtype="uint16",
            fill_value=0,
            compressors=compressor,
            chunk_key_encoding=key_encoding,
            dimension_names=dimension_names,
            zarr_format=p.zarr_format,
        )

    def write(self, handle: Any, index: tuple[Any, ...], data: np.ndarray) -> None:
        handle[index] = data

    def resize(self, handle: Any, shape: tuple[int, ...]) -> Any:
        handle.resize(shape)
        return handle

    def close(self) -> None:
        self._store.close()


# --------------------------------------------------------------------------------------------
# the acquisition


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
    marker: str | None = "complete",
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
    specs = _array_specs(p)
    slabs = _slab_bounds(p)
    has_z = len(p.shape) >= 4
    n_images = _n_images(p)
    # Precompute the smooth structure and the noise before the clock starts.
    for image in range(n_images):
        _structure(p.shape[1:], seed, image)
    _noise_bank(math.prod(p.shape[1:]), seed)

    w: _TensorstoreWriter | _ZarrPythonWriter
    if writer == "tensorstore":
        w = _TensorstoreWriter(root, p, locking)
    else:
        w = _ZarrPythonWriter(root, p)

    busy = 0.0
    done = 0
    stopped = False
    t_start = time.monotonic()
    try:
        tick = time.perf_counter()
        for path, attributes in _groups(p):
            w.create_group(path, attributes)
        first = (1, *p.shape[1:]) if grow else p.shape
        handles = [w.create_array(s, (first[0], *s.shape[1:])) for s in specs]
        busy += time.perf_counter() - tick

        for t in range(p.timepoints):
            if stop.is_set():
                stopped = True
                break
            data = [frame(p, t, seed, image=i) for i in range(n_images)]
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
            pyramids = {i: [data[i]] for i in range(n_images)} if p.levels > 1 else {}
            for pyramid in pyramids.values():
                while len(pyramid) < p.levels:
                    pyramid.append(_downsample(pyramid[-1]))
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

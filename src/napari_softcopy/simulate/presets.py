"""Presets: the shape, layout and pace of a simulated acquisition, and where its arrays live.

A :class:`Preset` says what a microscope would write (Zarr format, shape, chunks, shards, key
encoding, rate, and for OME-NGFF images their levels, voxel size and plate layout);
:func:`resolve_preset` applies overrides and checks it; :func:`array_paths` and
:func:`level_shape` say which arrays an archive of it holds and their shapes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .. import ome

KINDS = ("array", "multiscale", "plate")
"""Values of :attr:`Preset.kind`."""


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
        return ome.version_for(self.zarr_format)

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


def _axis_names(ndim: int) -> tuple[str, ...]:
    # OME-NGFF's conventional order (t, c, z, y, x), trailing dimensions kept.
    names = {3: ("t", "y", "x"), 4: ("t", "z", "y", "x"), 5: ("t", "c", "z", "y", "x")}
    if ndim not in names:
        raise ValueError(f"a simulated array has 3, 4 or 5 dimensions, not {ndim}")
    return names[ndim]


def fit_chunks(
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


def lookup(preset: str | Preset) -> Preset:
    """The preset named ``preset`` (a :class:`Preset` is returned as it is), unchecked."""
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
    p = lookup(preset)
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
    if p.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {p.kind!r}")
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
    chunks, shards = fit_chunks(new_shape, p.chunks, p.shards)
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
    p = lookup(preset)
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


def n_images(p: Preset) -> int:
    """Images of the archive: one, or one per field of every well of a plate."""
    return 1 if p.kind != "plate" else len(p.plate_rows) * len(p.plate_columns) * p.fields

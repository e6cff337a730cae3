"""Reading a Zarr archive for display: what it holds, its images' metadata, lazy arrays.

Qt-free and napari-free. `inspect_archive` lists what an archive holds (plain arrays,
OME-NGFF images, HCS plates and wells), `read_image_spec` describes one image (levels, axes,
units, scale, channels) from its OME-NGFF metadata (read through `napari_softcopy.ome`), and
`open_image` gives its levels as lazy dask arrays. The archive is a folder or an
``s3://bucket/prefix`` (read through `napari_softcopy.archive_store`, which also chooses
the chunk reader: tensorstore or zarr-python). Opening reads metadata only; no chunk is
read until the data are computed, and `estimate_contrast` reads a bounded sample. Turning
these into napari layer data (names, colormaps, scale, differences) is
`napari_softcopy.layer_data`'s part.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ome
from .archive_store import ArchiveStore, OpenError, open_store
from .layout import LayoutError
from .ome import node_attributes
from .zarr_nodes import array_ndim_and_names, find_array_paths, node_attributes_in, node_kind_in

__all__ = [
    "CONTRAST_SAMPLE_BYTES",
    "DASK_CHUNK_BYTES",
    "ArchiveInfo",
    "ImageSpec",
    "OpenError",
    "archive_root",
    "choose_image",
    "dask_chunks",
    "estimate_contrast",
    "inspect_archive",
    "node_attributes",
    "open_array",
    "open_image",
    "read_image_spec",
]

#: Bytes of pixels of the lowest resolution level sampled at most to estimate a layer's
#: contrast limits.
CONTRAST_SAMPLE_BYTES = 4 * 2**20
#: Grow a dask chunk along the trailing (y, x) axes up to this many bytes.
DASK_CHUNK_BYTES = 16 * 2**20


# ---------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class ImageSpec:
    """One image of an archive: a multiscale group or a plain array.

    Attributes
    ----------
    root : str
        Archive root (absolute).
    path : str
        The image relative to ``root`` (``""`` for the root itself).
    datasets : tuple of str
        Array paths relative to ``root``, full resolution first.
    axes : tuple of str
        Axis names (``dim_0``... for a plain array without dimension names).
    axis_types : tuple of str or None
        OME-NGFF axis types (``time``, ``channel``, ``space``) or None.
    units : tuple of str or None
        Units per axis, None where unknown.
    scale, translate : tuple of float
        Physical scale and offset of the full-resolution level, per axis.
    channel_axis : int or None
        Index of the channel axis.
    channel_names, channel_colors : tuple of str
        From ``omero`` metadata (may be empty).
    channel_windows : tuple of (float, float) or None
        Display range per channel from ``omero`` metadata.
    name : str
        Display name.
    """

    root: str
    path: str
    datasets: tuple[str, ...]
    axes: tuple[str, ...]
    axis_types: tuple[str | None, ...]
    units: tuple[str | None, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    channel_axis: int | None
    channel_names: tuple[str, ...] = ()
    channel_colors: tuple[str, ...] = ()
    channel_windows: tuple[tuple[float, float] | None, ...] = ()
    name: str = ""

    @property
    def multiscale(self) -> bool:
        return len(self.datasets) > 1

    @property
    def ndim(self) -> int:
        return len(self.axes)


def archive_root(path: str | os.PathLike) -> Path:
    """``path`` as an absolute path (``~`` expanded): the form every local spec keeps."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def read_image_spec(root: str | os.PathLike | ArchiveStore, path: str = "") -> ImageSpec:
    """Describe the image at ``root/path``: an OME-NGFF multiscale group or a plain array.

    Raises
    ------
    OpenError
        When there is no image there (a plate, a well, a plain group, nothing).
    """
    store = open_store(root)
    directory = store.where(path)
    try:
        kind = node_kind_in(store, path)
    except LayoutError as exc:
        raise OpenError(str(exc)) from None
    name = path.rpartition("/")[2] if path else store.name
    if kind is None:
        raise OpenError(f"{directory} is not a Zarr array or group (no metadata in it yet?)")
    if kind[0] == "array":
        ndim, names = array_ndim_and_names(store, path)
        axes = names or tuple(f"dim_{i}" for i in range(ndim))
        channel = axes.index("c") if "c" in axes else None
        return ImageSpec(
            root=store.root,
            path=path,
            datasets=(path,),
            axes=axes,
            axis_types=(None,) * ndim,
            units=(None,) * ndim,
            scale=(1.0,) * ndim,
            translate=(0.0,) * ndim,
            channel_axis=channel if names else None,
            name=name,
        )
    attrs = node_attributes_in(store, path)
    ms = ome.first_multiscale(attrs)
    if ms is None:
        if ome.PLATE in attrs:
            raise OpenError(f"{directory} is an HCS plate; choose a well and a field")
        if ome.WELL in attrs:
            raise OpenError(f"{directory} is a well of an HCS plate; choose a field")
        raise OpenError(f"{directory} is a Zarr group without an OME-NGFF image")
    datasets = ome.dataset_entries(ms)
    if not datasets:
        raise OpenError(f"{directory}: OME-NGFF multiscales lists no datasets")
    first = _join(path, str(datasets[0][ome.PATH]))
    try:
        ndim, _names = array_ndim_and_names(store, first)
    except (FileNotFoundError, LayoutError):
        where = store.where(first)
        raise OpenError(f"{where}: the full-resolution array is not there (yet)") from None
    axes, types, units = ome.read_axes(ms, ndim)
    scale, translate = ome.full_resolution_transform(ms, ndim)
    channel = ome.channel_axis(axes, types)
    names, colors, windows = ome.read_omero(attrs)
    # Only the levels that exist (a copy may not have all of them yet).
    present = []
    for d in datasets:
        rel = _join(path, str(d[ome.PATH]))
        if node_kind_in(store, rel) is None:
            break
        present.append(rel)
    return ImageSpec(
        root=store.root,
        path=path,
        datasets=tuple(present),
        axes=axes,
        axis_types=types,
        units=units,
        scale=tuple(scale),
        translate=tuple(translate),
        channel_axis=channel,
        channel_names=names,
        channel_colors=colors,
        channel_windows=windows,
        name=str(ms.get(ome.NAME) or name),
    )


@dataclass
class ArchiveInfo:
    """What an archive holds, for choosing what to show.

    Attributes
    ----------
    kind : str
        ``array``, ``multiscale``, ``plate``, ``well``, ``group`` or ``missing``.
    images : list of str
        Image paths (multiscale groups or plain arrays), relative to the root.
    wells : dict
        For a plate: well path (``"A/1"``) -> its field image paths (``"A/1/0"``...).
    """

    kind: str
    images: list[str] = field(default_factory=list)
    wells: dict[str, list[str]] = field(default_factory=dict)


def _well_fields(store: ArchiveStore, well: str) -> list[str]:
    try:
        attrs = node_attributes_in(store, well)
    except (OSError, LayoutError):
        return []
    return [_join(well, image) for image in ome.well_image_paths(attrs)]


def inspect_archive(root: str | os.PathLike | ArchiveStore) -> ArchiveInfo:
    """Read the metadata of the archive at ``root`` and list what can be shown.

    Reads metadata files only (never a chunk directory).
    """
    store = open_store(root)
    try:
        kind = node_kind_in(store, "")
    except (LayoutError, OSError) as exc:
        raise OpenError(str(exc)) from None
    if kind is None:
        return ArchiveInfo("missing")
    if kind[0] == "array":
        return ArchiveInfo("array", [""])
    attrs = node_attributes_in(store, "")
    if isinstance(attrs.get(ome.MULTISCALES), list):
        return ArchiveInfo("multiscale", [""])
    plate_wells = ome.plate_well_paths(attrs)
    if plate_wells is not None:
        wells = {w: _well_fields(store, w) for w in plate_wells}
        images = [f for fields in wells.values() for f in fields]
        return ArchiveInfo("plate", images, wells)
    if isinstance(attrs.get(ome.WELL), dict):
        return ArchiveInfo("well", _well_fields(store, ""))
    # A plain group: every multiscale image and every array not part of one.
    images: list[str] = []
    ms_groups: set[str] = set()
    for array in find_array_paths(store):
        parent = array.rpartition("/")[0]
        if parent in ms_groups:
            continue
        try:
            if parent != array and isinstance(
                node_attributes_in(store, parent).get(ome.MULTISCALES), list
            ):
                ms_groups.add(parent)
                images.append(parent)
                continue
        except (OSError, LayoutError):
            pass
        images.append(array)
    return ArchiveInfo("group", images)


def choose_image(
    info: ArchiveInfo, *, well: str | None = None, field: int | str | None = None
) -> list[str]:
    """Image paths to open for ``info``: one field of one well of a plate, else every image."""
    if info.kind == "plate":
        if not info.wells:
            raise OpenError("the plate lists no wells")
        w = well if well is not None else next(iter(info.wells))
        if w not in info.wells:
            raise OpenError(f"the plate has no well {w!r}; wells: {', '.join(info.wells)}")
        fields = info.wells[w]
        if not fields:
            raise OpenError(f"well {w} has no field images (yet)")
        return [_pick_field(fields, field)]
    if info.kind == "well":
        if not info.images:
            raise OpenError("the well lists no field images")
        return [_pick_field(info.images, field)]
    return list(info.images)


def _pick_field(fields: list[str], field: int | str | None) -> str:
    if field is None:
        return fields[0]
    if isinstance(field, int):
        if not 0 <= field < len(fields):
            raise OpenError(f"there is no field {field}; the well has {len(fields)}")
        return fields[field]
    for f in fields:
        if f == field or f.rpartition("/")[2] == field:
            return f
    raise OpenError(f"there is no field {field!r}")


# ---------------------------------------------------------------------------------- arrays
def dask_chunks(
    shape: Sequence[int], chunks: Sequence[int], itemsize: int, target: int = DASK_CHUNK_BYTES
) -> tuple[int, ...]:
    """Dask chunks: the file chunks, grown along the last two axes up to ``target`` bytes.

    A displayed plane then is one dask task, and zarr reads its chunk files concurrently.
    """
    out = [max(1, min(int(c), int(s))) for c, s in zip(chunks, shape, strict=True)]
    for axis in range(len(out) - 1, max(len(out) - 3, -1), -1):
        size = math.prod(out) * itemsize
        if size >= target or shape[axis] <= out[axis]:
            if shape[axis] <= out[axis]:
                continue
            break
        grown = min(int(shape[axis]), out[axis] * max(1, target // size))
        if grown < shape[axis]:
            grown = max(out[axis], grown // out[axis] * out[axis])
        out[axis] = grown
        if grown < shape[axis]:
            break
    return tuple(out)


def open_array(root: str | os.PathLike | ArchiveStore, path: str):
    """A lazy dask array over the Zarr array ``root/path`` (reads its metadata only).

    ``root`` is a folder or an ``s3://`` URL; the store chooses the reader
    (`ArchiveStore.open_array`). Each call gives new dask keys, so a cache never serves
    data older than the call.
    """
    import dask.array as da

    store = open_store(root)
    try:
        array, file_chunks = store.open_array(path)
    except OpenError:
        raise
    except Exception as exc:  # zarr and tensorstore raise several kinds; the user needs one line
        raise OpenError(f"cannot open the Zarr array {store.where(path)}: {exc}") from None
    chunks = dask_chunks(array.shape, file_chunks, array.dtype.itemsize)
    return da.from_array(
        array, chunks=chunks, name=False, asarray=True, fancy=False, lock=False, inline_array=True
    )


def open_image(spec: ImageSpec) -> list:
    """Lazy arrays of every present level of ``spec`` (full resolution first).

    Levels whose shape does not shrink (a level still being created) are dropped.
    """
    arrays = []
    for rel in spec.datasets:
        try:
            a = open_array(spec.root, rel)
        except OpenError:
            if not arrays:
                raise
            break
        if arrays and a.ndim != arrays[0].ndim:
            break
        arrays.append(a)
    return arrays


def estimate_contrast(
    levels: Sequence, max_bytes: int = CONTRAST_SAMPLE_BYTES
) -> tuple[float, float] | None:
    """Contrast limits from the data: min and max of a few planes of the lowest level.

    What napari does for an in-memory image (min and max; bottom, middle and top planes of
    a big one), bounded for a lazy archive: only the lowest resolution level is read, all of
    it when it is at most ``max_bytes``, else the first, middle and last planes and the
    middle plane of the first index of the leading axis (the first timepoint: the one a live
    acquisition surely wrote), each cropped around its center to fit the budget. Planes of
    one value only (chunks not written yet read as the fill value) do not count.

    Parameters
    ----------
    levels : sequence of array
        Lazy (dask) arrays, full resolution first; the last one is read.
    max_bytes : int
        At most this many bytes of pixels are sampled (the reads are whole chunks, or inner
        chunks of a shard, around them).

    Returns
    -------
    tuple of float or None
        ``(min, max)`` with ``min < max``; None when the sample holds one value only (nothing
        written yet) or the dtype has no useful range (bool, complex).
    """
    level = levels[-1]
    dtype = np.dtype(level.dtype)
    if dtype == np.bool_ or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        return None
    if level.size == 0:
        return None
    if level.ndim < 2:
        level = level.reshape((1, -1))
    if level.nbytes <= max_bytes:
        samples = [level]
    else:
        lead = level.shape[:-2]
        middle = tuple(n // 2 for n in lead)
        planes = dict.fromkeys(  # ordered and without repeats (a short leading axis)
            [(0,) * len(lead), middle, tuple(n - 1 for n in lead), (0, *middle[1:])[: len(lead)]]
        )
        # A centered square window of each plane that fits its share of the budget.
        side = max(1, math.isqrt(max_bytes // len(planes) // dtype.itemsize))
        starts = [max(0, (n - side) // 2) for n in level.shape[-2:]]
        window = tuple(slice(start, start + side) for start in starts)
        samples = [level[plane + window] for plane in planes]
    lo, hi = math.inf, -math.inf
    for sample in samples:
        values = np.asarray(sample).reshape((-1, math.prod(sample.shape[-2:])))
        if np.issubdtype(dtype, np.floating):
            values = np.where(np.isfinite(values), values, np.nan)
            with warnings.catch_warnings():  # planes of NaN only: "All-NaN slice"
                warnings.simplefilter("ignore", RuntimeWarning)
                low, high = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
        else:
            low, high = values.min(axis=1), values.max(axis=1)
        written = low < high  # False for NaN too
        if written.any():
            lo = min(lo, float(low[written].min()))
            hi = max(hi, float(high[written].max()))
    return (lo, hi) if lo < hi else None

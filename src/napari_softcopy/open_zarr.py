"""Lazy napari layer data for a Zarr archive: plain arrays, OME-NGFF images, HCS plates.

Qt-free and napari-free: everything here returns plain ``(data, kwargs, layer_type)`` tuples
(napari's *LayerData*) built on dask arrays over tensorstore (zarr-python as a fallback).
Opening reads metadata only; no chunk is read until napari displays it. The reader
(`napari_softcopy._reader`), the widget's "Open destination", "Open source beside it" and
"Difference", and the sample data all build their layers here.

Every layer carries ``metadata["softcopy"]``, a small dict (see `LayerSource`) from which
`reopen_data` rebuilds the layer's data later: the widget does that while a copy runs, so new
timepoints appear (the data get new dask keys, so no cached chunk hides new data).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .layout import LayoutError, find_arrays, node_kind, read_json

LayerData = tuple[Any, dict[str, Any], str]

#: Bytes of pixels of the lowest resolution level sampled at most to estimate a layer's
#: contrast limits.
CONTRAST_SAMPLE_BYTES = 4 * 2**20
#: Colors of channels without OME-NGFF ``omero`` metadata (napari colormap names).
DEFAULT_COLORMAPS = {1: ["gray"], 2: ["magenta", "green"]}
MANY_COLORMAPS = ["cyan", "magenta", "yellow", "red", "green", "blue"]
#: Grow a dask chunk along the trailing (y, x) axes up to this many bytes.
DASK_CHUNK_BYTES = 16 * 2**20
#: Colormap of difference layers (negative: destination below source).
DIFFERENCE_COLORMAP = "PiYG"


class OpenError(ValueError):
    """The path cannot be shown: one line naming the path and what to do."""


# ---------------------------------------------------------------------------------- metadata
def node_attributes(directory: str | os.PathLike) -> dict[str, Any]:
    """User attributes of the Zarr node at ``directory`` ({} when none).

    OME-NGFF 0.5 keeps its metadata under ``attributes["ome"]``; 0.4 at the top of
    ``.zattrs``. This returns the OME part when there is one, so callers see ``multiscales``,
    ``plate``, ``well`` and ``omero`` at the top in both versions.
    """
    d = Path(directory)
    attrs: dict[str, Any] = {}
    v3 = d / "zarr.json"
    if v3.is_file():
        attrs = read_json(v3).get("attributes") or {}
    elif (d / ".zattrs").is_file():
        attrs = read_json(d / ".zattrs")
    if isinstance(attrs.get("ome"), dict):
        return attrs["ome"]
    return attrs if isinstance(attrs, dict) else {}


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


def _root(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _array_meta(directory: Path) -> dict[str, Any]:
    v3 = directory / "zarr.json"
    if v3.is_file():
        return read_json(v3)
    return read_json(directory / ".zarray")


def _array_ndim_and_names(directory: Path) -> tuple[int, tuple[str, ...] | None]:
    meta = _array_meta(directory)
    ndim = len(meta.get("shape") or [])
    names = meta.get("dimension_names")
    if isinstance(names, list) and len(names) == ndim and all(isinstance(n, str) for n in names):
        return ndim, tuple(names)
    return ndim, None


def _axes_of(multiscale: dict[str, Any], ndim: int) -> tuple[tuple[str, ...], tuple, tuple]:
    raw = multiscale.get("axes")
    names: list[str] = []
    types: list[str | None] = []
    units: list[str | None] = []
    if isinstance(raw, list) and len(raw) == ndim:
        for axis in raw:
            if isinstance(axis, dict):  # 0.4+
                names.append(str(axis.get("name", f"dim_{len(names)}")))
                types.append(axis.get("type"))
                units.append(axis.get("unit"))
            else:  # 0.3: a list of names
                names.append(str(axis))
                types.append("channel" if axis == "c" else ("time" if axis == "t" else None))
                units.append(None)
    else:  # 0.1/0.2 or broken: assume the usual t, c, z, y, x tail
        names = list(("t", "c", "z", "y", "x")[-ndim:]) if ndim <= 5 else []
        names = names or [f"dim_{i}" for i in range(ndim)]
        types = [{"t": "time", "c": "channel"}.get(n, "space") for n in names]
        units = [None] * ndim
    return tuple(names), tuple(types), tuple(units)


def _transforms(items: Any, ndim: int) -> tuple[list[float], list[float]]:
    scale, translate = [1.0] * ndim, [0.0] * ndim
    for t in items or []:
        if not isinstance(t, dict):
            continue
        if (
            t.get("type") == "scale"
            and isinstance(t.get("scale"), list)
            and len(t["scale"]) == ndim
        ):
            scale = [float(s) for s in t["scale"]]
        elif (
            t.get("type") == "translation"
            and isinstance(t.get("translation"), list)
            and len(t["translation"]) == ndim
        ):
            translate = [float(s) for s in t["translation"]]
    return scale, translate


def _omero(attrs: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], tuple]:
    channels = (attrs.get("omero") or {}).get("channels")
    if not isinstance(channels, list):
        return (), (), ()
    names, colors, windows = [], [], []
    for i, ch in enumerate(channels):
        ch = ch if isinstance(ch, dict) else {}
        names.append(str(ch.get("label") or f"c{i}"))
        color = ch.get("color")
        colors.append(f"#{color}" if isinstance(color, str) and len(color) == 6 else "")
        win = ch.get("window") or {}
        try:
            windows.append((float(win["start"]), float(win["end"])))
        except (KeyError, TypeError, ValueError):
            windows.append(None)
    return tuple(names), tuple(colors), tuple(windows)


def read_image_spec(root: str | os.PathLike, path: str = "") -> ImageSpec:
    """Describe the image at ``root/path``: an OME-NGFF multiscale group or a plain array.

    Raises
    ------
    OpenError
        When there is no image there (a plate, a well, a plain group, nothing).
    """
    base = _root(root)
    directory = base / path if path else base
    try:
        kind = node_kind(directory)
    except LayoutError as exc:
        raise OpenError(str(exc)) from None
    name = Path(path).name if path else base.name
    if kind is None:
        raise OpenError(f"{directory} is not a Zarr array or group (no metadata in it yet?)")
    if kind[0] == "array":
        ndim, names = _array_ndim_and_names(directory)
        axes = names or tuple(f"dim_{i}" for i in range(ndim))
        channel = axes.index("c") if "c" in axes else None
        return ImageSpec(
            root=os.fspath(base),
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
    attrs = node_attributes(directory)
    multiscales = attrs.get("multiscales")
    if not (isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict)):
        if "plate" in attrs:
            raise OpenError(f"{directory} is an HCS plate; choose a well and a field")
        if "well" in attrs:
            raise OpenError(f"{directory} is a well of an HCS plate; choose a field")
        raise OpenError(f"{directory} is a Zarr group without an OME-NGFF image")
    ms = multiscales[0]
    datasets = [d for d in ms.get("datasets") or [] if isinstance(d, dict) and "path" in d]
    if not datasets:
        raise OpenError(f"{directory}: OME-NGFF multiscales lists no datasets")
    first = directory / str(datasets[0]["path"])
    try:
        ndim, _names = _array_ndim_and_names(first)
    except (FileNotFoundError, LayoutError):
        raise OpenError(f"{first}: the full-resolution array is not there (yet)") from None
    axes, types, units = _axes_of(ms, ndim)
    scale, translate = _transforms(datasets[0].get("coordinateTransformations"), ndim)
    g_scale, g_translate = _transforms(ms.get("coordinateTransformations"), ndim)
    scale = [s * g for s, g in zip(scale, g_scale, strict=True)]
    translate = [t * g + o for t, g, o in zip(translate, g_scale, g_translate, strict=True)]
    channel = types.index("channel") if "channel" in types else None
    if channel is None and "c" in axes:
        channel = axes.index("c")
    names, colors, windows = _omero(attrs)
    # Only the levels that exist (a copy may not have all of them yet).
    present = []
    for d in datasets:
        rel = _join(path, str(d["path"]))
        if node_kind(base / rel) is None:
            break
        present.append(rel)
    return ImageSpec(
        root=os.fspath(base),
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
        name=str(ms.get("name") or name),
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


def _well_fields(base: Path, well: str) -> list[str]:
    try:
        attrs = node_attributes(base / well)
    except (OSError, LayoutError):
        return []
    images = (attrs.get("well") or {}).get("images") or []
    return [_join(well, str(i["path"])) for i in images if isinstance(i, dict) and "path" in i]


def inspect_archive(root: str | os.PathLike) -> ArchiveInfo:
    """Read the metadata of the archive at ``root`` and list what can be shown.

    Reads metadata files only (never a chunk directory).
    """
    base = _root(root)
    try:
        kind = node_kind(base)
    except (LayoutError, OSError) as exc:
        raise OpenError(str(exc)) from None
    if kind is None:
        return ArchiveInfo("missing")
    if kind[0] == "array":
        return ArchiveInfo("array", [""])
    attrs = node_attributes(base)
    if isinstance(attrs.get("multiscales"), list):
        return ArchiveInfo("multiscale", [""])
    if isinstance(attrs.get("plate"), dict):
        wells: dict[str, list[str]] = {}
        for w in attrs["plate"].get("wells") or []:
            if isinstance(w, dict) and "path" in w:
                wells[str(w["path"])] = _well_fields(base, str(w["path"]))
        images = [f for fields in wells.values() for f in fields]
        return ArchiveInfo("plate", images, wells)
    if isinstance(attrs.get("well"), dict):
        return ArchiveInfo("well", _well_fields(base, ""))
    # A plain group: every multiscale image and every array not part of one.
    images: list[str] = []
    ms_groups: set[str] = set()
    for array in find_arrays(base, strict=False):
        parent = array.path.rpartition("/")[0]
        if parent in ms_groups:
            continue
        try:
            if parent != array.path and isinstance(
                node_attributes(base / parent if parent else base).get("multiscales"), list
            ):
                ms_groups.add(parent)
                images.append(parent)
                continue
        except (OSError, LayoutError):
            pass
        images.append(array.path)
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


class _TensorStoreArray:
    """The minimal array interface dask needs, over a tensorstore array (reads on index)."""

    def __init__(self, store) -> None:
        self._store = store
        self.shape = tuple(int(n) for n in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in store.chunk_layout.write_chunk.shape)

    def __getitem__(self, key):
        return self._store[key].read().result()


def _open_tensorstore(directory: Path) -> _TensorStoreArray:
    import tensorstore as ts

    driver = "zarr3" if (directory / "zarr.json").is_file() else "zarr"
    spec = {"driver": driver, "kvstore": {"driver": "file", "path": os.fspath(directory) + "/"}}
    return _TensorStoreArray(ts.open(spec, read=True, open=True).result())


def _open_zarr_python(base: Path, path: str):
    import zarr
    from zarr.storage import LocalStore

    z = zarr.open_array(
        store=LocalStore(os.fspath(base), read_only=True), path=path or "", mode="r"
    )
    return z, getattr(z, "shards", None) or z.chunks


def open_array(root: str | os.PathLike, path: str):
    """A lazy dask array over the Zarr array ``root/path`` (reads its metadata only).

    Chunks are read through tensorstore (several times faster than zarr-python for a plane
    of many small chunk files, and it releases the GIL while it reads); zarr-python is the
    fallback for what tensorstore cannot open. Each call gives new dask keys, so a cache
    never serves data older than the call.
    """
    import dask.array as da

    base = _root(root)
    directory = base / path if path else base
    try:
        array = _open_tensorstore(directory)
        file_chunks = array.chunks
    except Exception:  # e.g. a codec tensorstore lacks; zarr-python says what is wrong
        try:
            array, file_chunks = _open_zarr_python(base, path)
        except Exception as exc:  # zarr raises several kinds; the user needs one line
            raise OpenError(f"cannot open the Zarr array {directory}: {exc}") from None
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


def difference_dtype(dtype: np.dtype) -> np.dtype:
    """A signed dtype that holds ``a - b`` of two ``dtype`` arrays without overflow."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.int8)
    if np.issubdtype(dtype, np.integer):
        if dtype.itemsize >= 8:
            return np.dtype(np.float64)
        return np.dtype(f"int{dtype.itemsize * 16}")
    if np.issubdtype(dtype, np.floating):
        return np.result_type(dtype, np.float32)
    if np.issubdtype(dtype, np.complexfloating):
        return dtype
    raise OpenError(f"cannot subtract arrays of dtype {dtype}")


def difference(destination, source):
    """``destination - source`` lazily in a signed dtype, over the common shape."""
    dtype = difference_dtype(np.result_type(destination.dtype, source.dtype))
    common = tuple(min(a, b) for a, b in zip(destination.shape, source.shape, strict=True))
    window = tuple(slice(0, n) for n in common)
    return destination[window].astype(dtype) - source[window].astype(dtype)


# ---------------------------------------------------------------------------------- layers
@dataclass
class LayerSource:
    """What a layer shows, kept in ``layer.metadata["softcopy"]`` (plain JSON values).

    Attributes
    ----------
    root : str
        Archive root.
    image : str
        Image path in the archive.
    role : str
        ``image`` (opened by the reader), ``destination``, ``source``, ``difference``.
    channel : int or None
        Channel index when the image was split into one layer per channel.
    channel_axis : int or None
        Axis that was split.
    other_root : str or None
        The source archive of a ``difference`` layer.
    """

    root: str
    image: str
    role: str = "image"
    channel: int | None = None
    channel_axis: int | None = None
    other_root: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> LayerSource | None:
        d = (metadata or {}).get("softcopy")
        if not isinstance(d, dict):
            return None
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError:
            return None


def _take(arrays: list, axis: int | None, index: int | None) -> list:
    if axis is None or index is None:
        return arrays
    key = (slice(None),) * axis + (index,)
    return [a[key] for a in arrays]


def _drop(values: Sequence, axis: int | None) -> list:
    return [v for i, v in enumerate(values) if i != axis]


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


def _valid_window(window: tuple[float, float] | None) -> tuple[float, float] | None:
    return window if window is not None and window[1] > window[0] else None


def _dtype_range(dtype: np.dtype) -> tuple[float, float]:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return (0.0, 1.0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return (float(info.min), float(info.max))
    return (0.0, 1.0)


def napari_units(units: Sequence[str | None]) -> list[str] | None:
    """Units napari accepts for these axes (``pixel`` where unknown), or None."""
    if not any(units):
        return None
    try:
        import pint

        registry = pint.get_application_registry()
        out = []
        for u in units:
            out.append("pixel" if not u else str(registry.Unit(u)))
        return out
    except Exception:  # unknown unit strings: leave units out rather than fail
        return None


def image_layers(
    spec: ImageSpec,
    *,
    role: str = "image",
    name: str | None = None,
    arrays: list | None = None,
    contrast_from_data: bool = True,
) -> list[LayerData]:
    """Layer data for one image: one layer per channel when it has a channel axis.

    Contrast limits come from the ``omero`` window of a channel; without one, from a few
    planes of the lowest resolution level (`estimate_contrast`) unless ``contrast_from_data``
    is False; when that reads nothing but the fill value, the dtype range stands in and the
    layer's metadata says ``contrast_pending`` (the Qt side then tries displayed slices).
    """
    arrays = arrays if arrays is not None else open_image(spec)
    if not arrays:
        raise OpenError(f"{spec.root}/{spec.path}: no array to show yet")
    base = name or spec.name or Path(spec.root).name
    ca = spec.channel_axis
    n_channels = int(arrays[0].shape[ca]) if ca is not None else 1
    scale, translate = _drop(spec.scale, ca), _drop(spec.translate, ca)
    labels = _drop(spec.axes, ca)
    units = napari_units(_drop(spec.units, ca))
    if ca is not None:
        colormaps = DEFAULT_COLORMAPS.get(n_channels) or [
            MANY_COLORMAPS[i % len(MANY_COLORMAPS)] for i in range(n_channels)
        ]
    else:
        colormaps = ["gray"]
    layers: list[LayerData] = []
    for c in range(n_channels):
        channel = c if ca is not None else None
        data = _take(arrays, ca, channel)
        source = LayerSource(spec.root, spec.path, role, channel, ca)
        label = ""
        if ca is not None and (n_channels > 1 or c < len(spec.channel_names)):
            label = spec.channel_names[c] if c < len(spec.channel_names) else f"c{c}"
            label = f" [{label}]"
        window = _valid_window(spec.channel_windows[c] if c < len(spec.channel_windows) else None)
        if window is None and contrast_from_data:
            window = estimate_contrast(data)
        color = spec.channel_colors[c] if c < len(spec.channel_colors) else ""
        kwargs: dict[str, Any] = {
            "name": f"{base}{label}",
            "scale": scale,
            "translate": translate,
            "axis_labels": labels,
            "contrast_limits": window or _dtype_range(data[0].dtype),
            "multiscale": len(data) > 1,
            # contrast_pending: the dtype range stands in until the Qt side sets limits
            # from the first displayed slice that is not all fill value.
            "metadata": {"softcopy": source.to_dict() | {"contrast_pending": window is None}},
            "blending": "additive" if ca is not None else "translucent",
            "colormap": _colormap_of(color) or colormaps[c],
        }
        if units:
            kwargs["units"] = units
        layers.append((data if len(data) > 1 else data[0], kwargs, "image"))
    return layers


def _colormap_of(color: str):
    if not color:
        return None
    try:
        rgb = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    except ValueError:
        return None
    if rgb == [1.0, 1.0, 1.0]:
        return "gray"
    return {"colors": [[0, 0, 0, 1], [*rgb, 1]], "name": f"omero{color}"}


def open_layers(
    path: str | os.PathLike,
    *,
    well: str | None = None,
    field: int | str | None = None,
    role: str = "image",
    name: str | None = None,
) -> list[LayerData]:
    """Lazy layers for the Zarr archive at ``path``.

    A plain array or an OME-NGFF image gives its layers; an HCS plate (or a well) gives one
    field of one well (the first ones unless ``well`` and ``field`` say otherwise); any other
    group gives every image in it.

    Raises
    ------
    OpenError
        When ``path`` holds nothing to show.
    """
    base = _root(path)
    info = inspect_archive(base)
    if info.kind == "missing":
        raise OpenError(f"{base} is not a Zarr archive (yet): no zarr.json, .zarray or .zgroup")
    images = choose_image(info, well=well, field=field)
    if not images:
        raise OpenError(f"{base} holds no array to show (yet)")
    layers: list[LayerData] = []
    for image in images:
        spec = read_image_spec(base, image)
        label = name or base.name.removesuffix(".zarr")
        if image:
            label = f"{label}/{image}"
        layers.extend(image_layers(spec, role=role, name=label))
    return layers


def difference_layers(
    destination: str | os.PathLike,
    source: str | os.PathLike,
    image: str = "",
    *,
    name: str | None = None,
) -> list[LayerData]:
    """Lazy ``destination - source`` layers of one image (zero where identical)."""
    dst_spec = read_image_spec(destination, image)
    src_spec = read_image_spec(source, image)
    dst_arrays, src_arrays = open_image(dst_spec), open_image(src_spec)
    n = min(len(dst_arrays), len(src_arrays))
    arrays = [difference(d, s) for d, s in zip(dst_arrays[:n], src_arrays[:n], strict=True)]
    label = name or f"difference {Path(dst_spec.root).name.removesuffix('.zarr')}"
    if image:
        label = f"{label}/{image}"
    # No estimate: it would read both trees; symmetric limits are set from the slice shown.
    layers = image_layers(
        dst_spec, role="difference", name=label, arrays=arrays, contrast_from_data=False
    )
    for _data, kwargs, _kind in layers:
        kwargs["colormap"] = DIFFERENCE_COLORMAP
        kwargs["contrast_limits"] = (-1.0, 1.0)
        kwargs["blending"] = "translucent"
        kwargs["metadata"]["softcopy"]["other_root"] = os.fspath(_root(source))
    return layers


def reopen_data(source: LayerSource):
    """Fresh lazy data for a layer described by ``source`` (same shape rules as at opening).

    Returns a single array or a list of levels, as the layer was built.
    """
    spec = read_image_spec(source.root, source.image)
    arrays = open_image(spec)
    if source.role == "difference" and source.other_root:
        others = open_image(read_image_spec(source.other_root, source.image))
        n = min(len(arrays), len(others))
        arrays = [difference(d, s) for d, s in zip(arrays[:n], others[:n], strict=True)]
    arrays = _take(arrays, source.channel_axis, source.channel)
    return arrays if len(arrays) > 1 else arrays[0]


def shape_signature(data) -> str:
    """A short string that changes when a layer's data changes shape."""
    levels = data if isinstance(data, list | tuple) else [data]
    return json.dumps([list(a.shape) for a in levels])


#: Above this many chunk files under the displayed region, no signature is computed.
MAX_SIGNATURE_FILES = 4096


def view_signature(
    source: LayerSource,
    level: int,
    point: Sequence[int | None],
    *,
    max_files: int = MAX_SIGNATURE_FILES,
) -> tuple | None:
    """What a layer's displayed region depends on, cheaply: the arrays' shapes and the size
    and mtime of every chunk file under that region.

    Parameters
    ----------
    source : LayerSource
        The layer.
    level : int
        The resolution level napari displays.
    point : sequence of int or None
        Full-resolution index of the layer's non-displayed axes (the channel axis of a split
        image excluded); None for the displayed axes.
    max_files : int
        Give up (return None) above this many chunk files.

    Returns
    -------
    tuple or None
        Equal signatures mean the displayed region shows the same data; None when unknown.
    """
    from .layout import read_array

    roots = [source.root]
    if source.role == "difference" and source.other_root:
        roots.append(source.other_root)
    signature: list = []
    for root in roots:
        base = _root(root)
        spec = read_image_spec(base, source.image)
        layouts = [read_array(base / d if d else base, d) for d in spec.datasets]
        if not layouts or any(a is None for a in layouts):
            return None
        signature.append(tuple(a.shape for a in layouts))
        if level >= len(layouts):
            return None
        full = list(point)
        if source.channel_axis is not None:
            full.insert(source.channel_axis, source.channel)
        array, top = layouts[level], layouts[0]
        if len(full) != len(array.shape):
            return None
        ranges: list = []
        for axis, index in enumerate(full):
            if index is None:
                ranges.append(range(array.grid[axis]))
                continue
            scaled = int(index * array.shape[axis] / max(top.shape[axis], 1))
            scaled = min(max(scaled, 0), max(array.shape[axis] - 1, 0))
            ranges.append((scaled // array.chunks[axis],))
        if math.prod(len(r) for r in ranges) > max_files:
            return None
        stats = []
        for index in itertools.product(*ranges):
            try:
                st = os.stat(base / array.chunk_key(index))
                stats.append((st.st_size, st.st_mtime_ns))
            except OSError:
                stats.append(None)
        signature.append(tuple(stats))
    return tuple(signature)

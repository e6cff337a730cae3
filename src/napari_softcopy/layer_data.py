"""Lazy napari layer data for a Zarr archive: plain arrays, OME-NGFF images, HCS plates,
differences between two copies.

Qt-free and napari-free: everything here returns plain ``(data, kwargs, layer_type)`` tuples
(napari's *LayerData*) over the lazy arrays `napari_softcopy.open_zarr` reads: names,
colormaps, contrast limits, scale, translate, units, one layer per channel. The reader
(`napari_softcopy._reader`), the widget's "Open copy", "Open source" and
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .archive_store import ArchiveStore, open_store, root_name
from .open_zarr import (
    ImageSpec,
    OpenError,
    choose_image,
    estimate_contrast,
    inspect_archive,
    open_image,
    read_image_spec,
)
from .zarr_nodes import read_array_in

LayerData = tuple[Any, dict[str, Any], str]

#: Colors of channels without OME-NGFF ``omero`` metadata (napari colormap names).
DEFAULT_COLORMAPS = {1: ["gray"], 2: ["magenta", "green"]}
MANY_COLORMAPS = ["cyan", "magenta", "yellow", "red", "green", "blue"]
#: Colormap of difference layers (negative: destination below source).
DIFFERENCE_COLORMAP = "PiYG"


# ---------------------------------------------------------------------------------- differences
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
    path: str | os.PathLike | ArchiveStore,
    *,
    well: str | None = None,
    field: int | str | None = None,
    role: str = "image",
    name: str | None = None,
) -> list[LayerData]:
    """Lazy layers for the Zarr archive at ``path`` (a folder or an ``s3://`` URL).

    A plain array or an OME-NGFF image gives its layers; an HCS plate (or a well) gives one
    field of one well (the first ones unless ``well`` and ``field`` say otherwise); any other
    group gives every image in it.

    Raises
    ------
    OpenError
        When ``path`` holds nothing to show.
    """
    store = open_store(path)
    info = inspect_archive(store)
    if info.kind == "missing":
        raise OpenError(
            f"{store.root} is not a Zarr archive (yet): no zarr.json, .zarray or .zgroup"
        )
    images = choose_image(info, well=well, field=field)
    if not images:
        raise OpenError(f"{store.root} holds no array to show (yet)")
    layers: list[LayerData] = []
    for image in images:
        spec = read_image_spec(store, image)
        label = name or store.name.removesuffix(".zarr")
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
        kwargs["metadata"]["softcopy"]["other_root"] = root_name(source)
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
        (On S3 the chunk objects' sizes and ETags, from one listing of the prefix the
        displayed chunks share: `ArchiveStore.versions`.)
    """
    roots = [source.root]
    if source.role == "difference" and source.other_root:
        roots.append(source.other_root)
    signature: list = []
    for root in roots:
        store = open_store(root)
        spec = read_image_spec(store, source.image)
        layouts = [read_array_in(store, d) for d in spec.datasets]
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
        keys = [array.chunk_key(index) for index in itertools.product(*ranges)]
        versions = store.versions(keys, limit=4 * max_files)
        if versions is None:
            return None
        signature.append(tuple(versions))
    return tuple(signature)

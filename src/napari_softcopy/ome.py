"""OME-NGFF metadata: the one place that knows it, for writing (`simulate`) and reading
(`open_zarr`).

Two versions are written, each on its own Zarr format:

- **0.4 on Zarr v2**: the OME-NGFF keys (``multiscales``, ``plate``, ``well``, ``omero``) sit at
  the top of the group's ``.zattrs``, and ``multiscales``, ``plate`` and ``well`` each carry
  ``"version": "0.4"``.
- **0.5 on Zarr v3**: they sit under ``attributes["ome"]`` of the group's ``zarr.json``, which
  carries the one ``"version": "0.5"``; the entries carry none.

Reading accepts both, and older layouts as far as they are unambiguous: 0.3's axes as plain
names, 0.1/0.2's missing axes (then the usual ``t, c, z, y, x`` tail). Every key and axis
type is a constant here, used by the writers and the readers alike, so the two sides cannot
spell a field differently. The functions that write build plain dicts whose key order is the
order written to disk (`simulate`'s files are compared byte for byte).

Specification: https://ngff.openmicroscopy.org/0.4/ and https://ngff.openmicroscopy.org/0.5/.
This module imports neither Qt nor napari, and reads metadata files only (never a chunk).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .layout import read_json

# Keys of the group attributes.
OME = "ome"  # 0.5: everything below attributes["ome"]
VERSION = "version"
MULTISCALES = "multiscales"
PLATE = "plate"
WELL = "well"
OMERO = "omero"
# Keys inside them.
NAME = "name"
AXES = "axes"
DATASETS = "datasets"
PATH = "path"
TYPE = "type"
UNIT = "unit"
METADATA = "metadata"
TRANSFORMS = "coordinateTransformations"
SCALE = "scale"
TRANSLATION = "translation"
ROWS = "rows"
COLUMNS = "columns"
WELLS = "wells"
ROW_INDEX = "rowIndex"
COLUMN_INDEX = "columnIndex"
FIELD_COUNT = "field_count"
IMAGES = "images"
CHANNELS = "channels"
LABEL = "label"
COLOR = "color"
WINDOW = "window"

# Axis types.
TIME = "time"
CHANNEL = "channel"
SPACE = "space"
#: The type of an axis by its conventional name (every other name is spatial).
CONVENTIONAL_TYPES = {"t": TIME, "c": CHANNEL}
#: The axes assumed when the metadata name none (OME-NGFF 0.1/0.2): the tail of these.
CONVENTIONAL_AXES = ("t", "c", "z", "y", "x")
#: Units written for each axis type (channels have none).
DEFAULT_UNITS = {TIME: "second", SPACE: "micrometer"}

#: The OME-NGFF version written on each Zarr format.
VERSION_OF_ZARR_FORMAT = {2: "0.4", 3: "0.5"}


def version_for(zarr_format: int) -> str:
    """The OME-NGFF version written on Zarr ``zarr_format`` (``"0.4"`` on 2, ``"0.5"`` on 3)."""
    return VERSION_OF_ZARR_FORMAT[zarr_format]


# ---------------------------------------------------------------------------------- writing
def _versioned(version: str) -> dict[str, Any]:
    """The start of a 0.4 ``multiscales``/``plate``/``well`` entry (0.5 keeps it in ``ome``)."""
    return {VERSION: version} if version == "0.4" else {}


def wrap(version: str, content: dict[str, Any]) -> dict[str, Any]:
    """Group attributes holding ``content``: under ``ome`` (0.5) or at the top (0.4)."""
    if version == "0.5":
        return {OME: {VERSION: version, **content}}
    return content


def axes_metadata(names: Sequence[str]) -> list[dict[str, str]]:
    """OME-NGFF axes for conventionally named axes (``t``: time in seconds, ``c``: channel,
    anything else: space in micrometers)."""
    axes = []
    for name in names:
        kind = CONVENTIONAL_TYPES.get(name, SPACE)
        axis = {NAME: name, TYPE: kind}
        if kind in DEFAULT_UNITS:
            axis[UNIT] = DEFAULT_UNITS[kind]
        axes.append(axis)
    return axes


def multiscales_metadata(
    version: str,
    name: str,
    axis_names: Sequence[str],
    scales: Sequence[Sequence[float]],
    *,
    downscaling: str,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """The ``multiscales`` content of one image.

    Parameters
    ----------
    version : str
        ``"0.4"`` or ``"0.5"``.
    name : str
        The image's name.
    axis_names : sequence of str
        Conventional axis names (see `axes_metadata`).
    scales : sequence of sequence of float
        The ``scale`` transformation of each level, full resolution first; level ``i`` is the
        array at path ``str(i)``.
    downscaling : str
        The ``type`` of downscaling (``"mean"``, ``"gaussian"``...; ``"none"`` for one level).
    metadata : dict
        The ``metadata`` entry (how the levels were made).

    Returns
    -------
    dict
        ``{"multiscales": [...]}``, to be given to `wrap`.
    """
    entry: dict[str, Any] = _versioned(version)
    entry[NAME] = name
    entry[AXES] = axes_metadata(axis_names)
    entry[DATASETS] = [
        {PATH: str(level), TRANSFORMS: [{TYPE: SCALE, SCALE: list(scale)}]}
        for level, scale in enumerate(scales)
    ]
    entry[TYPE] = downscaling
    entry[METADATA] = metadata
    return {MULTISCALES: [entry]}


def plate_metadata(
    version: str, name: str, rows: Sequence[str], columns: Sequence[str], field_count: int
) -> dict[str, Any]:
    """The ``plate`` content of an HCS plate with a well at every row/column pair.

    Wells are listed row by row at ``"{row}/{column}"``; returns ``{"plate": {...}}``.
    """
    wells = []
    for ri, row in enumerate(rows):
        for ci, col in enumerate(columns):
            wells.append({PATH: f"{row}/{col}", ROW_INDEX: ri, COLUMN_INDEX: ci})
    plate = _versioned(version)
    plate.update(
        {
            NAME: name,
            ROWS: [{NAME: r} for r in rows],
            COLUMNS: [{NAME: c} for c in columns],
            WELLS: wells,
            FIELD_COUNT: field_count,
        }
    )
    return {PLATE: plate}


def well_metadata(version: str, fields: int) -> dict[str, Any]:
    """The ``well`` content of a well whose field images are at ``"0"``, ``"1"``..."""
    well = _versioned(version)
    well[IMAGES] = [{PATH: str(f)} for f in range(fields)]
    return {WELL: well}


def omero_metadata(
    channels: Sequence[tuple[str, str, tuple[float, float] | None]],
) -> dict[str, Any]:
    """The ``omero`` content: per channel its label, color (``RRGGBB``) and display window.

    Parameters
    ----------
    channels : sequence of (str, str, (float, float) or None)
        ``(label, color, (start, end))`` per channel, in channel order.
    """
    out = []
    for label, color, window in channels:
        channel: dict[str, Any] = {LABEL: label, COLOR: color}
        if window is not None:
            channel[WINDOW] = {"start": window[0], "end": window[1]}
        out.append(channel)
    return {OMERO: {CHANNELS: out}}


# ---------------------------------------------------------------------------------- reading
def unwrap(attributes: Any) -> dict[str, Any]:
    """The OME-NGFF part of a group's attributes: ``attributes["ome"]`` (0.5) or the top (0.4)."""
    if not isinstance(attributes, dict):
        return {}
    if isinstance(attributes.get(OME), dict):
        return attributes[OME]
    return attributes


def node_attributes(directory: str | os.PathLike) -> dict[str, Any]:
    """User attributes of the Zarr node at ``directory`` ({} when none), OME part unwrapped.

    Callers see ``multiscales``, ``plate``, ``well`` and ``omero`` at the top in both
    versions (see `unwrap`).
    """
    d = Path(directory)
    attrs: Any = {}
    v3 = d / "zarr.json"
    if v3.is_file():
        attrs = read_json(v3).get("attributes") or {}
    elif (d / ".zattrs").is_file():
        attrs = read_json(d / ".zattrs")
    return unwrap(attrs)


def first_multiscale(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The first ``multiscales`` entry (the one viewers show), or None."""
    multiscales = attrs.get(MULTISCALES)
    if isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict):
        return multiscales[0]
    return None


def dataset_entries(multiscale: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``datasets`` entries that name a path, full resolution first."""
    return [d for d in multiscale.get(DATASETS) or [] if isinstance(d, dict) and PATH in d]


def read_axes(
    multiscale: dict[str, Any], ndim: int
) -> tuple[tuple[str, ...], tuple[str | None, ...], tuple[str | None, ...]]:
    """Axis names, types and units of a multiscale image of ``ndim`` dimensions.

    0.4+ axes are dicts; 0.3's are names; without axes (0.1/0.2) or with a wrong count, the
    conventional ``t, c, z, y, x`` tail is assumed.
    """
    raw = multiscale.get(AXES)
    names: list[str] = []
    types: list[str | None] = []
    units: list[str | None] = []
    if isinstance(raw, list) and len(raw) == ndim:
        for axis in raw:
            if isinstance(axis, dict):  # 0.4+
                names.append(str(axis.get(NAME, f"dim_{len(names)}")))
                types.append(axis.get(TYPE))
                units.append(axis.get(UNIT))
            else:  # 0.3: a list of names; only t and c say their type
                names.append(str(axis))
                types.append(CONVENTIONAL_TYPES.get(axis) if isinstance(axis, str) else None)
                units.append(None)
    else:  # 0.1/0.2 or broken
        names = list(CONVENTIONAL_AXES[-ndim:]) if ndim <= len(CONVENTIONAL_AXES) else []
        names = names or [f"dim_{i}" for i in range(ndim)]
        types = [CONVENTIONAL_TYPES.get(n, SPACE) for n in names]
        units = [None] * ndim
    return tuple(names), tuple(types), tuple(units)


def read_transforms(items: Any, ndim: int) -> tuple[list[float], list[float]]:
    """Scale and translation of a ``coordinateTransformations`` list (identity if absent)."""
    scale, translate = [1.0] * ndim, [0.0] * ndim
    for t in items or []:
        if not isinstance(t, dict):
            continue
        if t.get(TYPE) == SCALE and isinstance(t.get(SCALE), list) and len(t[SCALE]) == ndim:
            scale = [float(s) for s in t[SCALE]]
        elif (
            t.get(TYPE) == TRANSLATION
            and isinstance(t.get(TRANSLATION), list)
            and len(t[TRANSLATION]) == ndim
        ):
            translate = [float(s) for s in t[TRANSLATION]]
    return scale, translate


def full_resolution_transform(
    multiscale: dict[str, Any], ndim: int
) -> tuple[list[float], list[float]]:
    """Physical scale and offset of the first dataset: its own transformations composed with
    the multiscale's (applied after them)."""
    datasets = dataset_entries(multiscale)
    first = datasets[0].get(TRANSFORMS) if datasets else None
    scale, translate = read_transforms(first, ndim)
    g_scale, g_translate = read_transforms(multiscale.get(TRANSFORMS), ndim)
    scale = [s * g for s, g in zip(scale, g_scale, strict=True)]
    translate = [t * g + o for t, g, o in zip(translate, g_scale, g_translate, strict=True)]
    return scale, translate


def channel_axis(names: Sequence[str], types: Sequence[str | None]) -> int | None:
    """Index of the channel axis: the one typed ``channel``, else the one named ``c``."""
    if CHANNEL in types:
        return list(types).index(CHANNEL)
    if "c" in names:
        return list(names).index("c")
    return None


def read_omero(
    attrs: dict[str, Any],
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[float, float] | None, ...]]:
    """Channel labels, colors (``#RRGGBB`` or ``""``) and windows from ``omero`` metadata."""
    channels = (attrs.get(OMERO) or {}).get(CHANNELS)
    if not isinstance(channels, list):
        return (), (), ()
    names, colors, windows = [], [], []
    for i, ch in enumerate(channels):
        ch = ch if isinstance(ch, dict) else {}
        names.append(str(ch.get(LABEL) or f"c{i}"))
        color = ch.get(COLOR)
        colors.append(f"#{color}" if isinstance(color, str) and len(color) == 6 else "")
        win = ch.get(WINDOW) or {}
        try:
            windows.append((float(win["start"]), float(win["end"])))
        except (KeyError, TypeError, ValueError):
            windows.append(None)
    return tuple(names), tuple(colors), tuple(windows)


def plate_well_paths(attrs: dict[str, Any]) -> list[str] | None:
    """Well paths (``"A/1"``...) of a plate's attributes; None when they describe no plate."""
    plate = attrs.get(PLATE)
    if not isinstance(plate, dict):
        return None
    return [str(w[PATH]) for w in plate.get(WELLS) or [] if isinstance(w, dict) and PATH in w]


def well_image_paths(attrs: dict[str, Any]) -> list[str]:
    """Field image paths of a well's attributes, relative to the well."""
    images = (attrs.get(WELL) or {}).get(IMAGES) or []
    return [str(i[PATH]) for i in images if isinstance(i, dict) and PATH in i]

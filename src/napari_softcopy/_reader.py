"""npe2 reader: Zarr archives (plain arrays, OME-NGFF images, one field of an HCS plate).

Thin on purpose: `napari_softcopy.open_zarr.open_layers` does the work, Qt-free.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .layout import LayoutError, node_kind
from .open_zarr import LayerData, OpenError, open_layers


def _zarr_root(path) -> str | None:
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path).rstrip("/") or "/"
    try:
        return path if os.path.isdir(path) and node_kind(Path(path)) is not None else None
    except (LayoutError, OSError):
        return None


def get_reader(path) -> Callable[..., list[LayerData]] | None:
    """Return a reader when ``path`` is a Zarr array or group directory, else None."""
    root = _zarr_root(path)
    if root is None:
        return None

    def read(_path) -> list[LayerData]:
        try:
            return open_layers(root)
        except OpenError as exc:
            raise ValueError(str(exc)) from None

    return read

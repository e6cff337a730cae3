"""npe2 reader: Zarr archives (plain arrays, OME-NGFF images, one field of an HCS plate).

Thin on purpose: `napari_softcopy.layer_data.open_layers` does the work, Qt-free.

The manifest claims ``*.zarr`` and directories only: napari asks "Choose reader" whenever
two plugins claim a path, so a broader pattern would put that question in front of every
``.png`` the user opens. npe2 offers any directory to every reader that accepts directories;
`get_reader` declines those that hold no Zarr metadata file.

An ``s3://bucket/prefix.zarr`` URL (napari's ``viewer.open`` and its command line pass it
as given; it matches ``*.zarr``) is read with the S3 settings a copy uses
(`napari_softcopy.archive_store`): claimed when a Zarr metadata object is there, or when
the server cannot be asked (wrong keys, no server: then reading says why in one line,
rather than napari's "no plugin found"); declined when the server answers that nothing is
there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .archive_store import StoreError, open_store
from .destinations.s3_settings import is_s3_url
from .layer_data import LayerData, open_layers
from .layout import NODE_NAMES
from .open_zarr import OpenError


def _s3_zarr_root(url: str) -> str | None:
    try:
        store = open_store(url)
        for name in NODE_NAMES:
            if store.read_json(name) is not None:
                return store.root
    except StoreError:
        return url  # (claimed: reading it says what is wrong)
    except ValueError:  # corrupt metadata (LayoutError): ours to say, as for a folder
        return url
    return None


def _zarr_root(path) -> str | None:
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if is_s3_url(path):
        return _s3_zarr_root(path)
    path = os.fspath(path).rstrip("/") or "/"
    # Existence only: corrupt metadata is still ours to read, so the user gets our one-line
    # error naming the file rather than napari's "no plugin found".
    if any((Path(path) / name).is_file() for name in NODE_NAMES):
        return path
    return None


def get_reader(path) -> Callable[..., list[LayerData]] | None:
    """Return a reader when ``path`` is a Zarr array or group (a directory or an ``s3://``
    URL), else None.

    Parameters
    ----------
    path : str or list of str
        What napari opens; a list is claimed only when it holds one path.

    Returns
    -------
    callable or None
        ``read(path) -> list of LayerData``; it raises ValueError with one line naming the
        path and what is wrong (napari shows it) when the archive holds nothing to show.
    """
    root = _zarr_root(path)
    if root is None:
        return None

    def read(_path) -> list[LayerData]:
        try:
            return open_layers(root)
        except OpenError as exc:
            raise ValueError(str(exc)) from None

    return read

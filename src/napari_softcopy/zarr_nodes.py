"""What an archive's Zarr metadata says, read through an `ArchiveStore` (a folder or an
``s3://`` prefix): a node's kind, its attributes (the OME part unwrapped), an array's
dimensions and layout, every array of a hierarchy.

Qt-free. The same questions `layout` and `ome` answer for a folder by path, asked of a store,
so that `open_zarr`, `layer_data` and `chunkmap` read an S3 copy as they read a folder.
"""

from __future__ import annotations

from typing import Any

from . import ome
from .archive_store import ArchiveStore
from .layout import ArrayLayout, LayoutError, array_layout

__all__ = [
    "array_ndim_and_names",
    "find_array_paths",
    "node_attributes_in",
    "node_kind_in",
    "read_array_in",
]


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def node_kind_in(store: ArchiveStore, rel: str) -> tuple[str, int] | None:
    """`layout.node_kind` of ``rel`` in ``store``: ``("array" | "group", zarr_format)``.

    Raises
    ------
    LayoutError
        When the metadata is there but corrupt.
    """
    meta = store.read_json(_join(rel, "zarr.json"))
    if meta is not None:
        kind = meta.get("node_type")
        if kind not in ("array", "group"):
            where = store.where(_join(rel, "zarr.json"))
            raise LayoutError(f"corrupt Zarr metadata in {where}: node_type is {kind!r}")
        return kind, 3
    for name, kind in ((".zarray", "array"), (".zgroup", "group")):
        if store.read_json(_join(rel, name)) is not None:
            return kind, 2
    return None


def node_attributes_in(store: ArchiveStore, rel: str) -> dict[str, Any]:
    """`ome.node_attributes` of ``rel`` in ``store`` (the OME part unwrapped)."""
    meta = store.read_json(_join(rel, "zarr.json"))
    if meta is not None:
        attrs = meta.get("attributes") or {}
    else:
        attrs = store.read_json(_join(rel, ".zattrs")) or {}
    return ome.unwrap(attrs)


def array_ndim_and_names(store: ArchiveStore, rel: str) -> tuple[int, tuple[str, ...] | None]:
    """Dimensions and dimension names (None without them) of the array at ``rel``."""
    meta = store.read_json(_join(rel, "zarr.json")) or store.read_json(_join(rel, ".zarray"))
    if meta is None:
        raise FileNotFoundError(store.where(rel))
    ndim = len(meta.get("shape") or [])
    names = meta.get("dimension_names")
    if isinstance(names, list) and len(names) == ndim and all(isinstance(n, str) for n in names):
        return ndim, tuple(names)
    return ndim, None


def read_array_in(store: ArchiveStore, rel: str) -> ArrayLayout | None:
    """`layout.read_array` of ``rel`` in ``store`` (None when it is not an array)."""
    for name, zarr_format in (("zarr.json", 3), (".zarray", 2)):
        meta = store.read_json(_join(rel, name))
        if meta is not None:
            return array_layout(rel, meta, zarr_format, store.where(_join(rel, name)))
    return None


def find_array_paths(store: ArchiveStore) -> list[str]:
    """Paths of every array under the root (as `layout.find_arrays`, corrupt nodes skipped:
    an acquisition may be rewriting them). Only groups and plain folders are descended
    into, never an array's chunks, so the cost does not grow with the chunks."""
    arrays: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            kind = node_kind_in(store, rel)
        except LayoutError:
            continue
        if kind is not None and kind[0] == "array":
            arrays.append(rel)
            continue
        stack.extend(_join(rel, name) for name in reversed(store.subfolders(rel)))
    return arrays

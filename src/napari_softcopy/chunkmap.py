"""The chunk map: the state of every chunk file of one array, at chunk resolution.

Qt-free. The widget computes a map off the Qt thread on a timer and shows it as a labels
layer over the image (`layer_transform` aligns one label pixel with one chunk).

Values:

====  ==========  =====================================================================
 1    copied      at the source and at the destination with equal size and mtime, and no
                  stamp of another version of the source file recorded on the copy
 2    pending     at the source, not (yet) at the destination or stale there; also a file
                  the writer deleted at the source that is still at the destination
 3    absent      never written at the source (reads as the fill value)
 4    mismatched  after the finish: missing, stale or extra at the destination
====  ==========  =====================================================================

A file counts as copied by the engine's own rule (`destinations.is_copy_of`): size and
mtime equal, and the source stamp the engine recorded on the copy (the source file's inode
and ctime, `SOURCE_STAMP`) names this version of the source file, so a source chunk
rewritten with its size and mtime put back is not shown green. The destination is read
through its `Destination` (its listing, with the stamps), in one walk of both trees
(`march.march`) that writes each chunk's state as it meets it. Metadata content and
checksums are the engine's business, not the map's.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .archive_store import open_store
from .destinations import (
    Capabilities,
    FileInfo,
    is_copy_of,
    open_destination,
)
from .layout import ArrayLayout, LayoutError, is_temp_name, read_array
from .march import Folder, MarchHandler, march
from .zarr_nodes import read_array_in

COPIED, PENDING, ABSENT, MISMATCHED = 1, 2, 3, 4

#: value -> (short name, meaning, color): the legend of the widget and the docs.
LEGEND: dict[int, tuple[str, str, str]] = {
    COPIED: ("copied", "copied and verified (size and mtime equal)", "#2ca02c"),
    PENDING: ("pending", "at the source, not yet at the destination (or stale)", "#f0b400"),
    ABSENT: ("absent", "never written at the source (fill value)", "#6e6e6e"),
    MISMATCHED: (
        "mismatched",
        "missing or different at the destination after the finish",
        "#e0201b",
    ),
}

# When several chunks fold into one map pixel (the channel axis), the worst state wins;
# "absent" only when every one of them is absent.
_RANK = np.array([0, 1, 2, 0, 3], dtype=np.uint8)  # indexed by value: absent < copied < ...
_BY_RANK = np.array([ABSENT, COPIED, PENDING, MISMATCHED], dtype=np.uint8)


@dataclass
class ChunkMap:
    """The state of every chunk file of one array.

    Attributes
    ----------
    array_path : str
        The array, relative to the archive root.
    values : numpy.ndarray
        uint8 of the chunk grid's shape (without the folded axis), values 1-4.
    chunk_shape : tuple of int
        Pixels per chunk file along each kept axis (the shard shape when sharded).
    folded_axis : int or None
        The array axis folded into the map (the channel axis), if any.
    counts : dict
        value -> number of chunk files in that state (before folding).
    """

    array_path: str
    values: np.ndarray
    chunk_shape: tuple[int, ...]
    folded_axis: int | None = None
    counts: dict[int, int] = field(default_factory=dict)

    def layer_transform(self, scale, translate) -> tuple[list[float], list[float]]:
        """Scale and translate of the labels layer over an image with ``scale``/``translate``."""
        return layer_transform(self.chunk_shape, scale, translate)

    def summary(self) -> str:
        """One line: how many chunk files are in each state."""
        parts = [f"{self.counts.get(v, 0)} {LEGEND[v][0]}" for v in LEGEND]
        return ", ".join(parts)


def layer_transform(chunk_shape, scale, translate) -> tuple[list[float], list[float]]:
    """Place label pixel ``j`` over the image pixels ``j*c ... j*c + c - 1`` of each axis.

    An image pixel ``i`` is centered at ``translate + i * scale``; a label pixel of size
    ``c * scale`` must then be centered at ``translate + (j*c + (c - 1) / 2) * scale``.
    """
    out_scale = [float(c) * float(s) for c, s in zip(chunk_shape, scale, strict=True)]
    out_translate = [
        float(t) + (float(c) - 1.0) / 2.0 * float(s)
        for c, s, t in zip(chunk_shape, scale, translate, strict=True)
    ]
    return out_scale, out_translate


class _MapWalk(MarchHandler):
    """The walk of one array's folder at both roots (`march.march`), each chunk file's state
    written into ``values`` as it is met: neither tree's files are ever held."""

    def __init__(
        self, array: ArrayLayout, values: np.ndarray, capabilities: Capabilities, not_there: int
    ) -> None:
        self.array = array
        self.values = values
        self.capabilities = capabilities
        self.not_there = not_there

    def folder_error(self, rel: str, exc: OSError) -> None:
        if not isinstance(exc, (FileNotFoundError, NotADirectoryError, PermissionError)):
            raise exc  # (gone or closed to us: the map shows what can be seen)

    def src_only(self, folder: Folder, entry: os.DirEntry) -> bool:
        return self.match(folder, entry, None)

    def match(self, folder: Folder, entry: os.DirEntry, info: FileInfo | None) -> bool:
        name = entry.name
        if entry.is_dir(follow_symlinks=False):
            if info is not None and not info.is_dir:
                self.dst_only(folder, name, info)
            return True
        if is_temp_name(name):
            return False
        index = self.array.chunk_index(folder.prefix + name)
        if index is None:
            return False
        try:
            st = folder.lstat(name)
        except FileNotFoundError:
            st = None  # replaced or deleted while we looked
        if st is None or not stat.S_ISREG(st.st_mode):
            if info is not None:
                self.dst_only(folder, name, info)
            return False
        copied = is_copy_of(st, info, self.capabilities)
        self.values[index] = COPIED if copied else self.not_there
        return False

    def dst_only(self, folder: Folder, name: str, info: FileInfo) -> bool:
        if info.is_dir:
            return True
        if info.is_file and not is_temp_name(name):
            index = self.array.chunk_index(folder.prefix + name)
            if index is not None:
                self.values[index] = self.not_there  # deleted by the writer: mirrored soon
        return False


def _layout(source: Path, destination: str | os.PathLike, array_path: str) -> ArrayLayout:
    """The array's layout from the source, or from the copy (a folder or an S3 prefix)
    when the source is gone (freed by ``--move``) or not readable yet."""
    try:
        array = read_array(source / array_path if array_path else source, array_path)
        if array is not None:
            return array
    except (FileNotFoundError, LayoutError):
        pass
    try:  # (a server that refuses says so: StoreError, one line)
        array = read_array_in(open_store(destination), array_path)
    except (LayoutError, OSError):
        array = None
    if array is None:
        raise LayoutError(f"no Zarr array at {source / array_path} (nor at the destination)")
    return array


def compute_chunk_map(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    array_path: str = "",
    *,
    finished: bool = False,
    fold_axis: int | None = None,
) -> ChunkMap:
    """Compare the chunk files of one array at the source and the destination.

    Parameters
    ----------
    source, destination : path
        Archive roots (the destination a folder or an ``s3://`` URL).
    array_path : str
        The array, relative to the roots (``""`` for a root array).
    finished : bool
        The copy has ended: what is not identical at the destination is ``MISMATCHED``
        rather than ``PENDING``.
    fold_axis : int, optional
        Fold this axis (the channel axis) into the map: the worst state wins.

    Raises
    ------
    LayoutError
        When neither tree holds the array's metadata.
    """
    src = Path(source)
    array = _layout(src, destination, array_path)
    values = np.full(array.grid, ABSENT, dtype=np.uint8)
    not_there = MISMATCHED if finished else PENDING
    try:
        dest = open_destination(destination, create=False)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        dest = None
    try:
        capabilities = Capabilities() if dest is None else dest.capabilities
        walk = _MapWalk(array, values, capabilities, not_there)
        # (the array only at the destination: every chunk file there is one the source lost)
        at_source = (src / array_path).is_dir()
        march(src if at_source else None, dest, walk, start=array.path, stamps=True)
    finally:
        if dest is not None:
            dest.close()
    counts = {int(v): int(n) for v, n in zip(*np.unique(values, return_counts=True), strict=True)}
    chunk_shape = tuple(array.chunks)
    if fold_axis is not None and 0 <= fold_axis < values.ndim:
        values = _BY_RANK[_RANK[values].max(axis=fold_axis)]
        chunk_shape = tuple(c for i, c in enumerate(chunk_shape) if i != fold_axis)
    else:
        fold_axis = None
    return ChunkMap(array_path, values, chunk_shape, fold_axis, counts)

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
through `LocalDestination` (its listing, with the stamps). Metadata content and
checksums are the engine's business, not the map's.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .destinations import (
    Capabilities,
    Destination,
    FileInfo,
    is_copy_of,
    open_destination,
)
from .layout import ArrayLayout, LayoutError, is_temp_name, read_array

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


class ChunkFile(NamedTuple):
    """What the map needs of a source chunk file's lstat, under the same names (the rule,
    `destinations.is_copy_of`, reads them): for 50,000 files, 16 MiB where keeping each
    ``os.stat_result`` took 36."""

    st_size: int
    st_mtime_ns: int
    st_ino: int
    st_ctime_ns: int


def chunk_files(root: str | os.PathLike, array: ArrayLayout) -> dict[tuple[int, ...], ChunkFile]:
    """``{grid index: ChunkFile}`` of every chunk file of ``array`` under ``root``.

    Walks the array's directory only (writers' temporary files are skipped).
    """
    root = os.fspath(root)
    base = os.path.join(root, array.path) if array.path else root
    found: dict[tuple[int, ...], ChunkFile] = {}
    stack = [(base, array.path)]
    while stack:
        directory, rel_dir = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel))
                    continue
                if is_temp_name(entry.name):
                    continue
                index = array.chunk_index(rel)
                if index is None:
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # replaced or deleted while we looked
            if stat.S_ISREG(st.st_mode):
                found[index] = ChunkFile(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    return found


def copied_chunk_files(dest: Destination, array: ArrayLayout) -> dict[tuple[int, ...], FileInfo]:
    """``{grid index: FileInfo}`` of every chunk file of ``array`` at the destination ``dest``,
    with the source stamps recorded on them (temporary files are skipped)."""
    found: dict[tuple[int, ...], FileInfo] = {}
    stack = [array.path]
    while stack:
        rel_dir = stack.pop()
        try:
            listed = dest.listdir(rel_dir, stamps=True) or {}
        except PermissionError:
            continue  # (as at the source: the map shows what can be seen)
        for name, info in listed.items():
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if info.is_dir:
                stack.append(rel)
            elif info.is_file and not is_temp_name(name):
                index = array.chunk_index(rel)
                if index is not None:
                    found[index] = info
    return found


def _layout(source: Path, destination: Path, array_path: str) -> ArrayLayout:
    for root in (source, destination):
        directory = root / array_path if array_path else root
        try:
            array = read_array(directory, array_path)
        except (FileNotFoundError, LayoutError):
            continue
        if array is not None:
            return array
    raise LayoutError(f"no Zarr array at {source / array_path} (nor at the destination)")


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
        Archive roots.
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
    src, dst = Path(source), Path(destination)
    array = _layout(src, dst, array_path)
    grid = array.grid
    at_source = chunk_files(src, array)
    try:
        dest = open_destination(destination, create=False)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        at_destination, capabilities = {}, Capabilities()
    else:
        try:
            at_destination, capabilities = copied_chunk_files(dest, array), dest.capabilities
        finally:
            dest.close()
    values = np.full(grid, ABSENT, dtype=np.uint8)
    not_there = MISMATCHED if finished else PENDING
    for index, st in at_source.items():
        copied = is_copy_of(st, at_destination.get(index), capabilities)
        values[index] = COPIED if copied else not_there
    for index in at_destination.keys() - at_source.keys():
        values[index] = not_there  # deleted by the writer; the engine mirrors the delete
    counts = {int(v): int(n) for v, n in zip(*np.unique(values, return_counts=True), strict=True)}
    chunk_shape = tuple(array.chunks)
    if fold_axis is not None and 0 <= fold_axis < values.ndim:
        values = _BY_RANK[_RANK[values].max(axis=fold_axis)]
        chunk_shape = tuple(c for i, c in enumerate(chunk_shape) if i != fold_axis)
    else:
        fold_axis = None
    return ChunkMap(array_path, values, chunk_shape, fold_axis, counts)

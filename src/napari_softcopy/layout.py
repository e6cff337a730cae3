"""Zarr knowledge: metadata of a whole hierarchy, expected chunk keys, writers' temp names.

This module only reads. It serves readiness (which names are temporary), progress (how many
chunk files the metadata allows) and verification (which files are metadata, compared by
content). It never limits what is copied: every non-temporary file is mirrored.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Files that hold Zarr metadata (compared by content during verification).
METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})

#: Files whose presence makes a directory a Zarr node.
NODE_NAMES = ("zarr.json", ".zarray", ".zgroup")

# Writers' temporary names (seen in their inotify events; each is renamed onto the key `K`):
#   tensorstore: `K.__lock` (file_io_locking "os", the default, and "lockfile") and
#     `K_<hex>.__lock` ("none"); its metadata alike (`zarr.json.__lock`, `.zarray.__lock`);
#   zarr-python 3 LocalStore: `K.<32 hex>.partial` (`zarr.json` -> `zarr.<hex>.partial`);
#   napari-softcopy itself: `.K.<hex>.softcopy-tmp` (so a copy of a live copy works too).
# (acquire-zarr and tensorstore's "non_atomic" write in place: no temporary name.)
_TEMP_RE = re.compile(r"(\.__lock|\.[0-9a-f]{32}\.partial|\.softcopy-tmp)$")
OWN_TEMP_SUFFIX = ".softcopy-tmp"


#: How every name `_TEMP_RE` matches ends: a chunk's name is ruled out by one C call.
TEMP_ENDINGS = ("__lock", ".partial", OWN_TEMP_SUFFIX)


def is_temp_name(name: str) -> bool:
    """Return True when ``name`` is a writer's temporary file, never to be copied."""
    return name.endswith(TEMP_ENDINGS) and _TEMP_RE.search(name) is not None


def is_own_temp_name(name: str) -> bool:
    """Return True for napari-softcopy's own temporary files."""
    return name.endswith(OWN_TEMP_SUFFIX)


def is_metadata_name(name: str) -> bool:
    """Return True when ``name`` is a Zarr metadata file."""
    return name in METADATA_NAMES


class LayoutError(ValueError):
    """Unreadable or inconsistent Zarr metadata; the message names the file."""


@dataclass(frozen=True)
class ArrayLayout:
    """Where the chunk files of one Zarr array live.

    Attributes
    ----------
    path : str
        Array directory relative to the hierarchy root, ``""`` for a root array.
    zarr_format : int
        2 or 3.
    shape, chunks : tuple of int
        Array shape and the shape of one chunk *file* (the shard shape when sharded).
    inner_chunks : tuple of int or None
        Inner chunk shape of a sharded array.
    separator : str
        Chunk key separator (``"."`` or ``"/"``).
    prefix : str
        ``"c"`` for the v3 default key encoding, ``""`` otherwise.
    dtype : str
        Data type as written in the metadata.
    fill_value : object
        Fill value from the metadata.
    """

    path: str
    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    inner_chunks: tuple[int, ...] | None
    separator: str
    prefix: str
    dtype: str
    fill_value: object

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of chunk files along each axis."""
        return tuple(
            math.ceil(s / c) if c else 0 for s, c in zip(self.shape, self.chunks, strict=False)
        )

    @property
    def n_chunks(self) -> int:
        """Number of chunk files the metadata allows."""
        return math.prod(self.grid)

    def chunk_key(self, index: tuple[int, ...]) -> str:
        """Relative path (from the hierarchy root) of the chunk file at grid ``index``."""
        parts = [str(i) for i in index] or ["0"]
        key = self.separator.join(parts)
        if self.prefix:
            key = f"{self.prefix}{self.separator}{key}" if parts else self.prefix
        return f"{self.path}/{key}" if self.path else key

    def chunk_index(self, relpath: str) -> tuple[int, ...] | None:
        """Grid index of a chunk file path relative to the hierarchy root, or None."""
        if self.path:
            if not relpath.startswith(self.path + "/"):
                return None
            relpath = relpath[len(self.path) + 1 :]
        if self.prefix:
            head = self.prefix + self.separator
            if not relpath.startswith(head):
                return None
            relpath = relpath[len(head) :]
        parts = relpath.split(self.separator)
        if len(parts) != max(len(self.shape), 1) or not all(p.isdigit() for p in parts):
            return None
        index = tuple(int(p) for p in parts)
        if any(i >= g for i, g in zip(index, self.grid, strict=False)):
            return None
        return index

    def chunk_keys(self) -> Iterator[str]:
        """Every chunk file path the metadata allows (row-major)."""
        import itertools

        for index in itertools.product(*(range(g) for g in self.grid)):
            yield self.chunk_key(index)


def parse_metadata(raw: bytes, where: object, what: str = "file") -> dict:
    """The JSON object of Zarr metadata ``raw``, read from ``where`` (a ``what``: ``"file"``
    or ``"object"``, for the message).

    Raises
    ------
    LayoutError
        One line naming ``where`` and the fix: not JSON, or JSON but not an object (an empty
        file included).
    """
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:  # (UnicodeDecodeError too)
        raise LayoutError(
            f"corrupt Zarr metadata in {where}: {exc}; fix or restore this {what}"
        ) from None
    if not isinstance(data, dict):
        raise LayoutError(
            f"corrupt Zarr metadata in {where}: not a JSON object; fix or restore this {what}"
        )
    return data


def read_json(path: Path) -> dict:
    """Read a metadata JSON object; raise `LayoutError` naming the file when it is corrupt
    (`parse_metadata`) or unreadable. FileNotFoundError is raised as it is."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise LayoutError(
            f"corrupt Zarr metadata in {path}: {exc}; fix or restore this file"
        ) from exc
    return parse_metadata(raw, path)


def is_zarr_node(path: str | os.PathLike) -> bool:
    """Return True when the directory holds Zarr metadata (v2 or v3, array or group)."""
    p = Path(path)
    return any((p / name).is_file() for name in NODE_NAMES)


def _v3_array(rel: str, meta: dict, path: Path | str) -> ArrayLayout:
    try:
        shape = tuple(int(s) for s in meta["shape"])
        grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
        chunks = tuple(int(c) for c in grid)
        enc = meta.get("chunk_key_encoding") or {"name": "default"}
        sep = (enc.get("configuration") or {}).get(
            "separator", "/" if enc["name"] == "default" else "."
        )
        prefix = "c" if enc["name"] == "default" else ""
        inner = None
        for codec in meta.get("codecs") or []:
            if isinstance(codec, dict) and codec.get("name") == "sharding_indexed":
                inner = tuple(int(c) for c in codec["configuration"]["chunk_shape"])
        dtype = meta["data_type"]
        dtype = dtype if isinstance(dtype, str) else json.dumps(dtype)
        return ArrayLayout(rel, 3, shape, chunks, inner, sep, prefix, dtype, meta.get("fill_value"))
    except (KeyError, TypeError, ValueError) as exc:
        raise LayoutError(f"corrupt Zarr metadata in {path}: missing or bad {exc}") from exc


def _v2_array(rel: str, meta: dict, path: Path | str) -> ArrayLayout:
    try:
        shape = tuple(int(s) for s in meta["shape"])
        chunks = tuple(int(c) for c in meta["chunks"])
        sep = meta.get("dimension_separator") or "."
        dtype = meta["dtype"]
        dtype = dtype if isinstance(dtype, str) else json.dumps(dtype)
        return ArrayLayout(rel, 2, shape, chunks, None, sep, "", dtype, meta.get("fill_value"))
    except (KeyError, TypeError, ValueError) as exc:
        raise LayoutError(f"corrupt Zarr metadata in {path}: missing or bad {exc}") from exc


def node_kind(directory: Path) -> tuple[str, int] | None:
    """Return ``("array" | "group", zarr_format)`` for a Zarr node directory, else None.

    Raises
    ------
    LayoutError
        When the metadata file exists but is corrupt.
    """
    v3 = directory / "zarr.json"
    if v3.is_file():
        meta = read_json(v3)
        kind = meta.get("node_type")
        if kind not in ("array", "group"):
            raise LayoutError(f"corrupt Zarr metadata in {v3}: node_type is {kind!r}")
        return kind, 3
    if (directory / ".zarray").is_file():
        read_json(directory / ".zarray")
        return "array", 2
    if (directory / ".zgroup").is_file():
        read_json(directory / ".zgroup")
        return "group", 2
    return None


def read_array(directory: Path, rel: str = "") -> ArrayLayout | None:
    """Read the `ArrayLayout` of the array at ``directory`` (None when it is not an array)."""
    v3 = directory / "zarr.json"
    if v3.is_file():
        meta = read_json(v3)
        return _v3_array(rel, meta, v3) if meta.get("node_type") == "array" else None
    v2 = directory / ".zarray"
    if v2.is_file():
        return _v2_array(rel, read_json(v2), v2)
    return None


def array_layout(rel: str, meta: dict, zarr_format: int, where: str) -> ArrayLayout | None:
    """The `ArrayLayout` from an array's metadata read elsewhere (an object store):
    ``zarr.json``'s content (``zarr_format`` 3; None for a group) or ``.zarray``'s (2).
    ``where`` names the file in messages."""
    if zarr_format == 2:
        return _v2_array(rel, meta, where)
    return _v3_array(rel, meta, where) if meta.get("node_type") == "array" else None


def find_arrays(root: str | os.PathLike, *, strict: bool = True) -> list[ArrayLayout]:
    """Every array of the hierarchy under ``root`` (a root array gives one entry, path ``""``).

    Only group and plain directories are descended into, never an array's chunk directories,
    so the cost does not grow with the number of chunks.

    Parameters
    ----------
    root : path
        Hierarchy root.
    strict : bool
        Raise `LayoutError` on corrupt metadata (True) or skip that node (False, used while an
        acquisition may be rewriting a metadata file in place).
    """
    root = Path(root)
    arrays: list[ArrayLayout] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        directory = root / rel if rel else root
        try:
            array = read_array(directory, rel)
        except FileNotFoundError:
            continue
        except LayoutError:
            if strict:
                raise
            continue
        if array is not None:
            arrays.append(array)
            continue
        try:
            with os.scandir(directory) as it:
                subdirs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        stack.extend(f"{rel}/{name}" if rel else name for name in sorted(subdirs, reverse=True))
    return arrays


def array_at(arrays: list[ArrayLayout], relpath: str) -> ArrayLayout | None:
    """The array whose directory holds ``relpath`` (longest matching prefix), or None."""
    best = None
    for array in arrays:
        if (not array.path or relpath.startswith(array.path + "/")) and (
            best is None or len(array.path) > len(best.path)
        ):
            best = array
    return best

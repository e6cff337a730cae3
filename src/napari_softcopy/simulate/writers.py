"""The writers: how a microscope's software puts the arrays and groups of an archive on disk.

- ``"tensorstore"``: tensorstore's ``zarr`` (v2) / ``zarr3`` drivers over the ``file``
  kvstore, with the kvstore's ``file_io_locking`` mode chosen by ``locking`` (``"lockfile"``,
  ``"os"``, ``"none"`` or ``"non_atomic"``). Group metadata (OME-NGFF) goes through a
  tensorstore ``file`` kvstore with the same locking, so it shows the same temp-file pattern.
- ``"zarr-python"``: zarr-python 3 with a ``LocalStore``.

Both handle Zarr v2 (``.`` or ``/`` chunk keys), Zarr v3 (``default`` or ``v2`` chunk key
encoding) and v3 sharding, with the same codecs, so the two write equal data. Both offer the
same small surface to the acquisition loop: ``create_group``, ``create_array``, ``write``,
``resize``, ``close``. The OME-NGFF group attributes come from `napari_softcopy.ome`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import ome
from .presets import Preset, array_paths, fit_chunks, level_shape

WRITERS: tuple[str, ...] = ("tensorstore", "zarr-python")
"""Names accepted by ``simulate(writer=...)``."""

LOCKING_MODES: tuple[str, ...] = ("lockfile", "os", "none", "non_atomic")
"""tensorstore ``file_io_locking`` modes accepted by ``simulate(locking=...)``."""

# Codecs every simulated array uses (both writers write the same configuration).
_BLOSC_V2 = {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1, "blocksize": 0}
_ZSTD_LEVEL = 3


# --------------------------------------------------------------------------------------------
# OME-NGFF groups


def _ome_scale(p: Preset, level: int) -> list[float]:
    """Physical size of a voxel of ``level`` per axis (time: the interval; channel: 1)."""
    vz, vy, vx = p.voxel_size_um
    f = float(2**level)
    per_axis = {"t": p.interval_s or 1.0, "c": 1.0, "z": vz, "y": vy * f, "x": vx * f}
    return [float(per_axis[name]) for name in p.axes]


def _multiscales(p: Preset, version: str, name: str) -> dict[str, Any]:
    return ome.multiscales_metadata(
        version,
        name,
        p.axes,
        [_ome_scale(p, level) for level in range(p.levels)],
        downscaling="mean" if p.levels > 1 else "none",
        metadata={"description": "2x2 mean in y and x per level", "method": "simulate"},
    )


def groups(p: Preset) -> list[tuple[str, dict[str, Any]]]:
    """Groups to create, parents first, with their attributes (OME-NGFF metadata).

    Parameters
    ----------
    p : Preset
        A resolved preset.

    Returns
    -------
    list of (str, dict)
        ``(path relative to the root, attributes)``; empty for a bare array.
    """
    version = p.ome_version
    if version is None:
        return []
    if p.kind == "multiscale":
        return [("", ome.wrap(version, _multiscales(p, version, p.name)))]
    plate = ome.plate_metadata(version, p.name, p.plate_rows, p.plate_columns, p.fields)
    out: list[tuple[str, dict[str, Any]]] = [("", ome.wrap(version, plate))]
    for row in p.plate_rows:
        out.append((row, {}))
    for row in p.plate_rows:
        for col in p.plate_columns:
            out.append((f"{row}/{col}", ome.wrap(version, ome.well_metadata(version, p.fields))))
            for f in range(p.fields):
                image = _multiscales(p, version, f"{row}{col}/{f}")
                out.append((f"{row}/{col}/{f}", ome.wrap(version, image)))
    return out


# --------------------------------------------------------------------------------------------
# arrays


@dataclass
class ArraySpec:
    """One array of the archive: where, which image and level, its final shape and chunking."""

    path: str
    image: int
    level: int
    shape: tuple[int, ...]  # final shape
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None


def array_specs(p: Preset) -> list[ArraySpec]:
    """Every array of the archive of ``p`` (see `array_paths`), chunks fitted to its level."""
    specs = []
    for path, (image, level) in array_paths(p).items():
        shape = level_shape(p.shape, level)
        chunks, shards = fit_chunks(shape, p.chunks, p.shards)
        specs.append(ArraySpec(path, image, level, shape, chunks, shards))
    return specs


def open_writer(
    writer: str, root: Path, p: Preset, locking: str
) -> TensorstoreWriter | ZarrPythonWriter:
    """The writer named ``writer`` (one of `WRITERS`) for the archive at ``root``."""
    if writer == "tensorstore":
        return TensorstoreWriter(root, p, locking)
    return ZarrPythonWriter(root, p)


class TensorstoreWriter:
    """Arrays through tensorstore's zarr/zarr3 drivers, groups through its file kvstore."""

    def __init__(self, root: Path, p: Preset, locking: str) -> None:
        import tensorstore as ts

        self._ts = ts
        self._root = root
        self._preset = p
        self._context = ts.Context({"file_io_locking": {"mode": locking}})
        self._kvstore: Any = None

    def _root_kvstore(self) -> Any:
        if self._kvstore is None:
            spec = {"driver": "file", "path": str(self._root) + "/"}
            self._kvstore = self._ts.KvStore.open(spec, context=self._context).result()
        return self._kvstore

    def create_group(self, path: str, attributes: dict[str, Any]) -> None:
        prefix = f"{path}/" if path else ""
        if self._preset.zarr_format == 2:
            documents = {".zgroup": {"zarr_format": 2}, ".zattrs": attributes}
        else:
            group = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
            documents = {"zarr.json": group}
        for name, doc in documents.items():
            self._root_kvstore().write(prefix + name, json.dumps(doc, indent=2).encode()).result()

    def _metadata(self, spec: ArraySpec, shape: tuple[int, ...]) -> dict[str, Any]:
        p = self._preset
        if p.zarr_format == 2:
            return {
                "zarr_format": 2,
                "shape": list(shape),
                "chunks": list(spec.chunks),
                "dtype": "<u2",
                "compressor": dict(_BLOSC_V2),
                "fill_value": 0,
                "order": "C",
                "filters": None,
                "dimension_separator": p.separator,
            }
        inner = [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": _ZSTD_LEVEL, "checksum": False}},
        ]
        if spec.shards is None:
            grid, codecs = spec.chunks, inner
        else:
            sharding = {
                "chunk_shape": list(spec.chunks),
                "codecs": inner,
                "index_codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "crc32c"},
                ],
                "index_location": "end",
            }
            grid, codecs = spec.shards, [{"name": "sharding_indexed", "configuration": sharding}]
        return {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(shape),
            "data_type": "uint16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(grid)}},
            "chunk_key_encoding": {
                "name": p.v3_key_encoding,
                "configuration": {"separator": p.separator},
            },
            "fill_value": 0,
            "codecs": codecs,
            "dimension_names": list(p.axes),
        }

    def create_array(self, spec: ArraySpec, shape: tuple[int, ...]) -> Any:
        path = self._root / spec.path if spec.path else self._root
        ts_spec = {
            "driver": "zarr" if self._preset.zarr_format == 2 else "zarr3",
            "kvstore": {"driver": "file", "path": str(path) + "/"},
            "metadata": self._metadata(spec, shape),
        }
        return self._ts.open(ts_spec, create=True, context=self._context).result()

    def write(self, handle: Any, index: tuple[Any, ...], data: np.ndarray) -> None:
        handle[index].write(data).result()

    def resize(self, handle: Any, shape: tuple[int, ...]) -> Any:
        return handle.resize(exclusive_max=list(shape), expand_only=True).result()

    def close(self) -> None:
        self._kvstore = None


class ZarrPythonWriter:
    """Groups and arrays through zarr-python 3 and its ``LocalStore``."""

    def __init__(self, root: Path, p: Preset) -> None:
        import zarr
        from zarr.storage import LocalStore

        self._zarr = zarr
        self._preset = p
        self._store = LocalStore(str(root))

    def create_group(self, path: str, attributes: dict[str, Any]) -> None:
        self._zarr.create_group(
            store=self._store,
            path=path or None,
            zarr_format=self._preset.zarr_format,
            attributes=attributes,
        )

    def create_array(self, spec: ArraySpec, shape: tuple[int, ...]) -> Any:
        p = self._preset
        if p.zarr_format == 2:
            from numcodecs import Blosc

            compressor: Any = Blosc(
                cname=_BLOSC_V2["cname"], clevel=_BLOSC_V2["clevel"], shuffle=Blosc.SHUFFLE
            )
            key_encoding = {"name": "v2", "separator": p.separator}
            dimension_names = None
        else:
            from zarr.codecs import ZstdCodec

            compressor = ZstdCodec(level=_ZSTD_LEVEL, checksum=False)
            key_encoding = {"name": p.v3_key_encoding, "separator": p.separator}
            dimension_names = list(p.axes)
        return self._zarr.create_array(
            store=self._store,
            name=spec.path or None,
            shape=shape,
            chunks=spec.chunks,
            shards=spec.shards,
            dtype="uint16",
            fill_value=0,
            compressors=compressor,
            chunk_key_encoding=key_encoding,
            dimension_names=dimension_names,
            zarr_format=p.zarr_format,
        )

    def write(self, handle: Any, index: tuple[Any, ...], data: np.ndarray) -> None:
        handle[index] = data

    def resize(self, handle: Any, shape: tuple[int, ...]) -> Any:
        handle.resize(shape)
        return handle

    def close(self) -> None:
        self._store.close()

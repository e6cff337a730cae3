"""Where an archive is read from for display: a folder, or an ``s3://bucket/prefix``.

Qt-free. `open_zarr` reads an archive's metadata (`zarr_nodes`) and arrays through an
`ArchiveStore`, so the same code shows a local copy and an S3 copy: `LocalArchive` reads
files, `S3Archive` reads objects through the same endpoint, region and credentials as an S3
copy (the AWS chain as `destinations.s3_settings.store_config` resolves it; nothing secret
is logged or put into a message).

An archive's chunks are read lazily, by the array returned by `ArchiveStore.open_array`
(dask calls its ``__getitem__`` when napari shows a region). From a folder, tensorstore
reads them (zarr-python where tensorstore cannot open the array). From S3, zarr-python's
``ObjectStore`` over obstore reads them (tensorstore's s3 kvstore where zarr-python cannot
open the array); `S3Archive.open_array` says why. Either fallback is said once in the log
and by `take_notices` (the widget shows it).
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .destinations.s3_settings import (
    S3Location,
    S3SettingsError,
    describe_error,
    endpoint_of,
    is_s3_url,
    parse_s3_url,
    store_config,
)
from .destinations.s3_stores import s3_store
from .layout import parse_metadata, read_json

log = logging.getLogger(__name__)

__all__ = [
    "ArchiveStore",
    "LocalArchive",
    "OpenError",
    "S3Archive",
    "StoreError",
    "open_store",
    "root_name",
    "say_once",
    "take_notices",
]


class OpenError(ValueError):
    """The path cannot be shown: one line naming the path and what to do."""


class StoreError(OpenError):
    """The archive's storage cannot be read (one line: what, where, and the fix)."""


def root_name(root: str | os.PathLike) -> str:
    """An archive root as layers and messages name it: an absolute path (``~`` expanded),
    or an ``s3://bucket/prefix`` URL without a trailing ``/``."""
    if is_s3_url(root):
        return str(root).rstrip("/")
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def open_store(root: str | os.PathLike | ArchiveStore) -> ArchiveStore:
    """The store that reads the archive at ``root`` (a folder path or an ``s3://`` URL;
    a store is returned as it is).

    Raises
    ------
    StoreError
        A malformed S3 URL or unusable S3 settings (one line, no secret).
    """
    if isinstance(root, ArchiveStore):
        return root
    name = root_name(root)
    if is_s3_url(name):
        try:
            return _s3_archive(name, _settings_key())
        except S3SettingsError as exc:
            raise StoreError(str(exc)) from None
    return LocalArchive(name)


# ------------------------------------------------------------------------------- notices
_NOTICES: list[str] = []
_SAID: set[str] = set()
_NOTICES_LOCK = threading.Lock()


def say_once(key: str, text: str) -> None:
    """Say ``text`` once per process and ``key``: in the log, and to the next
    `take_notices`."""
    with _NOTICES_LOCK:
        if key in _SAID:
            return
        _SAID.add(key)
        _NOTICES.append(text)
    log.warning("%s", text)


def take_notices() -> list[str]:
    """What `say_once` said since the last call (a reader's fallback...), for the widget."""
    with _NOTICES_LOCK:
        out = list(_NOTICES)
        _NOTICES.clear()
    return out


# ------------------------------------------------------------------------------- stores
class ArchiveStore:
    """Read access to one archive: its metadata files, its folders, its arrays.

    Attributes
    ----------
    root : str
        The archive as `root_name` names it.
    """

    root: str

    @property
    def name(self) -> str:
        """The archive's last path part (the bucket for a bucket's root)."""
        return self.root.rstrip("/").rpartition("/")[2]

    def where(self, rel: str = "") -> str:
        """``rel`` inside the archive, for messages."""
        return f"{self.root}/{rel}" if rel else self.root

    def read_json(self, rel: str) -> dict | None:
        """The JSON object in the file ``rel`` (None when there is none).

        Raises
        ------
        LayoutError
            It is there but is no JSON object.
        StoreError
            The storage cannot be read.
        """
        raise NotImplementedError

    def subfolders(self, rel: str) -> list[str]:
        """Names of the folders (common prefixes) directly under ``rel``, sorted."""
        raise NotImplementedError

    def exists(self) -> bool:
        """Whether anything is at the root (a folder; an object below an S3 prefix)."""
        raise NotImplementedError

    def open_array(self, rel: str) -> tuple[Any, tuple[int, ...]]:
        """The array at ``rel``, read on indexing, and its file (shard) chunk shape."""
        raise NotImplementedError

    def versions(self, keys: list[str], *, limit: int) -> list[tuple | None] | None:
        """What identifies the current content of each file ``keys`` names (None where
        there is none), cheaply; None when finding out would cost more than ``limit`` items."""
        raise NotImplementedError


class LocalArchive(ArchiveStore):
    """An archive in a folder."""

    def __init__(self, root: str) -> None:
        self.root = root

    def read_json(self, rel: str) -> dict | None:
        path = Path(self.root, rel)
        if not path.is_file():
            return None
        try:
            return read_json(path)
        except FileNotFoundError:
            return None  # (replaced between the two calls)

    def subfolders(self, rel: str) -> list[str]:
        try:
            with os.scandir(Path(self.root, rel)) as it:
                return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self) -> bool:
        return os.path.isdir(self.root)

    def versions(self, keys: list[str], *, limit: int) -> list[tuple | None] | None:
        out: list[tuple | None] = []
        for key in keys:  # (size and mtime: a rewrite changes one)
            try:
                st = os.stat(Path(self.root, key))
                out.append((st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return out

    def open_array(self, rel: str) -> tuple[Any, tuple[int, ...]]:
        # tensorstore first: several times faster than zarr-python for a plane of many
        # small chunk files, and it releases the GIL while it reads.
        directory = Path(self.root, rel)
        try:
            driver = "zarr3" if (directory / "zarr.json").is_file() else "zarr"
            kvstore = {"driver": "file", "path": os.fspath(directory) + "/"}
            array = _TensorStoreArray.open({"driver": driver, "kvstore": kvstore})
            return array, array.chunks
        except Exception as first:  # e.g. a codec tensorstore lacks
            import zarr
            from zarr.storage import LocalStore

            z = zarr.open_array(store=LocalStore(self.root, read_only=True), path=rel, mode="r")
            say_once(
                f"{self.root} zarr-python",
                f"{self.root} is read through zarr-python (slower here): tensorstore cannot "
                f"open {rel or 'its root array'} ({_first_line(first)})",
            )
            return z, getattr(z, "shards", None) or z.chunks


class S3Archive(ArchiveStore):
    """An archive below ``s3://bucket/prefix``, read with the copy's settings.

    Parameters
    ----------
    url : str
        ``s3://bucket/prefix``.
    """

    def __init__(self, url: str) -> None:
        try:
            import obstore.store  # noqa: F401 (checked here, to say what to install)
        except ImportError:
            raise StoreError(
                f"{url}: reading S3 needs obstore; pip install 'napari-softcopy[s3]'"
            ) from None
        self.location: S3Location = parse_s3_url(url)
        self.root = self.location.url
        self.endpoint = endpoint_of()
        config, client_options, provider = store_config()
        self._config = config
        # A viewer waits on these requests: a few quick retries, then a message, rather
        # than the copy's patient backoff.
        self.store = s3_store(
            self.location,
            (config, client_options, provider),
            timeout_s=60,
            retries=2,
            max_backoff_s=2,
            retry_timeout_s=10,
        )

    def _error(self, exc: BaseException) -> StoreError:
        return StoreError(describe_error(exc, self.location, self.endpoint))

    def read_json(self, rel: str) -> dict | None:
        import obstore

        try:
            raw = bytes(obstore.get(self.store, rel).bytes())
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):  # (a 404 too, but not "no such object")
                raise self._error(exc) from None
            return None
        except Exception as exc:  # obstore's errors: one line naming the server and fix
            raise self._error(exc) from None
        return parse_metadata(raw, self.where(rel), "object")

    def subfolders(self, rel: str) -> list[str]:
        import obstore

        try:
            listing = obstore.list_with_delimiter(self.store, prefix=rel or None)
        except Exception as exc:
            raise self._error(exc) from None
        return sorted(p.rstrip("/").rpartition("/")[2] for p in listing["common_prefixes"])

    def exists(self) -> bool:
        import obstore

        try:
            return bool(next(iter(obstore.list(self.store, chunk_size=1)), None))
        except Exception as exc:
            raise self._error(exc) from None

    def versions(self, keys: list[str], *, limit: int) -> list[tuple | None] | None:
        # One listing of the folder the keys share (a displayed plane's chunks share their
        # leading indices: "0/c/t/c/z/"), not a HEAD each: size and ETag per object.
        import obstore

        common = posixpath.commonpath([key.rpartition("/")[0] for key in keys]) if keys else ""
        found: dict[str, tuple] = {}
        try:
            for batch in obstore.list(self.store, prefix=common or None, chunk_size=1000):
                for meta in batch:
                    found[meta["path"]] = (meta["size"], meta["e_tag"])
                if len(found) > limit:
                    return None
        except Exception as exc:
            raise self._error(exc) from None
        return [found.get(key) for key in keys]

    def open_array(self, rel: str) -> tuple[Any, tuple[int, ...]]:
        # zarr-python over obstore first. Against tensorstore's s3 kvstore on SeaweedFS
        # (`python -m benchmarks.s3_read`, benchmarks/notes.md item 41) the two read a
        # plane of 16 chunks in the same time within noise (tensorstore 0.93-1.09x: the
        # decompression dominates; a lone chunk 0.51-0.95x). What decides: obstore reads
        # with exactly the copy's settings (the AWS chain as `store_config` resolves it,
        # profiles with SSO or a credential process included), where tensorstore resolves
        # credentials its own way and writes the AWS library's errors to stderr for every
        # missing ~/.aws file.
        try:
            return self._open_zarr(rel)
        except Exception as first:  # e.g. a codec zarr-python lacks
            try:
                array = self._open_tensorstore(rel)
            except Exception:
                raise first from None
            say_once(
                f"{self.root} tensorstore",
                f"{self.root} is read through tensorstore (its own AWS credential chain): "
                f"zarr-python cannot open {rel or 'its root array'} ({_first_line(first)})",
            )
            return array, array.chunks

    def _open_zarr(self, rel: str) -> tuple[Any, tuple[int, ...]]:
        import zarr
        from zarr.storage import ObjectStore

        z = zarr.open_array(store=ObjectStore(self.store, read_only=True), path=rel, mode="r")
        return z, getattr(z, "shards", None) or z.chunks

    def _open_tensorstore(self, rel: str) -> _TensorStoreArray:
        path = "/".join(p for p in (self.location.prefix, rel) if p) + "/"
        kvstore: dict[str, Any] = {
            "driver": "s3",
            "bucket": self.location.bucket,
            "path": path,
            "aws_region": self._config.get("aws_region", "us-east-1"),
        }
        if "aws_endpoint" in self._config:
            kvstore["endpoint"] = self._config["aws_endpoint"]
        driver = "zarr3" if self.read_json(f"{rel}/zarr.json" if rel else "zarr.json") else "zarr"
        return _TensorStoreArray.open({"driver": driver, "kvstore": kvstore})


def _settings_key() -> tuple:
    """What an `S3Archive` depends on besides its URL: the AWS variables and files."""
    names = sorted(k for k in os.environ if k.startswith("AWS_"))
    files = []
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        with_default = os.environ.get(name) or os.path.expanduser(
            "~/.aws/credentials" if "CRED" in name else "~/.aws/config"
        )
        try:
            files.append(os.stat(with_default).st_mtime_ns)
        except OSError:
            files.append(None)
    return tuple((k, os.environ[k]) for k in names) + tuple(files)


@functools.lru_cache(maxsize=8)
def _s3_archive(url: str, _settings: tuple) -> S3Archive:
    # One client per archive and settings: its connection pool is reused by every read
    # (a layer's refresh opens the arrays again every second while the copy runs).
    return S3Archive(url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


class _TensorStoreArray:
    """The minimal array interface dask needs, over a tensorstore array (reads on index)."""

    def __init__(self, store) -> None:
        self._store = store
        self.shape = tuple(int(n) for n in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in store.chunk_layout.write_chunk.shape)

    @classmethod
    def open(cls, spec: dict) -> _TensorStoreArray:
        import tensorstore as ts

        return cls(ts.open(spec, read=True, open=True).result())

    def __getitem__(self, key):
        return self._store[key].read().result()

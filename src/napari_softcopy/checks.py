"""Validation of user input, shared by the CLI and the widget.

Every problem is one `InputError` whose message is a single line naming the path and what to
do. Nothing here writes anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from .layout import LayoutError, find_arrays, node_kind


class InputError(ValueError):
    """Bad user input: a one-line message naming the path and the fix."""


def _resolve(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_source(source: str | os.PathLike, *, wait_for_source: bool = False) -> Path:
    """Check that ``source`` is a readable Zarr archive with valid metadata.

    Returns the absolute path. A missing source is accepted when ``wait_for_source``.
    """
    src = _resolve(source)
    if not src.exists():
        if wait_for_source:
            return src
        raise InputError(
            f"source {src} does not exist; check the path, or pass --wait-for-source to wait "
            "until the acquisition creates it"
        )
    if not src.is_dir():
        raise InputError(
            f"source {src} is not a folder; point at the Zarr archive's root folder "
            "(the one holding zarr.json, .zarray or .zgroup)"
        )
    if not os.access(src, os.R_OK | os.X_OK):
        raise InputError(f"source {src} cannot be read (permission denied); fix its permissions")
    try:
        if node_kind(src) is None:
            raise InputError(
                f"source {src} is not a Zarr archive (no zarr.json, .zarray or .zgroup in it); "
                "point at the archive's root folder"
            )
        find_arrays(src, strict=True)
    except LayoutError as exc:
        raise InputError(str(exc)) from None
    return src


def check_pair(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    force: bool = False,
    wait_for_source: bool = False,
) -> tuple[Path, Path]:
    """Check a source/destination pair before anything is written.

    Returns
    -------
    tuple of Path
        Absolute source and destination.

    Raises
    ------
    InputError
        One line naming the path and the fix.
    """
    src = check_source(source, wait_for_source=wait_for_source)
    dst = _resolve(destination)
    real_src, real_dst = Path(os.path.realpath(src)), Path(os.path.realpath(dst))
    if _inside(real_dst, real_src):
        raise InputError(
            f"destination {dst} is inside the source {src}; choose a folder outside the archive"
        )
    if _inside(real_src, real_dst):
        raise InputError(
            f"source {src} is inside the destination {dst}; choose another destination folder"
        )
    parent = dst.parent
    if not parent.is_dir():
        raise InputError(
            f"the parent folder of destination {dst} does not exist (is the drive mounted?); "
            "create or mount it first"
        )
    if dst.exists() and not dst.is_dir():
        raise InputError(f"destination {dst} exists and is not a folder; choose another path")
    writable_dir = dst if dst.is_dir() else parent
    if not os.access(writable_dir, os.W_OK | os.X_OK) or _read_only_mount(writable_dir):
        raise InputError(
            f"cannot write in {writable_dir} (permission denied or read-only); "
            "choose a writable destination"
        )
    if dst.is_dir() and not force:
        _check_is_copy(src, dst)
    return src, dst


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _check_is_copy(src: Path, dst: Path) -> None:
    """An existing, non-empty destination must look like a copy of this archive."""
    try:
        with os.scandir(dst) as it:
            names = {e.name for e in it}
    except OSError as exc:
        raise InputError(f"destination {dst} cannot be listed ({exc.strerror}); fix it") from None
    if not names:
        return
    hint = "choose an empty or new folder, or pass --force to copy into it anyway"
    if not src.exists():
        raise InputError(
            f"destination {dst} is not empty and the source does not exist yet; {hint}"
        )
    try:
        src_kind, dst_kind = node_kind(src), node_kind(dst)
    except LayoutError:
        raise InputError(f"destination {dst} holds corrupt Zarr metadata; {hint}") from None
    if dst_kind is None or dst_kind != src_kind:
        raise InputError(f"destination {dst} holds something that is not a copy of {src}; {hint}")


def free_space_warning(dst: Path, needed_bytes: int) -> str | None:
    """A one-line warning when the destination filesystem cannot hold ``needed_bytes`` more."""
    probe = dst if dst.exists() else dst.parent
    try:
        free = os.statvfs(probe).f_bavail * os.statvfs(probe).f_frsize
    except OSError:
        return None
    if needed_bytes > free:
        return (
            f"destination {dst} has {free / 2**20:.1f} MiB free but at least "
            f"{needed_bytes / 2**20:.1f} MiB are still to copy; free space there or choose "
            "another destination"
        )
    return None

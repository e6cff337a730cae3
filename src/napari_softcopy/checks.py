"""Validation of user input, shared by the CLI and the widget.

Every problem is one `InputError` whose message is a single line naming the path and what to
do. Nothing here leaves anything behind: the only write is the probe file with which
`check_pair` tests that the destination folder takes files, removed at once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .destinations import STATE_DIR
from .destinations.names import check_names
from .destinations.probe import probe
from .layout import OWN_TEMP_SUFFIX, LayoutError, find_arrays, is_own_temp_name, node_kind
from .platform import filesystem_type


class InputError(ValueError):
    """Bad user input: a one-line message naming the path and the fix."""


def _resolve(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def check_not_url(target: str | os.PathLike, what: str) -> None:
    """Refuse a URL where napari-softcopy takes a folder (``what``: ``"source"``, or
    ``"destination"``, where ``s3://`` is taken too). Without this, ``sftp://host/x``
    would be read as a folder ``./sftp:/host/x`` whose parent does not exist."""
    text = os.fspath(target)
    if not isinstance(text, str) or not _URL.match(text):
        return
    if what == "destination":
        if _is_s3_url(text):
            return
        raise InputError(
            f"destination {text}: only s3:// URLs are understood; mount the share (sshfs, "
            "SMB, NFS) and give its folder, or give s3://bucket/prefix"
        )
    raise InputError(
        f"{what} {text} is a URL; the {what} is the acquisition's folder on this computer "
        "(copies are made from a local or mounted folder)"
    )


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_folder(path: str | os.PathLike, what: str) -> Path:
    """The absolute path of ``path``, an existing folder (``what``: ``"source"`` or
    ``"destination"``, for the message), for a command that only reads it (``verify``)."""
    folder = _resolve(path)
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"{what} {folder} {why}; check the path")
    return folder


def check_source(source: str | os.PathLike, *, wait_for_source: bool = False) -> Path:
    """Check that ``source`` is a readable Zarr archive with valid metadata.

    Returns the absolute path. A missing source is accepted when ``wait_for_source``.
    """
    check_not_url(source, "source")
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

    The destination folder (or its parent) must be on a real filesystem and take a new
    file: an empty probe file with the engine's temporary suffix is created there and
    removed at once.

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
    check_not_url(destination, "destination")
    if _is_s3_url(destination):
        check_s3_destination(src, str(destination), force=force)
        return src, destination  # type: ignore[return-value] (a URL stays a URL)
    dst = _resolve(destination)
    check_apart(src, dst)
    if dst.exists() and not dst.is_dir():
        raise InputError(f"destination {dst} exists and is not a folder; choose another path")
    # First the filesystem of the nearest folder that exists: a parent missing under /proc
    # is not an unmounted drive.
    _check_real_disk(dst, next(p for p in (dst, *dst.parents) if p.is_dir()))
    parent = dst.parent
    if not parent.is_dir():
        raise InputError(
            f"the parent folder of destination {dst} does not exist (is the drive mounted?); "
            "create or mount it first"
        )
    _check_writable(dst if dst.is_dir() else parent)
    if dst.is_dir() and not force:
        _check_is_copy(src, dst)
    if src.is_dir():
        _check_names(src, dst, dst if dst.is_dir() else parent)
    return src, dst


def _check_names(src: Path, dst: Path, folder: Path) -> None:
    """Every name of the source must be one the destination can hold: probed there (the
    copy probes again, and records it), the source's names read (no stat). A name found
    later, in a live acquisition, is refused by the copy before that file is copied."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # (`_check_writable` said what is wrong with it)
    try:
        found = probe(fd)
    except OSError:
        return  # a full disk: the copy waits for space, and checks each name as it goes
    finally:
        os.close(fd)
    problem = check_names(src, found.capabilities(), dst)
    if problem is not None:
        raise InputError(problem)


def check_apart(
    source: str | os.PathLike, destination: str | os.PathLike, *, fix: str | None = None
) -> None:
    """Refuse a source and a destination that are one folder, or one inside the other.

    Compared by device and inode along the resolved paths, not by spelling: a symlink, a bind
    mount or another path to the same folder is caught too. (A path that does not exist yet
    is compared by its resolved spelling.) `check_pair` and `verify.verify_tree` both call it.

    Parameters
    ----------
    source, destination : path
        The two trees.
    fix : str, optional
        What to do instead, when it is not a copy's (a verification's, for instance).

    Raises
    ------
    InputError
        One line naming both paths and the fix.
    """
    src, dst = _resolve(source), _resolve(destination)
    dst_in_src, src_in_dst = _contains(src, dst), _contains(dst, src)
    if dst_in_src and src_in_dst:
        raise InputError(
            f"source {src} and destination {dst} are the same folder; "
            f"{fix or 'choose a folder outside the archive'}"
        )
    if dst_in_src:
        raise InputError(
            f"destination {dst} is inside the source {src}; "
            f"{fix or 'choose a folder outside the archive'}"
        )
    if src_in_dst:
        raise InputError(
            f"source {src} is inside the destination {dst}; "
            f"{fix or 'choose another destination folder'}"
        )


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _contains(outer: Path, inner: Path) -> bool:
    """True when ``inner`` is ``outer`` or lies below it."""
    real_outer, real_inner = Path(os.path.realpath(outer)), Path(os.path.realpath(inner))
    if _inside(real_inner, real_outer):
        return True
    # The same folder under two paths that no symlink explains (a bind mount): its device
    # and inode say so. Only folders that exist can be compared that way.
    target = _identity(real_outer)
    if target is None:
        return False
    return any(_identity(p) == target for p in (real_inner, *real_inner.parents))


#: Filesystems that hold no files of their own: kernel interfaces where a copy is refused or,
#: worse, accepted into memory that vanishes (devtmpfs) or that means something else (cgroup).
PSEUDO_FILESYSTEMS = frozenset(
    {
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "proc",
        "pstore",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "sysfs",
        "tracefs",
    }
)


def _check_real_disk(dst: Path, folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(
            f"destination {dst}: its folder {folder} cannot be opened ({exc.strerror}); "
            "fix its permissions or choose another destination"
        ) from None
    try:
        fs = filesystem_type(fd)
    finally:
        os.close(fd)
    if fs in PSEUDO_FILESYSTEMS:
        raise InputError(
            f"destination {dst} is on {fs}, a kernel filesystem, not a disk; "
            "choose a folder on a real disk"
        )


def _check_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: permissions, ACLs, read-only mounts, root
    squashing and filesystems that refuse new files all answer the one question that counts.
    The probe has the engine's own temporary name, which every walk and copy ignores.
    A full disk is not refused: space may be freed while the copy waits for it (the engine
    warns, `free_space_warning`, and retries)."""
    try:
        fd, probe = tempfile.mkstemp(
            prefix=".napari-softcopy-probe-", suffix=OWN_TEMP_SUFFIX, dir=folder
        )
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return
        raise InputError(
            f"cannot write in {folder} ({exc.strerror or exc}); choose a writable destination"
        ) from None
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(probe)


def _check_is_copy(src: Path, dst: Path) -> None:
    """An existing, non-empty destination must look like a copy of this archive."""
    try:
        with os.scandir(dst) as it:
            # (a copy killed early may have left only its own records and temporary files)
            names = {e.name for e in it if e.name != STATE_DIR and not is_own_temp_name(e.name)}
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


def _is_s3_url(target: str | os.PathLike) -> bool:
    from .destinations.s3_settings import is_s3_url

    return is_s3_url(target)


def check_s3_destination(src: Path, url: str, *, force: bool = False) -> None:
    """Check an ``s3://bucket/prefix`` destination: the URL, the settings, the server, the
    bucket and the credentials (by listing the prefix: nothing is written), and, where the
    prefix holds objects already, that they look like a copy of ``src``.

    The listing runs in a child process: obstore starts its thread pool on first use, and
    the CLI forks after these checks (`cli._copy_in_own_session`), which a process running
    threads must not do (the child would wait forever on threads that are not there).
    """
    from .destinations.s3_settings import S3SettingsError, parse_s3_url

    try:
        parse_s3_url(url)
    except S3SettingsError as exc:
        raise InputError(str(exc)) from None
    if (url, force) in _S3_CHECKED:  # (the CLI checks, then its engine: one listing will do)
        return
    names = _s3_top_names(url)
    if not names or force:
        _S3_CHECKED.add((url, force))
        return
    hint = "choose an empty or new prefix, or pass --force to copy into it anyway"
    if not src.exists():
        raise InputError(
            f"destination {url} is not empty and the source does not exist yet; {hint}"
        )
    metadata = {".zgroup", ".zarray", "zarr.json"}
    if not (names & metadata) or (names & metadata) != {
        e.name for e in os.scandir(src) if e.name in metadata
    }:
        raise InputError(f"destination {url} holds something that is not a copy of {src}; {hint}")
    _S3_CHECKED.add((url, force))


def _s3_top_names(url: str) -> set[str]:
    """The names at the top of the prefix: listed in this process where the keys are at hand
    (`s3_uploads.top_names`, 0.2 s less than a child process), else, or where that failed,
    by obstore in a child process, which also says what is wrong in one line."""
    from .destinations.s3_settings import S3SettingsError, parse_s3_url, store_config
    from .destinations.s3_uploads import top_names

    try:
        config, _options, provider = store_config()
    except S3SettingsError as exc:
        raise InputError(str(exc)) from None
    names = None if provider is not None else top_names(parse_s3_url(url), config)
    if names is not None:
        return set(names)
    probe = "from napari_softcopy.checks import _s3_names_main; _s3_names_main()"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe, url], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"destination {url} did not answer in 120 s; check the endpoint") from None
    if done.returncode == 2:
        raise InputError(done.stdout.strip())
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        raise InputError(f"destination {url} cannot be checked ({last}); check the settings")
    return set(json.loads(done.stdout))


#: S3 destinations this process found usable (`check_s3_destination`), with ``force``.
_S3_CHECKED: set[tuple[str, bool]] = set()


def _s3_names_main() -> None:
    """`check_s3_destination`'s child: the names at the prefix's top as JSON, or the one-line
    error and exit code 2."""
    from .destinations.s3 import S3Destination
    from .destinations.s3_settings import S3SettingsError

    try:
        dest = S3Destination(sys.argv[1], create=False)
    except (S3SettingsError, OSError) as exc:
        print(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
        raise SystemExit(2) from None
    try:
        print(json.dumps(sorted(dest.listdir("") or {})))
    finally:
        dest.close()


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

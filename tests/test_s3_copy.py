"""Copies to S3 end to end against a real SeaweedFS: the bytes go through `transfer`, the
CLI's ``verify`` and ``copy`` take an ``s3://`` URL, bad input is one line and exit 2 with
nothing written."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import obstore
import pytest

from faults_support import make_archive, run_cli
from napari_softcopy.destinations import open_destination
from napari_softcopy.transfer import sync_file
from s3_server import FailingProxy
from test_s3_destination import keys, raw_store

pytest_plugins = ("s3_server",)  # (its fixtures: s3_server, s3_env)
_prefixes = itertools.count()


def _sync_tree(src: Path, url: str) -> int:
    """Sync every file of ``src`` to ``url`` the way the engine's workers do; the number
    of files copied (not current already)."""
    dest = open_destination(url)
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    copied = 0
    try:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = path.relative_to(src).as_posix()
            st = os.stat(rel, dir_fd=fd, follow_symlinks=False)
            result = sync_file(
                rel, st, dest, force=False, stop=threading.Event(), src_dir_fd=fd, settle_s=0
            ).copy
            copied += result is not None and result.committed
        dest.flush()
    finally:
        os.close(fd)
        dest.close()
    return copied


@pytest.fixture
def archive(tmp_path) -> Path:
    src = tmp_path / "acq.zarr"
    make_archive(src, n_chunks=12, chunk_bytes=40_000, marker=False)
    return src


def test_a_copy_verifies_a_rerun_copies_nothing_and_a_flipped_byte_is_caught(
    s3_env, archive, tmp_path
):
    prefix = f"copy/{next(_prefixes)}/acq.zarr"
    url = f"s3://softcopy/{prefix}"
    assert _sync_tree(archive, url) == 13  # (zarr.json and 12 chunks)
    store = raw_store(s3_env, prefix)
    etags = {m["path"]: m["e_tag"] for batch in obstore.list(store) for m in batch}
    assert _sync_tree(archive, url) == 0  # the rerun rewrites no object
    again = {m["path"]: m["e_tag"] for batch in obstore.list(store) for m in batch}
    assert again == etags
    ok = run_cli("verify", "--checksum", archive, url, state_dir=tmp_path / "state")
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert "identical: 13 files" in ok.stdout
    # One flipped byte in one object, its size and metadata kept (a bit rot on the server).
    head = obstore.get(store, "c/5")
    data = bytearray(head.bytes())
    data[1234] ^= 0x01
    obstore.put(store, "c/5", bytes(data), attributes=head.attributes, use_multipart=False)
    caught = run_cli("verify", "--checksum", archive, url, state_dir=tmp_path / "state")
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "c/5" in caught.stdout and "DIFFERENT" in caught.stdout


def test_verify_of_a_missing_copy_says_missing(s3_env, archive, tmp_path):
    url = f"s3://softcopy/copy/{next(_prefixes)}/never-copied.zarr"
    result = run_cli("verify", archive, url, state_dir=tmp_path / "state")
    assert result.returncode == 1
    assert "13 missing" in result.stdout


@pytest.mark.parametrize(
    ("url", "env", "message"),
    [
        ("s3://no-such-bucket/acq.zarr", {}, "bucket no-such-bucket does not exist"),
        ("s3://softcopy/{prefix}", {"AWS_SECRET_ACCESS_KEY": "wrong"}, "refused the credentials"),
        ("s3://softcopy/{prefix}", {"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"}, "cannot reach"),
        ("s3://x/acq.zarr", {}, "not a valid bucket name"),
        # No keys anywhere: object_store asks the cloud instance's metadata service, which
        # (here on a free port, as off a cloud instance) does not answer.
        (
            "s3://softcopy/{prefix}",
            {
                "AWS_ACCESS_KEY_ID": None,
                "AWS_SECRET_ACCESS_KEY": None,
                "AWS_PROFILE": None,
                "AWS_SHARED_CREDENTIALS_FILE": "{tmp}/no-credentials",
                "AWS_CONFIG_FILE": "{tmp}/no-config",
                "AWS_METADATA_ENDPOINT": "http://127.0.0.1:{port}",
            },
            "no credentials found",
        ),
    ],
)
def test_bad_s3_destinations_are_one_line_exit_2_and_nothing_is_written(
    s3_env, archive, tmp_path, monkeypatch, url, env, message
):
    from s3_server import free_ports

    prefix = f"bad/{next(_prefixes)}"
    url = url.format(prefix=prefix)
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value.format(port=free_ports(1)[0], tmp=tmp_path))
    for command in ("copy", "verify"):
        result = run_cli(command, archive, url, state_dir=tmp_path / "state", timeout=60)
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (command, result.stderr)
        assert "wrong" not in lines[0]
    assert keys(s3_env, prefix) == set()
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*.lock"))


def test_the_copy_helper_process_that_cannot_serve_s3_is_said_once(s3_env, tmp_path, monkeypatch):
    """A finished archive's backlog would get a second copy process on a local disk; an
    object store has no descriptor to hand it, and the status says so (never silently)."""
    from napari_softcopy.engine import CopyEngine, CopyOptions, Tuning
    from napari_softcopy.platform import available_cores

    if available_cores() < 2:
        pytest.skip("the copy helper is only considered with two cores or more")
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(tmp_path / "state"))
    src = tmp_path / "finished.zarr"
    make_archive(src, n_chunks=30, chunk_bytes=10_000)
    url = f"s3://softcopy/helper/{next(_prefixes)}/finished.zarr"
    engine = CopyEngine(
        src, url, CopyOptions(low_priority=False), tuning=Tuning(copy_helper_files=10)
    )
    engine.start()
    engine.wait()
    status = engine.status()
    assert status.state == "verified", status.message
    assert any(n.startswith("the copy helper process is off") for n in status.notices)


def test_a_large_finish_walks_in_the_copy_s_process_and_lists_nothing_again(
    s3_env, tmp_path, monkeypatch
):
    """A local copy's final walk is split across a helper process from
    `Tuning.parallel_verify_files` files; an S3 copy's is not: a helper would list the whole
    prefix again (2-5 s at 50,000 objects), where the copy's process reads its own tree. No
    listing after the first chunk's upload, in the copy or its finish."""
    from napari_softcopy.engine import CopyEngine, CopyOptions, Tuning
    from napari_softcopy.platform import available_cores

    if available_cores() < 2:
        pytest.skip("the walk is only split with two cores or more")
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(tmp_path / "state"))
    src = tmp_path / "finished.zarr"
    make_archive(src, n_chunks=30, chunk_bytes=1_000)
    url = f"s3://softcopy/onewalk/{next(_prefixes)}/finished.zarr"
    with FailingProxy(s3_env, lambda *_: False) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        engine = CopyEngine(
            src, url, CopyOptions(low_priority=False), tuning=Tuning(parallel_verify_files=0)
        )
        engine.start()
        engine.wait()
    status = engine.status()
    assert status.state == "verified", status.message
    requests = list(proxy.requests)
    first = next(i for i, (m, p) in enumerate(requests) if m == "PUT" and p.endswith("/c/0"))
    later = [r for r in requests[first:] if r == ("GET", "/softcopy")]
    assert later == [], f"{len(later)} listing(s) of the bucket after the copy began"


def test_the_first_scans_helper_that_cannot_serve_s3_is_said_once(s3_env, tmp_path, monkeypatch):
    """A long first scan shares its walk with a helper process where the destination is a
    folder; an object store's listing is its own, and the status says so (never silently)."""
    from napari_softcopy.engine import CopyEngine, CopyOptions, Tuning
    from napari_softcopy.platform import available_cores

    if available_cores() < 2:
        pytest.skip("the scan's helper is only considered with two cores or more")
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(tmp_path / "state"))
    src = tmp_path / "finished.zarr"
    make_archive(src, n_chunks=4, chunk_bytes=1_000)
    (src / "labels").mkdir()  # (a second folder at the root: one to share)
    (src / "labels" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    url = f"s3://softcopy/scan/{next(_prefixes)}/finished.zarr"
    tuning = Tuning(scan_split_after_s=0)
    engine = CopyEngine(src, url, CopyOptions(low_priority=False), tuning=tuning)
    engine.start()
    engine.wait()
    status = engine.status()
    assert status.state == "verified", status.message
    said = [n for n in status.notices if n.startswith("the first scan's helper process")]
    assert said == [
        "the first scan's helper process is off: the destination is not a local or mounted folder"
    ]


def test_the_start_s_check_of_a_prefix_lists_its_top_once_in_this_process(
    s3_env, archive, monkeypatch
):
    """The pre-flight check (`checks.check_s3_destination`) needs the names at the prefix's
    top: one listing with a delimiter, however many objects lie below (it listed every
    object and read the index, in a child process), and it still refuses a prefix holding
    something else."""
    from napari_softcopy import checks

    prefix = f"preflight/{next(_prefixes)}/acq.zarr"
    store = raw_store(s3_env, prefix)
    names = [f"c/0/{i}" for i in range(1_100)] + ["zarr.json", ".softcopy/s3-root"]
    for name in names:  # (more than one page of a full listing: 1,000 keys)
        obstore.put(store, name, b"{}", use_multipart=False)
    for force, refused in ((True, False), (False, True)):
        requests: list[str] = []

        def seen(method, path, _headers, requests=requests) -> bool:
            requests.append(f"{method} {path}")
            return False

        with FailingProxy(s3_env, seen) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
            checks._S3_CHECKED.clear()
            url = f"s3://softcopy/{prefix}"
            if refused:  # (the source has no zarr.json: not a copy of it)
                (archive / "zarr.json").rename(archive / "zarr.json.away")
                with pytest.raises(checks.InputError, match="not a copy of"):
                    checks.check_s3_destination(archive, url, force=force)
            else:
                checks.check_s3_destination(archive, url, force=force)
        assert requests == ["GET /softcopy"], requests

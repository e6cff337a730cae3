"""Live copies to S3 against a real SeaweedFS, through the CLI as a user runs it: a
tensorstore acquisition written while it is copied ends complete and identical with the
marker object last; a rerun rewrites no object; a copier killed with SIGKILL resumes; a
server that goes away mid-copy is waited for, visibly, and the copy then completes."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import obstore
import pytest

from faults_support import make_archive, poll, read_status, run_cli, start_cli
from napari_softcopy.destinations import STATE_DIR
from napari_softcopy.destinations.s3 import META_FROM, META_MTIME, S3Destination
from s3_server import FailingProxy, SeaweedS3, seaweed
from test_s3_destination import raw_store

pytest_plugins = ("s3_server",)  # (its fixtures: s3_server, s3_env)
_prefixes = itertools.count()


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(d))
    return d


def listing(server: SeaweedS3, prefix: str) -> dict[str, tuple[str, object]]:
    """``{key: (ETag, last modified)}`` of the objects below ``prefix`` (ours excluded)."""
    out = {}
    for batch in obstore.list(raw_store(server, prefix)):
        for m in batch:
            if not m["path"].startswith(STATE_DIR + "/"):
                out[m["path"]] = (m["e_tag"], m["last_modified"])
    return out


def source_files(src: Path) -> dict[str, Path]:
    return {p.relative_to(src).as_posix(): p for p in src.rglob("*") if p.is_file()}


def assert_s3_identical(src: Path, server: SeaweedS3, prefix: str) -> int:
    """Every source file is an object of the same bytes, with the source's mtime recorded
    for it (in the index; on the object too from `META_FROM` bytes), and there is no other
    object (but ours under .softcopy)."""
    store = raw_store(server, prefix)
    files = source_files(src)
    assert set(listing(server, prefix)) == set(files)
    reader = S3Destination(f"s3://softcopy/{prefix}", create=False)  # (the server's env)
    try:
        for rel, path in files.items():
            got = obstore.get(store, rel)
            data = bytes(got.bytes())
            assert data == path.read_bytes(), rel
            mtime = path.stat().st_mtime_ns
            assert reader.stat(rel).mtime_ns == mtime, rel
            if len(data) >= META_FROM:
                assert got.attributes[META_MTIME] == str(mtime), rel
    finally:
        reader.close()
    return len(files)


def test_a_live_tensorstore_acquisition_copies_to_s3_with_the_marker_last(
    s3_env, tmp_path, state_dir
):
    from napari_softcopy.simulate import simulate

    src = tmp_path / "acq.zarr"
    prefix = f"live/{next(_prefixes)}/acq.zarr"
    url = f"s3://softcopy/{prefix}"
    errors: list[BaseException] = []

    def acquire():
        try:
            simulate(src, "demo", writer="tensorstore", locking="lockfile", timepoints=8)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=acquire, daemon=True)
    writer.start()
    poll(lambda: (src / "zarr.json").exists(), 30, "the acquisition to start")
    # A reader that waits for the marker: the first listing that shows it must show the
    # whole archive (S3 lists what was written before, so the marker was written last).
    at_marker: list[set[str]] = []
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            keys = set(listing(s3_env, prefix))
            if "complete" in keys:
                at_marker.append(keys)
                return
            watching.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    copier = start_cli("copy", src, url, state_dir=state_dir)
    try:
        assert copier.wait(120) == 0
    finally:
        copier.kill()
        watching.set()
    writer.join(30)
    watcher.join(5)
    assert not errors, errors
    n = assert_s3_identical(src, s3_env, prefix)
    assert n > 100  # (8 timepoints of chunks, the metadata and the marker)
    assert at_marker and at_marker[0] == set(source_files(src)), "a partial archive was marked"
    # The rerun on the finished pair rewrites no object (the marker aside: it is written
    # again only after a verification, as on a disk).
    before = listing(s3_env, prefix)
    again = run_cli("copy", src, url, state_dir=state_dir)
    assert again.returncode == 0, again.stderr
    after = listing(s3_env, prefix)
    changed = sorted(k for k in before if after.get(k) != before[k] and k != "complete")
    assert not changed, f"the rerun rewrote {changed[:5]}"


def test_a_copier_killed_with_sigkill_resumes_and_copies_again_only_what_its_index_missed(
    s3_env, tmp_path, state_dir
):
    src = tmp_path / "acq.zarr"
    make_archive(src, n_chunks=120, chunk_bytes=50_000)
    prefix = f"kill/{next(_prefixes)}/acq.zarr"
    url = f"s3://softcopy/{prefix}"
    # 2 MB/s: 6 MB take 3 s, so the kill lands mid-copy.
    copier = start_cli("copy", src, url, "--bandwidth", "2", state_dir=state_dir)
    try:
        poll(lambda: len(listing(s3_env, prefix)) >= 20, 60, "20 objects copied", 0.05)
    finally:
        copier.kill()
        copier.wait(10)
    before = listing(s3_env, prefix)
    assert 20 <= len(before) < 122 and "complete" not in before
    # What the index written before the kill knows (the objects published since carry no
    # metadata below `META_FROM` bytes: nothing records their source's version, so those
    # are copied again).
    reader = S3Destination(url, create=False)
    indexed = {rel for rel, info in reader._tree.items() if info.mtime_ns is not None}
    reader.close()
    result = run_cli("copy", src, url, state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert assert_s3_identical(src, s3_env, prefix) == 122
    # (an object store has no plain listing of folders: the resume scan says so, once)
    assert result.stderr.count("the resume scan's plain listing is off") == 1, result.stderr
    after = listing(s3_env, prefix)
    rewritten = sorted(k for k in before if after[k] != before[k])
    assert not set(rewritten) & indexed, f"copied again though indexed: {rewritten[:5]}"


def test_the_server_going_away_mid_copy_is_waited_for_then_the_copy_completes(
    tmp_path, state_dir, monkeypatch
):
    with seaweed(tmp_path / "own-server") as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        src = tmp_path / "acq.zarr"
        make_archive(src, n_chunks=120, chunk_bytes=50_000)
        prefix = "away/acq.zarr"
        status = tmp_path / "status.json"

        def away() -> str:  # (what the status says the copy waits for at the destination)
            return (read_status(status) or {}).get("destination_away") or ""

        copier = start_cli(
            "copy",
            src,
            f"s3://softcopy/{prefix}",
            "--bandwidth",
            "2",
            "--status-file",
            status,
            state_dir=state_dir,
        )
        try:
            poll(lambda: len(listing(server, prefix)) >= 10, 60, "10 objects copied", 0.05)
            server.kill()
            # Visible: the copy says it waits for the destination, and is not failed.
            waiting = poll(
                lambda: "cannot reach" in away(),
                90,
                "the status to say the copy waits for the destination",
                0.1,
            )
            now = read_status(status)
            assert waiting and now["state"] in ("copying", "finishing"), now["message"]
            assert "retrying" in now["destination_away"], now["destination_away"]
            said = [e for e in now["errors"] if "cannot reach" in e["message"]]
            assert said and all("retrying in" in e["message"] for e in said), now["errors"]
            server.start()
            code = copier.wait(120)
            end = read_status(status) or {}
            assert code == 0, (end.get("state"), end.get("message"), end.get("errors", [])[-3:])
        finally:
            copier.kill()
            copier.wait(10)
        assert assert_s3_identical(src, server, prefix) == 122


def test_the_finish_lists_nothing_again_and_verify_catches_what_changed_behind_its_back(
    s3_env, tmp_path, state_dir, monkeypatch
):
    """The copy's final verification reads the copy's own object tree (`s3_copiers`): after
    the start's listing the finish lists nothing (two listings of 50,000 objects were most
    of the time from the last upload to the marker). What that tree cannot see, an object
    deleted and one overwritten below the prefix by another party while the copy runs, is
    what ``napari-softcopy verify`` catches, as docs/s3.md says."""
    src = tmp_path / "acq.zarr"
    make_archive(src, n_chunks=30, chunk_bytes=10_000, marker=False)
    prefix = f"behind/{next(_prefixes)}/acq.zarr"
    url = f"s3://softcopy/{prefix}"
    with FailingProxy(s3_env, lambda *_: False) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        copier = start_cli("copy", src, url, state_dir=state_dir)
        try:
            files = set(source_files(src))
            poll(lambda: set(listing(s3_env, prefix)) == files, 60, "every file copied", 0.05)
            # (the bucket's own requests: the start's listing and its multipart uploads')
            listings = sum(1 for m, p in proxy.requests if m == "GET" and p == "/softcopy")
            store = raw_store(s3_env, prefix)
            obstore.delete(store, "c/3")
            obstore.put(store, "c/4", b"not the source's chunk")
            (src / "complete").write_text("done\n")
            assert copier.wait(120) == 0
        finally:
            copier.kill()
        again = sum(1 for m, p in proxy.requests if m == "GET" and p == "/softcopy")
    assert again == listings, f"the finish listed the bucket {again - listings} more time(s)"
    assert "complete" in listing(s3_env, prefix)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    caught = run_cli("verify", src, url, state_dir=state_dir)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "1 missing, 1 mismatched" in caught.stdout, caught.stdout
    assert "c/3" in caught.stdout and "c/4" in caught.stdout

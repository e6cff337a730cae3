"""The manifest's hashes of an S3 copy taken at upload (`hashes`, `Destination.
acknowledged_digest`), against a real SeaweedFS: where the server checks each upload's
CRC64NVME, no object is read back for the manifest, which still equals a fresh hash of every
object, and the copy keeps no hash journal (a rerun takes the hashes from the index); where
it does not (or refuses the checksum), the copy hashes what it sent, said once; a byte
flipped on the server afterwards is still caught by ``verify --checksum`` and by ``verify
DEST``."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import blake3
import obstore
import pytest

from destination_tests import publish
from faults_support import make_archive, poll, read_status, run_cli, start_cli
from napari_softcopy.assembly import assemble
from napari_softcopy.destinations import STATE_DIR, FileInfo
from napari_softcopy.destinations.s3 import META_FROM, META_MTIME, META_STAMP, S3Destination
from napari_softcopy.manifest import MANIFEST
from s3_server import FailingProxy
from support import assert_manifest_is_fresh
from test_s3_destination import raw_store

pytest_plugins = ("s3_server",)  # (its fixtures: s3_server, s3_env)
_prefixes = itertools.count()

#: The checksum `s3_checksums.refuses_wrong_checksum` sends (that of other bytes).
_WRONG = "rzr3nGEtBMk="


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(d))
    return d


#: Files the final verification compares whole with the source (`verify._same_content`),
#: and the marker (a rerun reads what is there).
_METADATA = ("zarr.json", ".zarray", ".zattrs", ".zgroup", "/complete")


def data_gets(proxy: FailingProxy | list, bucket_prefix: str) -> list[str]:
    """The GETs of the copy's chunk objects (not metadata, not ``.softcopy``) the proxy
    passed on (or among the proxy's ``requests`` given)."""
    base = f"/softcopy/{bucket_prefix}/"
    requests = proxy.requests if isinstance(proxy, FailingProxy) else proxy
    return [
        path
        for method, path in requests
        if method == "GET"
        and path.startswith(base)
        and f"/{STATE_DIR}/" not in path
        and not path.endswith(_METADATA)
    ]


def listing_of(store) -> list[str]:
    return [meta["path"] for batch in obstore.list(store) for meta in batch]


def live_copy(src: Path, url: str, state_dir: Path, timepoints: int = 4) -> tuple[str, dict]:
    """A tensorstore acquisition written while the CLI copies it to ``url``; the copier's
    stderr and its last status."""
    from napari_softcopy.simulate import simulate

    errors: list[BaseException] = []

    def acquire() -> None:
        try:
            simulate(src, "demo", writer="tensorstore", locking="lockfile", timepoints=timepoints)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=acquire, daemon=True)
    writer.start()
    poll(lambda: (src / "zarr.json").exists(), 30, "the acquisition to start")
    status = state_dir.parent / "status.json"
    copier = start_cli("copy", src, url, "--status-file", status, state_dir=state_dir)
    try:
        _stdout, stderr = copier.communicate(timeout=180)
        assert copier.returncode == 0, stderr
    finally:
        copier.kill()
    writer.join(30)
    assert not errors, errors
    return stderr, read_status(status) or {}


def test_a_live_copy_reads_no_object_back_and_its_manifest_is_still_right(
    s3_env, tmp_path, state_dir, monkeypatch
):
    prefix = f"uphash/{next(_prefixes)}/acq.zarr"
    url = f"s3://softcopy/{prefix}"
    with FailingProxy(s3_env, lambda *_: False) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        stderr, _status = live_copy(tmp_path / "acq.zarr", url, state_dir)
        first = list(proxy.requests)
        proxy.requests.clear()
        # One object lost: the rerun copies it again and makes the manifest anew, taking the
        # other objects' hashes from the index the first run wrote.
        store = raw_store(s3_env, prefix)
        lost = sorted(r for r in listing_of(store) if "/c/" in r or r.startswith("c/"))[0]
        obstore.delete(store, lost)
        again = run_cli("copy", tmp_path / "acq.zarr", url, state_dir=state_dir)
        assert again.returncode == 0, again.stderr
    assert "hashing uploads for the manifest is off" not in stderr
    puts = [p for m, p in first if m == "PUT" and f"/{STATE_DIR}/" not in p]
    assert len(puts) > 50  # (the chunks went through the proxy)
    # No hash journal: the server holds what it would (`hashes`).
    journal = [p for m, p in first if m == "PUT" and f"/{STATE_DIR}/hashes-" in p]
    assert journal == [], journal[:3]
    assert data_gets(proxy, prefix) == [], "the rerun read objects back for the manifest"
    rerun_puts = {p for m, p in proxy.requests if m == "PUT"}
    assert {f"/softcopy/{prefix}/{lost}", f"/softcopy/{prefix}/{MANIFEST}"} <= rerun_puts
    assert data_gets(first, prefix) == [], "objects were read back for the manifest"
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    entries = assert_manifest_is_fresh(url)
    assert len(entries) > 50
    # A bit flipped on the server after the upload: both checks read every object.
    store = raw_store(s3_env, prefix)
    rel = sorted(r for r in entries if "/c/" in r or r.startswith("c/"))[-1]
    head = obstore.get(store, rel)
    data = bytearray(head.bytes())
    data[len(data) // 2] ^= 0x01
    obstore.put(store, rel, bytes(data), attributes=head.attributes, use_multipart=False)
    src = tmp_path / "acq.zarr"
    caught = run_cli("verify", "--checksum", src, url, state_dir=state_dir)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert rel in caught.stdout
    alone = run_cli("verify", url, state_dir=state_dir)
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert rel in alone.stdout


def test_a_server_that_does_not_check_checksums_is_said_once_and_the_copy_hashes_what_it_sent(
    s3_env, tmp_path, state_dir, monkeypatch
):
    """A server that stores an upload whose CRC64NVME is wrong (answered 200 here for the
    start's check) does not vouch for the bytes: said once; the manifest holds the hashes the
    copy made of the bytes it sent (no object read back), and they are the objects'."""

    def wrong_checksum(method, _path, headers) -> bool:
        return method == "PUT" and headers.get("x-amz-checksum-crc64nvme") == _WRONG

    prefix = f"uphash/{next(_prefixes)}/acq.zarr"
    url = f"s3://softcopy/{prefix}"
    with FailingProxy(s3_env, wrong_checksum, answer=(200, "Stored")) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        stderr, status = live_copy(tmp_path / "acq.zarr", url, state_dir, timepoints=2)
    assert proxy.failed == 1  # (the start's check, once)
    assert stderr.count("hashing uploads for the manifest is off") == 1, stderr
    notices = [n for n in status.get("notices") or [] if n.startswith("hashing uploads")]
    assert len(notices) == 1 and "CRC64NVME was wrong" in notices[0], status.get("notices")
    assert "the hashes of the bytes as sent" in notices[0]
    assert data_gets(proxy, prefix) == [], "objects read back: the copy hashed what it sent"
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    assert_manifest_is_fresh(url)


def test_the_manifest_takes_the_hash_each_upload_kept_without_reading_an_object_back(s3_env):
    """Each acknowledged upload's BLAKE3 is kept on its object (`S3Destination.
    acknowledged_digest`), so the manifest needs no hash journal: no object this copy
    uploaded is read back, while the one another tool put there is; the manifest equals a
    fresh hash of every object. Another version than the object's gets no hash from it. A
    later run takes the hash from the index, for the object whose ETag it has, not for one
    another tool put there since with our mtime and stamp (as ``rclone`` keeps its own
    metadata). (A tool that put other bytes with all of our metadata would defeat the one
    rule itself, on S3 as on a disk; ``verify DEST`` reads every object and finds them.)"""
    prefix = f"uphash/{next(_prefixes)}/acq.zarr"
    url = f"s3://softcopy/{prefix}"
    obstore.put(raw_store(s3_env, prefix), "c/other", b"not this copy's upload")
    with FailingProxy(s3_env, lambda *_: False) as proxy:
        dest = S3Destination(url, env=proxy.env())
        assert dest.capabilities.verified_upload_digest
        for i in range(40):
            publish(dest, f"c/{i}", b"chunk %d" % i)
        info = dest.stat("c/7", stamp=True)
        assert dest.acknowledged_digest("c/7", info) == blake3.blake3(b"chunk 7").hexdigest()
        other_version = FileInfo(False, True, info.size, info.mtime_ns + 1, info.stamp)
        assert dest.acknowledged_digest("c/7", other_version) is None
        assert dest.acknowledged_digest("c/other", dest.stat("c/other", stamp=True)) is None
        proxy.requests.clear()
        done = assemble(dest, source="/the/source", marker=None, journal=None)
        gets = data_gets(proxy, prefix)
        dest.close()
    assert gets == [f"/softcopy/{prefix}/c/other"], gets
    assert (done.files, done.from_uploads, done.hashed) == (41, 40, 1)
    entries = assert_manifest_is_fresh(url)
    assert len(entries) == 41
    reader = S3Destination(url, create=False)
    try:
        before = reader.stat("c/7", stamp=True)
        assert reader.acknowledged_digest("c/7", before) == blake3.blake3(b"chunk 7").hexdigest()
        assert reader.acknowledged_digest("c/other", reader.stat("c/other", stamp=True)) is None
    finally:
        reader.close()
    # Another tool puts other bytes of the same size with our mtime and stamp: only the ETag
    # tells them apart, and the index's entry (with its hash) no longer counts.
    store = raw_store(s3_env, prefix)
    kept = {META_MTIME: str(before.mtime_ns), META_STAMP: before.stamp.decode()}
    obstore.put(store, "c/7", b"chunk 8", attributes=kept, use_multipart=False)
    reader = S3Destination(url, create=False)
    try:
        info = reader.stat("c/7", stamp=True)
        assert info == before  # (size, source mtime and stamp alike)
        assert reader.acknowledged_digest("c/7", info) is None
    finally:
        reader.close()


def test_a_proven_folders_manifest_lines_take_each_uploads_hash_without_a_journal(s3_env):
    """A folder proven during an S3 copy gets its manifest lines then (`assembly.
    ManifestLines`), from the hashes kept of its uploads: the copy keeps no journal there.
    A row of another version than the object's gives none (the finish makes them)."""
    from napari_softcopy.assembly import ManifestLines

    url = f"s3://softcopy/uphash/{next(_prefixes)}/acq.zarr"
    dest = S3Destination(url, env=s3_env.env())
    try:
        for i in range(3):
            publish(dest, f"c/{i}", b"chunk %d" % i)
        infos = [dest.stat(f"c/{i}", stamp=True) for i in range(3)]
        rows = [(str(i), info.size, info.mtime_ns, info.stamp) for i, info in enumerate(infos)]
        made = ManifestLines(None, dest)("c", rows)
        assert made is not None
        lines = [json.loads(line) for line in made.decode().splitlines()]
        assert lines == [
            {"path": f"c/{i}", "size": 7, "blake3": blake3.blake3(b"chunk %d" % i).hexdigest()}
            for i in range(3)
        ]
        name, size, mtime_ns, stamp = rows[1]
        rows[1] = (name, size, mtime_ns + 1, stamp)
        assert ManifestLines(None, dest)("c", rows) is None
    finally:
        dest.close()


def test_a_copy_killed_before_its_index_keeps_each_large_uploads_hash_in_its_metadata(
    s3_env, tmp_path, state_dir, monkeypatch
):
    """The objects of at least `META_FROM` bytes a copier killed with SIGKILL uploaded after
    its index was last written (here: its index removed) are looked at with a HEAD by the
    resumed copy, which reads their source mtime and the BLAKE3 of their upload from their
    metadata: it copies none of them again, and its manifest reads no object back."""
    src = tmp_path / "acq.zarr"
    make_archive(src, n_chunks=40, chunk_bytes=META_FROM)
    prefix = f"uphash/{next(_prefixes)}/acq.zarr"
    url = f"s3://softcopy/{prefix}"
    store = raw_store(s3_env, prefix)

    def chunks() -> int:
        return sum(1 for r in listing_of(store) if r.startswith("c/"))

    # 8 MB/s: 42 MB take 5 s, so the kill lands mid-copy.
    copier = start_cli("copy", src, url, "--bandwidth", "8", state_dir=state_dir)
    try:
        poll(lambda: chunks() >= 10, 60, "10 chunk objects copied", 0.05)
    finally:
        copier.kill()
        copier.wait(10)
    before = [r for r in listing_of(store) if not r.startswith(STATE_DIR)]
    large = [r for r in before if r.startswith("c/")]
    assert 10 <= len(large) < 40
    index = [r for r in listing_of(store) if r.startswith(f"{STATE_DIR}/s3-index")]
    if index:
        obstore.delete(store, index)
    with FailingProxy(s3_env, lambda *_: False) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        result = run_cli("copy", src, url, state_dir=state_dir)
        assert result.returncode == 0, result.stderr
    assert data_gets(proxy, prefix) == [], "objects were read back for the manifest"
    again = {p.removeprefix(f"/softcopy/{prefix}/") for m, p in proxy.requests if m == "PUT"}
    assert not again & set(large), f"copied again: {sorted(again & set(large))[:5]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    entries = assert_manifest_is_fresh(url)
    assert set(before) <= set(entries)

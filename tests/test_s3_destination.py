"""`S3Destination` keeps the `Destination` contract (`DestinationTests`) against a real S3
server (SeaweedFS on 127.0.0.1, `s3_server`), and says what is wrong at the start in one line
(no bucket, refused credentials, no server) without writing anything."""

from __future__ import annotations

import base64
import errno
import itertools
import json
import os
import socket
from collections.abc import Callable, Iterator

import obstore
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st
from obstore.store import S3Store

from destination_tests import MTIME_NS, STAMP, DestinationTests, publish, read_back
from napari_softcopy.destinations import Destination, FileInfo, is_copy_of
from napari_softcopy.destinations.s3 import (
    INDEX,
    META_DIGEST,
    META_FROM,
    META_MTIME,
    META_STAMP,
    S3Destination,
)
from napari_softcopy.destinations.s3_settings import (
    S3SettingsError,
    describe_error,
    is_transient,
    parse_s3_url,
    store_config,
)
from napari_softcopy.destinations.s3_stores import s3_store
from napari_softcopy.destinations.s3_uploads import signed_request
from s3_server import FailingProxy, free_ports

pytest_plugins = ("s3_server",)  # (its fixtures: s3_server, s3_env)
_prefixes = itertools.count()


def raw_store(server, prefix: str = "") -> S3Store:
    """The test's own view of the bucket, past the code under test."""
    return S3Store(
        "softcopy",
        prefix=prefix or None,
        endpoint=server.endpoint,
        access_key_id=server.key,
        secret_access_key=server.secret,
        region="us-east-1",
        client_options={"allow_http": True},
    )


def keys(server, prefix: str) -> set[str]:
    return {m["path"] for batch in obstore.list(raw_store(server, prefix)) for m in batch}


def _empty_the_prefix(dest: S3Destination) -> None:
    """Remove every object below the destination's prefix, as someone emptying it (or
    re-creating the bucket) behind the copy's back does."""
    store = dest._store
    for batch in obstore.list(store):
        obstore.delete(store, [m["path"] for m in batch])


class TestS3Destination(DestinationTests):
    @pytest.fixture
    def destination(self, s3_env) -> Iterator[S3Destination]:
        dest = S3Destination(f"s3://softcopy/conformance/{os.getpid()}-{next(_prefixes)}")
        yield dest
        dest.close()

    @pytest.fixture
    def replace_root(self) -> Callable[[Destination], None]:
        return _empty_the_prefix


def test_a_large_object_carries_the_source_mtime_and_stamp_a_small_one_only_the_index(s3_env):
    """Metadata made each small PUT cost the server about 7 % more: below `META_FROM` the
    index alone records the source's mtime and stamp."""
    prefix = f"meta/{next(_prefixes)}"
    dest = S3Destination(f"s3://softcopy/{prefix}")
    publish(dest, "0/0", b"chunk bytes")
    publish(dest, "0/1", b"s" * META_FROM)
    dest.close()
    small, large = (
        obstore.get(raw_store(s3_env, prefix), rel, options={"head": True}).attributes
        for rel in ("0/0", "0/1")
    )
    assert META_MTIME not in small and META_STAMP not in small and META_DIGEST not in small
    assert large[META_MTIME] == str(MTIME_NS)
    assert large[META_STAMP] == STAMP.decode()
    assert large[META_DIGEST] == xxhash.xxh3_128(b"s" * META_FROM).hexdigest()
    again = S3Destination(f"s3://softcopy/{prefix}", create=False)
    try:
        assert again.stat("0/0", stamp=True).mtime_ns == MTIME_NS  # (from the index)
        assert again.stat("0/0", stamp=True).stamp == STAMP
    finally:
        again.close()


def test_a_new_run_knows_the_copies_from_the_index_and_without_it(s3_env):
    prefix = f"index/{next(_prefixes)}"
    url = f"s3://softcopy/{prefix}"
    dest = S3Destination(url)
    for i in range(20):
        publish(dest, f"c/{i}", b"x" * i)
    dest.close()
    assert INDEX in keys(s3_env, prefix)

    class Source:
        st_mtime_ns, st_ino, st_ctime_ns = MTIME_NS, 1234, 1600000000987654321

    def all_copies(d: S3Destination) -> bool:
        listed = d.listdir("c", stamps=True)
        return len(listed) == 20 and all(
            is_copy_of(_source(i), listed[str(i)], d.capabilities) for i in range(20)
        )

    def _source(i):
        s = Source()
        s.st_size = i
        return s

    again = S3Destination(url, create=False)
    known = [o.mtime_ns is not None for rel, o in again._tree.items() if rel.startswith("c/")]
    assert len(known) == 20 and all(known), "the index was not used"
    assert all_copies(again)
    # Without the index (a run killed before writing it) a small object carries no source
    # mtime: none is taken for a copy (each is copied again); a large one's metadata says.
    again.close()
    writer = S3Destination(url)
    publish(writer, "c/large", b"L" * META_FROM)
    writer.close()
    obstore.delete(raw_store(s3_env, prefix), INDEX)
    blind = S3Destination(url, create=False)
    listed = blind.listdir("c", stamps=True)
    assert not any(is_copy_of(_source(i), listed[str(i)], blind.capabilities) for i in range(20))
    large = _source(0)
    large.st_size = META_FROM
    assert is_copy_of(large, listed["large"], blind.capabilities)


def test_an_object_rewritten_by_another_tool_is_not_taken_for_a_copy(s3_env):
    prefix = f"foreign/{next(_prefixes)}"
    url = f"s3://softcopy/{prefix}"
    dest = S3Destination(url)
    publish(dest, "f", b"12345")
    dest.close()
    obstore.put(raw_store(s3_env, prefix), "f", b"54321")  # (same size, no metadata)

    class Source:
        st_size, st_mtime_ns, st_ino, st_ctime_ns = 5, MTIME_NS, 1234, 1600000000987654321

    again = S3Destination(url, create=False)
    assert not is_copy_of(Source(), again.stat("f"), again.capabilities)
    assert read_back(again, "f") == b"54321"


def test_a_large_file_goes_as_a_multipart_upload_and_reads_back(s3_env, monkeypatch):
    from napari_softcopy.destinations import s3, s3_objects

    monkeypatch.setattr(s3_objects, "SPILL_BYTES", 1024 * 1024)
    monkeypatch.setattr(s3, "PART_BYTES", 5 * 1024 * 1024)
    dest = S3Destination(f"s3://softcopy/large/{next(_prefixes)}")
    data = os.urandom(11 * 1024 * 1024 + 3)
    temp = dest.create_temp("shard")
    temp.write(data[: 512 * 1024])  # (held in memory, then spilled with the rest)
    temp.write(data[512 * 1024 :])
    dest.publish(temp, mtime_ns=MTIME_NS, atime_ns=MTIME_NS, stamp=STAMP, fsync=True)
    dest.release(temp)
    assert read_back(dest, "shard") == data
    assert obstore.head(dest._store, "shard")["e_tag"].strip('"').endswith("-3")  # 3 parts
    # (hashed in two parts: the bytes held before the spill, then those streamed after)
    attributes = obstore.get(dest._store, "shard", options={"head": True}).attributes
    assert attributes[META_DIGEST] == xxhash.xxh3_128(data).hexdigest()
    dest.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://ab/x", "not a valid bucket name"),
        ("s3://softcopy/a//b", "empty"),
        ("s3://softcopy/../b", "'..'"),
    ],
)
def test_malformed_urls_are_refused_in_one_line(url, message):
    with pytest.raises(S3SettingsError, match=message) as err:
        parse_s3_url(url)
    assert "\n" not in str(err.value)


def test_a_missing_bucket_is_said_in_one_line_and_nothing_is_written(s3_env):
    with pytest.raises(S3SettingsError, match="bucket no-such-bucket does not exist") as err:
        S3Destination("s3://no-such-bucket/acq.zarr")
    assert "\n" not in str(err.value)


def test_refused_credentials_are_said_without_the_secret(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-1234")
    prefix = f"refused/{next(_prefixes)}"
    with pytest.raises(S3SettingsError, match="refused the credentials") as err:
        S3Destination(f"s3://softcopy/{prefix}")
    assert "wrong-secret-1234" not in str(err.value) and "\n" not in str(err.value)
    assert keys(s3_env, prefix) == set()


def test_an_unreachable_endpoint_is_said_in_one_line(s3_env, monkeypatch):

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    # An OSError (EIO): a server that may come back is waited for, not bad settings.
    with pytest.raises(OSError, match="cannot reach") as err:
        S3Destination("s3://softcopy/acq.zarr")
    assert err.value.errno == errno.EIO and "\n" not in str(err.value)


def test_a_server_that_takes_the_request_but_never_answers_is_not_called_unreachable(s3_env):
    """A SeaweedFS whose disk is nearly full still lists but leaves every PUT unanswered:
    the message says the server did not answer (and may be full), not "cannot reach"."""
    silent = socket.create_server(("127.0.0.1", 0))  # (accepts, never answers)
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    location = parse_s3_url("s3://softcopy/acq.zarr")
    settings = store_config({**os.environ, "AWS_ENDPOINT_URL": endpoint})  # (s3_env's keys)
    store = s3_store(location, settings, timeout_s=1, retries=0, max_backoff_s=1, retry_timeout_s=1)
    with silent, pytest.raises(Exception) as err:
        obstore.put(store, "f", b"data")
    message = describe_error(err.value, location, endpoint)
    assert message.startswith(f"the server at {endpoint} did not answer"), message
    assert "disk full" in message and is_transient(message)


def test_keys_from_a_profile_in_the_shared_files(s3_env, monkeypatch, tmp_path):
    """obstore reads no ~/.aws files: a profile's keys, region and endpoint come from ours."""
    creds, config = tmp_path / "credentials", tmp_path / "config"
    creds.write_text(
        f"[lab]\naws_access_key_id = {s3_env.key}\naws_secret_access_key = {s3_env.secret}\n"
    )
    config.write_text(f"[profile lab]\nregion = us-east-1\nendpoint_url = {s3_env.endpoint}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    dest = S3Destination(f"s3://softcopy/profile/{next(_prefixes)}")
    publish(dest, "f", b"by profile")
    assert read_back(dest, "f") == b"by profile"
    dest.close()


def test_multipart_uploads_left_by_a_killed_copy_are_aborted_at_the_next_start(s3_env):
    """A copier killed while it sent a large file leaves an upload in progress, its parts
    stored and billed for ever: the next copy into the prefix aborts it (and only there)."""
    from napari_softcopy.destinations.s3_uploads import signed_request, unfinished_uploads

    prefix = f"orphans/{next(_prefixes)}"
    creds = {"key": s3_env.key, "secret": s3_env.secret}
    for key in (f"{prefix}/c/0", f"{prefix}/c/1", "elsewhere/shard"):
        signed_request(
            "POST", s3_env.endpoint, "softcopy", key, {"uploads": ""}, creds, "us-east-1"
        )

    def left(below: str) -> list[str]:
        found = unfinished_uploads(s3_env.endpoint, "softcopy", below, creds, "us-east-1")
        return sorted(k for k, _ in found)

    assert left(f"{prefix}/") == [f"{prefix}/c/0", f"{prefix}/c/1"]
    S3Destination(f"s3://softcopy/{prefix}", create=False).close()  # (a verification: reads)
    assert len(left(f"{prefix}/")) == 2
    S3Destination(f"s3://softcopy/{prefix}").close()  # (a copy starts)
    assert left(f"{prefix}/") == []
    assert left("elsewhere/") == ["elsewhere/shard"]  # (not below the copy's prefix)


def test_a_server_failing_on_its_side_is_waited_for_not_an_internal_error(s3_env, tmp_path):
    """A 500 where the destination is opened again (the verification does, mid-copy) or an
    object read back is an OSError EIO, which the engine waits for with a visible "retrying":
    SeaweedFS answers so for seconds after a restart, and it once failed a copy as an
    "internal error" (the index's GET raised obstore's own error)."""
    url = f"s3://softcopy/failing/{os.getpid()}-{next(_prefixes)}"
    dest = S3Destination(url)
    publish(dest, "c/0", b"chunk")
    dest.close()  # (writes the index)

    def index_get(method: str, path: str, _headers) -> bool:
        return method == "GET" and path.endswith(f"/{INDEX}")

    with FailingProxy(s3_env, index_get) as proxy:
        with pytest.raises(OSError) as raised:
            S3Destination(url, create=False, env=proxy.env())
        assert raised.value.errno == errno.EIO
        assert "500 InternalError" in str(raised.value) and "starting" in str(raised.value)
        assert s3_env.secret not in str(raised.value)
        assert proxy.failed >= 1
    # Reading an object back: the same (its GET fails after the listing and HEAD worked).
    failing = {"get": False}

    def chunk_get(method: str, path: str, _headers) -> bool:
        return failing["get"] and path.endswith("/c/0")

    with FailingProxy(s3_env, chunk_get) as proxy:
        dest = S3Destination(url, create=False, env=proxy.env())
        failing["get"] = True
        with pytest.raises(OSError) as raised, dest.read("c/0") as f:
            f.read()
        assert raised.value.errno == errno.EIO
        dest.close()


def test_a_verification_in_the_copy_s_process_reads_its_tree_without_a_request(s3_env):
    """The final verification and its rechecks open their own `S3Destination` in the copy's
    process: they read the copy's very tree (`s3_copiers`), with no listing and no HEAD
    (at 50,000 objects each listing took 2-5 s of the finish); closing one writes nothing."""
    url = f"s3://softcopy/reopen/{os.getpid()}-{next(_prefixes)}"
    with FailingProxy(s3_env, lambda *_: False) as proxy:
        copier = S3Destination(url, env=proxy.env())
        for t in range(3):
            for i in range(4):
                publish(copier, f"c/{t}/{i}", b"chunk %d %d" % (t, i))
        proxy.requests.clear()
        again = S3Destination(url, create=False, env=proxy.env())
        listed = {t: again.listdir(f"c/{t}") for t in range(3)}
        stamp = again.source_stamp("c/1/1")
        again.close()
        requests = list(proxy.requests)
        copier.close()
    assert requests == [], requests
    assert again.from_copy and again._tree is copier._tree
    assert all(sorted(names) == ["0", "1", "2", "3"] for names in listed.values()), listed
    assert listed[1]["1"].mtime_ns == MTIME_NS and stamp == STAMP


def test_a_reader_in_another_process_lists_and_needs_no_head_after_flush(s3_env):
    """A reader without the copy in its process (``napari-softcopy verify``) lists the
    prefix, and takes the metadata from the index `flush` wrote: no HEAD per object. One
    object rewritten and one deleted by another tool behind the copy's back are seen as
    they are (a HEAD for the rewritten one: its ETag is not the index's)."""
    url = f"s3://softcopy/saved/{os.getpid()}-{next(_prefixes)}"
    copier = S3Destination(url)
    for i in range(20):
        publish(copier, f"c/{i}", b"chunk %d" % i)
    copier.flush()
    store = raw_store(s3_env, url.removeprefix("s3://softcopy/"))
    obstore.put(store, "c/0", b"other!!")
    obstore.delete(store, "c/1")
    # (through a proxy: another endpoint, as seen from another process, takes nothing)
    with FailingProxy(s3_env, lambda *_: False) as proxy:
        other = S3Destination(url, create=False, env=proxy.env())
        listed = other.listdir("c")
        heads = [path for method, path in proxy.requests if method == "HEAD"]
        other.close()
    copier.close()
    assert not other.from_copy
    assert len(listed) == 19 and "1" not in listed and listed["2"].mtime_ns == MTIME_NS
    assert listed["0"].size == len(b"other!!") and listed["0"].mtime_ns != MTIME_NS
    assert [h.rpartition("/")[2] for h in heads] == ["0"], heads


def test_the_marker_and_our_own_objects_do_not_make_the_index_due_again(s3_env):
    """The index (every entry, 0.1-0.4 s at 50,000 objects) is written before the marker,
    not once more after it because of the marker or of objects under .softcopy."""
    url = f"s3://softcopy/unindexed/{os.getpid()}-{next(_prefixes)}"
    with FailingProxy(s3_env, lambda *_: False) as proxy:
        dest = S3Destination(url, env=proxy.env())
        publish(dest, "c/0", b"chunk")
        dest.write_file(".softcopy/manifest.jsonl", b"{}\n")
        dest.write_file(".softcopy/journal", b"{}\n")
        dest.write_file("complete", b"done")
        assert dest.unlink(".softcopy/journal")  # (the hash journal, once the marker is there)
        dest.close()
    index_puts = [p for m, p in proxy.requests if m == "PUT" and p.endswith(INDEX)]
    assert len(index_puts) == 1, proxy.requests
    again = S3Destination(url, create=False)
    assert again.stat("complete").size == 4 and again.stat("c/0").mtime_ns == MTIME_NS
    again.close()


def crc64nvme(data: bytes) -> str:
    """CRC-64/NVME (reflected 0x9A6C9329AC4BC9B5, all ones in and out) as S3 gives it:
    the 8 bytes big-endian, base64."""
    crc = (1 << 64) - 1
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x9A6C9329AC4BC9B5 if crc & 1 else 0)
    return base64.b64encode((crc ^ ((1 << 64) - 1)).to_bytes(8, "big")).decode()


def stored_checksum(server, key: str) -> str | None:
    got: dict[str, str] = {}
    credentials = {"key": server.key, "secret": server.secret}
    signed_request(
        "HEAD", server.endpoint, "softcopy", key, {}, credentials, "us-east-1",
        extra={"x-amz-checksum-mode": "ENABLED"}, response_headers=got,
    )  # fmt: skip
    return got.get("x-amz-checksum-crc64nvme")


def test_every_upload_carries_its_crc64nvme_which_the_server_checks_and_keeps(s3_env):
    """SeaweedFS (as AWS) checks the checksum against the bytes it received and keeps it:
    the stored one is the source content's."""
    assert crc64nvme(b"123456789") == base64.b64encode(bytes.fromhex("ae8b14860a799888")).decode()
    prefix = f"checksum/{os.getpid()}-{next(_prefixes)}"
    dest = S3Destination(f"s3://softcopy/{prefix}")
    assert dest.checksum == "CRC64NVME"
    small = os.urandom(70_000)
    publish(dest, "c/0", small)
    dest.close()
    assert stored_checksum(s3_env, f"{prefix}/c/0") == crc64nvme(small)


def test_a_server_refusing_the_checksum_header_gets_uploads_without_it_said_once(s3_env, caplog):
    from napari_softcopy.platform import degraded

    def with_checksum(_method, _path, headers) -> bool:
        return any(name.lower().startswith("x-amz-checksum-") for name in headers)

    url = f"s3://softcopy/nochecksum/{os.getpid()}-{next(_prefixes)}"
    with FailingProxy(s3_env, with_checksum, answer=(400, "InvalidRequest")) as proxy:
        dest = S3Destination(url, env=proxy.env())
        publish(dest, "c/0", b"chunk")
        assert dest.checksum is None and proxy.failed == 1
        assert read_back(dest, "c/0") == b"chunk"
        acknowledged = dest.acknowledged_digest("c/0", dest.stat("c/0", stamp=True))
        dest.close()
    notices = [n for n in degraded() if n.startswith("server checksums is off")]
    assert len(notices) == 1 and "InvalidRequest" in notices[0], degraded()
    # Nothing vouches for the bytes on arrival: the copy keeps a hash journal instead.
    assert not dest.capabilities.verified_upload_digest and acknowledged is None
    notices = [n for n in degraded() if n.startswith("hashing uploads for the manifest is off")]
    assert len(notices) == 1 and "keeps no checksum" in notices[0], degraded()


def test_the_index_is_written_whole_once_then_in_parts_of_what_changed(s3_env, monkeypatch):
    """After its first write, the index gets only what changed since, as a part of its own
    (a finish at 50,000 objects wrote every entry again, twice); a reader takes the index
    and its parts in order and needs no HEAD. After `INDEX_PARTS` parts the whole index is
    written again and the parts are deleted."""
    from napari_softcopy.destinations import s3_tree

    monkeypatch.setattr(s3_tree, "INDEX_PARTS", 2)
    prefix = f"parts/{os.getpid()}-{next(_prefixes)}"
    url = f"s3://softcopy/{prefix}"
    # (the copier's proxy stays up while the copier is used: a new connection to a proxy
    # already stopped fails, and an idle one kept alive may close at any moment)
    with FailingProxy(s3_env, lambda *_: False) as proxy:
        copier = S3Destination(url, env=proxy.env())
        for i in range(10):
            publish(copier, f"c/{i}", b"chunk %d" % i)
        copier.flush()
        publish(copier, "c/3", b"chunk 3 again", mtime_ns=MTIME_NS + 1)
        publish(copier, "c/10", b"chunk 10")
        copier.flush()
        puts = [p.rpartition("/.softcopy/")[2] for m, p in proxy.requests if m == "PUT"]
        index_puts = [p for p in puts if p.startswith("s3-index")]
        assert index_puts[0] == "s3-index.json.z" and len(index_puts) == 2, index_puts
        part = index_puts[1]
        assert part.startswith("s3-index-") and part.endswith("-1.json.z"), part
        assert part in {k.rpartition("/")[2] for k in keys(s3_env, prefix)}
        with FailingProxy(s3_env, lambda *_: False) as reading:
            reader = S3Destination(url, create=False, env=reading.env())
            listed = reader.listdir("c")
            reader.close()
            heads = [p for m, p in reading.requests if m == "HEAD"]
        assert heads == [] and len(listed) == 11
        assert listed["3"].mtime_ns == MTIME_NS + 1 and listed["3"].size == len(b"chunk 3 again")
        assert listed["10"].mtime_ns == MTIME_NS and listed["2"].mtime_ns == MTIME_NS
        # Two parts are the most: the third write is whole again, and the parts go.
        for n in (11, 12):
            publish(copier, f"c/{n}", b"chunk %d" % n)
            copier.flush()
        names = {k.rpartition("/")[2] for k in keys(s3_env, prefix)}
        assert not [n for n in names if n.startswith("s3-index-")], names
        copier.close()
    again = S3Destination(url, create=False)
    assert again.stat("c/12").mtime_ns == MTIME_NS and again.stat("c/3").mtime_ns == MTIME_NS + 1
    again.close()


@given(
    size=st.integers(0, 2**62),
    etag=st.one_of(
        st.binary(min_size=16, max_size=16).map(bytes.hex),  # (a PUT's: an MD5)
        st.text(max_size=300),  # (a multipart upload's "...-3", another server's, none)
    ),
    mtime_ns=st.none() | st.integers(-(2**62), 2**62),
    stamp=st.none() | st.binary(max_size=40),
    last_modified_ns=st.integers(0, 2**62),
    digest=st.none() | st.binary(min_size=32, max_size=32),
)
def test_what_the_tree_keeps_of_an_object_packed_reads_back_the_same(
    size, etag, mtime_ns, stamp, last_modified_ns, digest
):
    """The copy's tree keeps each object packed (`pack_object`): every field reads back as
    it was, None kept apart from empty and an upper-case hex ETag kept as it was written;
    a walk's `FileInfo` of it is the one the unpacked record gives."""
    from napari_softcopy.destinations.s3_objects import (
        ObjectInfo,
        file_info_of,
        pack_object,
        source_mtime_known,
        unpack_object,
    )

    for tag in (etag, etag.upper()):
        info = ObjectInfo(size, tag, mtime_ns, stamp, last_modified_ns, digest)
        raw = pack_object(info)
        assert unpack_object(raw) == info
        assert source_mtime_known(raw) == (mtime_ns is not None)
        mtime = last_modified_ns if mtime_ns is None else mtime_ns
        assert file_info_of(raw, True) == FileInfo(False, True, size, mtime, stamp)
        assert file_info_of(raw, False) == FileInfo(False, True, size, mtime, None)


def test_the_tree_keeps_folders_and_objects_sharing_a_name_apart():
    """S3 allows an object ``a`` beside objects below ``a/``: the name lists as the object
    while it is there, as a folder once it is deleted, and goes with the last of either;
    folders left empty go, the root stays; an object's record is the one published last."""
    from napari_softcopy.destinations.s3_objects import ObjectInfo
    from napari_softcopy.destinations.s3_tree import ObjectTree

    tree = ObjectTree(None, None, None, None)

    def put(rel: str, size: int) -> None:
        tree.add(rel, ObjectInfo(size, "0" * 32, MTIME_NS + size, b"1:2"))

    def names(folder: str) -> dict[str, bool]:
        return {n: i.is_dir for n, i in tree.listdir(folder, None, None, True).items()}

    for rel, size in [("a/b", 1), ("a", 2), ("a/c/d", 3), ("e/f/g", 4), ("a", 5)]:
        put(rel, size)
    assert tree.count == 4 and names("") == {"a": False, "e": True}
    assert tree.stat("a", True).size == 5 and tree.stat("a/c/d", True).mtime_ns == MTIME_NS + 3
    assert names("a") == {"b": False, "c": True}
    tree.remove("a/b")
    tree.remove("a/c/d")  # (folder a is empty now: the object a stays, as a file)
    assert names("") == {"a": False, "e": True} and tree.stat("a/c", True) is None
    put("a/b", 1)
    tree.remove("a")  # (the folder a still holds b)
    assert names("") == {"a": True, "e": True} and tree.count == 2
    tree.remove("a/b")
    tree.remove("e/f/g")
    tree.remove("e/f/g")  # (gone already: nothing changes)
    assert names("") == {} and tree.count == 0 and list(tree.dirs) == [""]
    assert tree.stat("", True).is_dir


def test_a_part_of_another_index_or_after_a_gap_never_counts(s3_env):
    """A part counts only under the index whose token it carries, and only in order: a part
    left by an older index (or a write that failed between two parts) is no record of the
    objects, even with their ETag and size right."""
    import zlib

    from napari_softcopy.destinations.s3_objects import ObjectInfo, index_bytes
    from napari_softcopy.destinations.s3_tree import index_part

    prefix = f"stale/{os.getpid()}-{next(_prefixes)}"
    url = f"s3://softcopy/{prefix}"
    copier = S3Destination(url)
    for i in range(3):
        publish(copier, f"c/{i}", b"chunk %d" % i)
    copier.flush()
    token = copier._tree.token
    copier.close()
    store = raw_store(s3_env, prefix)
    etags = {m["path"]: m["e_tag"].strip('"') for batch in obstore.list(store) for m in batch}

    def claim(rel: str, mtime_ns: int) -> bytes:
        info = ObjectInfo(len(b"chunk 0"), etags[rel], mtime_ns, b"1:2")
        return index_bytes([(rel, info)], ".softcopy/", "x")

    obstore.put(store, index_part("0" * 16, 1), claim("c/0", 42))  # (another index's)
    obstore.put(store, index_part(token, 2), claim("c/1", 43))  # (after a gap: no part 1)
    assert json.loads(zlib.decompress(claim("c/0", 42)))["objects"]  # (a readable part)
    reader = S3Destination(url, create=False)
    assert reader.stat("c/0").mtime_ns == MTIME_NS and reader.stat("c/1").mtime_ns == MTIME_NS
    reader.close()


def test_a_reader_writes_nothing_not_even_the_index(s3_env):
    """A verification (or the chunk map) opens the copy to read it: closing it writes
    nothing below the prefix, not even the index it could make of what it read (it wrote
    the index before, though a verification promises to write nothing)."""
    prefix = f"reader/{next(_prefixes)}"
    url = f"s3://softcopy/{prefix}"
    dest = S3Destination(url)
    for i in range(5):
        publish(dest, f"c/{i}", b"x" * i)
    dest.close()
    obstore.delete(raw_store(s3_env, prefix), INDEX)  # (a copy killed before writing it)
    before = keys(s3_env, prefix)
    reader = S3Destination(url, create=False)
    assert len(reader.listdir("c", stamps=True)) == 5  # (HEADs: it learns every object)
    reader.close()
    assert keys(s3_env, prefix) == before

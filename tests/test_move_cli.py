"""``napari-softcopy copy SRC DST --move`` end to end: a live tensorstore acquisition ends with
an empty source and a copy that ``verify DST`` proves from its manifest alone; kill -9 during
the deletion and the same command again; a damaged copy (exit 3, nothing deleted); a
read-only source (exit 4, nothing lost)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from faults_support import (
    bind_mount,
    make_archive,
    read_status,
    run_cli,
    start_cli,
    tree_state,
)
from napari_softcopy.destinations import STATE_DIR
from napari_softcopy.move_step import EXIT_NOT_FREED, EXIT_REFUSED_DESTINATION
from napari_softcopy.simulate import simulate

FAST = ("--normal-priority", "--rescan-interval", "2")


def copy_files(dst: Path) -> dict[str, int]:
    """The copy's files and sizes (its private folder left out)."""
    out = {}
    for dirpath, _dirs, files in os.walk(dst):
        for name in files:
            rel = (Path(dirpath) / name).relative_to(dst).as_posix()
            if not rel.startswith(f"{STATE_DIR}/"):
                out[rel] = (Path(dirpath) / name).stat().st_size
    return out


def test_copy_move_during_a_live_acquisition_ends_with_an_empty_source(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    status = tmp_path / "status.json"
    state = tmp_path / "state"
    errors: list[BaseException] = []

    def acquire():
        try:
            simulate(src, "demo", writer="tensorstore", timepoints=8, rate=4.0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=acquire)
    writer.start()
    try:
        result = run_cli(
            "copy", src, dst, "--move", "--wait-for-source", "--status-file", status, *FAST,
            state_dir=state, timeout=180,
        )  # fmt: skip
    finally:
        writer.join(60)
    assert not errors
    assert result.returncode == 0, result.stderr
    assert src.is_dir() and os.listdir(src) == []
    files = copy_files(dst)
    total = sum(files.values())
    line = f"freed {total / 2**20:.1f} MiB from {src} ({len(files):,} files"
    assert line in result.stderr
    freed = read_status(status)["freed"]
    assert freed["bytes_freed"] == total and freed["files_freed"] == len(files)
    assert freed["refused"] is None and freed["files_kept"] == 0
    assert freed["message"].startswith(line)
    assert freed["marker_to_freed_s"] > 0
    deleted = Path(freed["deleted_log"]).read_text().splitlines()
    assert sorted(deleted) == sorted(files) and deleted[-1] == "complete"
    check = run_cli("verify", dst, state_dir=state)
    assert check.returncode == 0, check.stdout
    assert check.stdout.startswith(f"intact: {dst}: {len(files) - 1} files")


def test_kill_9_mid_delete_then_the_same_command_finishes_it(tmp_path):
    """The list of deleted files goes to ``<status>.freed``: made a pipe the test stops
    reading (one page), it holds the engine mid-delete, where it is killed."""
    import fcntl

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(src, n_chunks=1500, chunk_bytes=4096)
    state = tmp_path / "state"
    status = tmp_path / "status.json"
    fifo = tmp_path / "status.json.freed"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep_open = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # (reads wait for data, not EOF)
    fcntl.fcntl(reader, 1031, 4096)  # F_SETPIPE_SZ: one page; 1,500 paths take 10 KiB
    proc = start_cli("copy", src, dst, "--move", "--status-file", status, *FAST, state_dir=state)
    try:
        os.set_blocking(reader, True)
        assert os.read(reader, 64), "the first deletion"
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        os.close(reader)
        os.close(keep_open)
    left = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert 0 < len(left) < 1502 and "complete" in left
    assert json.loads((dst / STATE_DIR / "move.json").read_text())["state"] == "freeing"
    rerun = run_cli(
        "copy", src, dst, "--move", "--status-file", tmp_path / "rerun.json", *FAST,
        state_dir=state,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert f"from {src} ({len(left):,} files" in rerun.stderr
    assert os.listdir(src) == []
    assert run_cli("verify", dst, state_dir=state).returncode == 0
    assert json.loads((dst / STATE_DIR / "move.json").read_text())["state"] == "freed"


def test_a_damaged_copy_exits_3_and_nothing_is_deleted(tmp_path):
    """A byte flipped at the destination with size and mtime kept passes the verification
    by size and mtime; the rerun writes nothing (no new manifest: the first run's hashes stand),
    and the content check before the deletion finds the copy unlike its manifest and refuses."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    make_archive(src, n_chunks=16, chunk_bytes=8192)
    state = tmp_path / "state"
    assert run_cli("copy", src, dst, *FAST, state_dir=state).returncode == 0
    chunk = dst / "c" / "9"
    data = bytearray(chunk.read_bytes())
    data[4000] ^= 0x10
    st = chunk.stat()
    chunk.write_bytes(bytes(data))
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = tree_state(src)
    result = run_cli("copy", src, dst, "--move", *FAST, state_dir=state)
    assert result.returncode == EXIT_REFUSED_DESTINATION, result.stderr
    assert "c/9 (its content differs from the manifest)" in result.stderr
    assert "nothing was deleted" in result.stderr
    assert tree_state(src) == before


def test_a_read_only_source_exits_4_and_loses_nothing(tmp_path):
    real, dst = tmp_path / "real.zarr", tmp_path / "copy.zarr"
    make_archive(real, n_chunks=8, chunk_bytes=4096)
    state = tmp_path / "state"
    with bind_mount(real, tmp_path / "ro.zarr", read_only=True) as src:
        before = tree_state(src)
        result = run_cli("copy", src, dst, "--move", *FAST, state_dir=state)
        assert result.returncode == EXIT_NOT_FREED, result.stderr
        assert f"source {src} is on a read-only filesystem" in result.stderr
        assert "remount it read-write and run the same command again" in result.stderr
        assert tree_state(src) == before
    assert run_cli("verify", dst, state_dir=state).returncode == 0


def test_move_is_in_the_resume_command():
    """A copy stopped before its finish resumes with ``--move`` (a resume without it would
    leave the acquisition on the instrument's disk)."""
    from napari_softcopy.cli import build_parser, resume_command
    from napari_softcopy.option_flags import options_from_args

    args = build_parser().parse_args(["copy", "a", "b", "--move"])
    assert "--move" in resume_command(args, options_from_args(args)).split()


def test_a_target_frees_its_source_when_its_entry_says_move(tmp_path):
    """``move: true`` in one targets.yaml entry: that source is freed, the other kept."""
    state = tmp_path / "state"
    for name in ("a", "b"):
        make_archive(tmp_path / f"{name}.zarr", n_chunks=4, chunk_bytes=4096, seed=ord(name))
    (tmp_path / "targets.yaml").write_text(
        "targets:\n"
        "  - {source: a.zarr, destination: copies/a.zarr, move: true}\n"
        "  - {source: b.zarr, destination: copies/b.zarr}\n"
    )
    (tmp_path / "copies").mkdir()
    before = tree_state(tmp_path / "b.zarr")
    result = run_cli("copy", "--targets", tmp_path / "targets.yaml", *FAST, state_dir=state)
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "a.zarr") == []
    assert f"freed 0.0 MiB from {tmp_path / 'a.zarr'} (6 files" in result.stderr
    assert tree_state(tmp_path / "b.zarr") == before
    for name in ("a", "b"):
        assert (
            run_cli("verify", tmp_path / "copies" / f"{name}.zarr", state_dir=state).returncode == 0
        )
    (tmp_path / "targets.yaml").write_text(
        "targets:\n  - {source: b.zarr, destination: copies/b.zarr, move: sure}\n"
    )
    bad = run_cli("copy", "--targets", tmp_path / "targets.yaml", *FAST, state_dir=state)
    assert bad.returncode == 2
    assert "entry 1 has `move: sure`; write `move: true` or false" in bad.stderr

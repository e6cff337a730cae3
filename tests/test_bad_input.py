"""Bad input, end to end through the command line.

Every refusal: exit code 2, one line naming the path (or the targets entry) and the fix, and
nothing written anywhere: the whole test directory, the engine's state directory included, is
compared before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import pytest

from faults_support import (
    bind_mount,
    make_archive,
    poll,
    read_status,
    run_cli,
    start_cli,
    tmpfs,
    tree_state,
)
from napari_softcopy import CopyOptions, InputError
from napari_softcopy.cli import build_parser
from napari_softcopy.options import Choice, FileName, Number, option_of, schema


@pytest.fixture
def archive(tmp_path):
    src = tmp_path / "acq.zarr"
    make_archive(src, n_chunks=4, chunk_bytes=4096)
    return src


def refused(tmp_path: Path, *args, must_name: str | list[str], fix: str) -> str:
    """Run the CLI, expect a refusal that changed nothing; return the error line."""
    before = tree_state(tmp_path)
    result = run_cli(*args, state_dir=tmp_path / "state")
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    line = lines[0]
    assert line.startswith("napari-softcopy: error: ")
    for name in [must_name] if isinstance(must_name, str) else must_name:
        assert name in line, f"{name!r} not named in: {line}"
    assert fix in line, f"fix {fix!r} not in: {line}"
    assert result.stdout == ""
    assert tree_state(tmp_path) == before, "a refused command changed the filesystem"
    assert not (tmp_path / "state").exists(), "a refused command created the state directory"
    return line


def test_source_missing(tmp_path):
    refused(
        tmp_path,
        "copy",
        tmp_path / "nope.zarr",
        tmp_path / "copy.zarr",
        must_name=str(tmp_path / "nope.zarr"),
        fix="--wait-for-source",
    )


def test_source_is_a_file(tmp_path):
    (tmp_path / "acq.zarr").write_text("not a folder")
    refused(
        tmp_path,
        "copy",
        tmp_path / "acq.zarr",
        tmp_path / "copy.zarr",
        must_name=str(tmp_path / "acq.zarr"),
        fix="root folder",
    )


def test_source_is_not_a_zarr(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    (src / "img.tif").write_bytes(b"II*\0")
    refused(
        tmp_path,
        "copy",
        src,
        tmp_path / "copy.zarr",
        must_name=str(src),
        fix="point at the archive's root folder",
    )


@pytest.mark.parametrize("where", ["root", "nested"])
def test_corrupt_metadata_names_the_file(tmp_path, where):
    import zarr

    src = tmp_path / "acq.zarr"
    g = zarr.open_group(src, mode="w")
    g.create_array("a", shape=(4,), chunks=(2,), dtype="uint8")
    bad = src / "zarr.json" if where == "root" else src / "a" / "zarr.json"
    bad.write_text('{"zarr_format": 3, "node_type": "gr')  # cut off mid-write
    refused(
        tmp_path,
        "copy",
        src,
        tmp_path / "copy.zarr",
        must_name=str(bad),
        fix="fix or restore this file",
    )


def test_destination_equals_source(tmp_path, archive):
    refused(
        tmp_path,
        "copy",
        archive,
        archive,
        must_name=str(archive),
        fix="choose a folder outside the archive",
    )


def test_destination_inside_source(tmp_path, archive):
    refused(
        tmp_path,
        "copy",
        archive,
        archive / "c" / "copy",
        must_name=str(archive / "c" / "copy"),
        fix="choose a folder outside the archive",
    )


def test_destination_inside_source_through_a_symlink(tmp_path, archive):
    (tmp_path / "link").symlink_to(archive)
    refused(
        tmp_path,
        "copy",
        archive,
        tmp_path / "link" / "copy",
        must_name=str(tmp_path / "link" / "copy"),
        fix="outside the archive",
    )


def test_source_inside_destination(tmp_path, archive):
    refused(
        tmp_path,
        "copy",
        archive,
        tmp_path,
        must_name=str(archive),
        fix="choose another destination folder",
    )


def test_destination_equal_to_the_source_through_a_bind_mount(tmp_path, archive):
    """No symlink explains it: only the folder's device and inode show it is the source."""
    with bind_mount(archive, tmp_path / "mnt", read_only=False) as same:
        line = refused(
            tmp_path,
            "copy",
            archive,
            same,
            must_name=[str(archive), str(same)],
            fix="choose a folder outside the archive",
        )
        assert "same folder" in line


def test_destination_inside_the_source_through_a_bind_mount(tmp_path, archive):
    with bind_mount(archive, tmp_path / "mnt", read_only=False) as same:
        refused(
            tmp_path,
            "copy",
            archive,
            same / "c" / "copy",
            must_name=[str(archive), str(same / "c" / "copy")],
            fix="choose a folder outside the archive",
        )


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("/proc/copy.zarr", id="proc"),
        pytest.param("/proc/x/copy.zarr", id="proc-missing-parent"),
        pytest.param("/sys/copy.zarr", id="sysfs"),
        pytest.param("/dev/copy.zarr", id="dev"),
    ],
)
def test_destination_on_a_kernel_filesystem(tmp_path, archive, where):
    """A pseudo filesystem (proc, sysfs, devtmpfs) is bad input, not an internal error at
    the first file, and /dev (devtmpfs) must not take a copy into memory either."""
    from napari_softcopy.checks import PSEUDO_FILESYSTEMS
    from napari_softcopy.platform import filesystem_type

    fd = os.open("/" + where.split("/")[1], os.O_RDONLY)  # (/proc, /sys, /dev)
    try:
        fs = filesystem_type(fd)
    finally:
        os.close(fd)
    if fs not in PSEUDO_FILESYSTEMS:
        pytest.skip(f"{where} is on {fs} here")
    dst = Path(where)
    refused(
        tmp_path, "copy", archive, dst, must_name=str(dst), fix="choose a folder on a real disk"
    )
    assert not dst.exists()


def test_destination_parent_missing(tmp_path, archive):
    dst = tmp_path / "unmounted" / "drive" / "copy.zarr"
    refused(tmp_path, "copy", archive, dst, must_name=str(dst), fix="create or mount it")


@pytest.mark.parametrize("command", ["copy", "verify"])
@pytest.mark.parametrize("url", ["sftp://scope-pc/data/copy.zarr", "gs://lab/copy.zarr"])
def test_a_destination_url_other_than_s3_is_refused_not_taken_for_a_folder(
    tmp_path, archive, command, url
):
    """Read as a path, ``sftp://h/x`` would be a folder ``./sftp:/h/x`` whose parent is
    missing: the user would be told to mount a drive, not that the scheme is unknown."""
    refused(tmp_path, command, archive, url, must_name=url, fix="mount the share")


@pytest.mark.parametrize("command", ["copy", "verify"])
def test_a_source_url_is_refused(tmp_path, archive, command):
    url = "s3://lab/acq.zarr"
    refused(tmp_path, command, url, tmp_path / "copy.zarr", must_name=url, fix="local or mounted")


def test_a_url_in_a_targets_file_is_refused_with_its_entry(tmp_path, archive):
    targets = write_targets(
        tmp_path, "targets:\n  - source: acq.zarr\n    destination: smb://nas/acq.zarr\n"
    )
    refused(
        tmp_path,
        "copy",
        "--targets",
        targets,
        must_name=["entry 1", "smb://nas/acq.zarr"],
        fix="mount the share",
    )


def test_destination_is_a_file(tmp_path, archive):
    (tmp_path / "copy.zarr").write_text("x")
    refused(
        tmp_path,
        "copy",
        archive,
        tmp_path / "copy.zarr",
        must_name=str(tmp_path / "copy.zarr"),
        fix="choose another path",
    )


def test_destination_holds_something_else(tmp_path, archive):
    dst = tmp_path / "copy.zarr"
    dst.mkdir()
    (dst / "thesis.docx").write_text("years of work")
    refused(tmp_path, "copy", archive, dst, must_name=str(dst), fix="--force")


def test_destination_holds_another_kind_of_zarr_unless_forced(tmp_path, archive):
    import zarr

    dst = tmp_path / "copy.zarr"
    zarr.open_group(dst, mode="w")  # a group where the source is an array
    refused(tmp_path, "copy", archive, dst, must_name=str(dst), fix="--force")
    result = run_cli("copy", archive, dst, "--force", state_dir=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert json.loads((dst / "zarr.json").read_text())["node_type"] == "array"


def test_unwritable_destination_parent(tmp_path, archive):
    with bind_mount(tmp_path / "disk-real", tmp_path / "disk", read_only=True) as disk:
        refused(
            tmp_path,
            "copy",
            archive,
            disk / "copy.zarr",
            must_name=str(disk),
            fix="choose a writable destination",
        )


def test_unwritable_existing_destination(tmp_path, archive):
    (tmp_path / "disk-real" / "copy.zarr").mkdir(parents=True)
    with bind_mount(tmp_path / "disk-real", tmp_path / "disk", read_only=True) as disk:
        refused(
            tmp_path,
            "copy",
            archive,
            disk / "copy.zarr",
            must_name=str(disk / "copy.zarr"),
            fix="choose a writable destination",
        )


# ---------------------------------------------------------------------------- targets files
def write_targets(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "names", "fix"),
    [
        pytest.param("targets: [source: a\n", ["targets.yaml"], "not valid YAML", id="yaml-syntax"),
        pytest.param("- source: acq.zarr\n", ["targets.yaml"], "`targets:`", id="no-targets-key"),
        pytest.param("targets: []\n", ["targets.yaml"], "lists no targets", id="empty"),
        pytest.param(
            "targets:\n  - acq.zarr\n",
            ["entry 1"],
            "`source:`/`destination:`",
            id="entry-not-a-map",
        ),
        pytest.param(
            "targets:\n  - source: acq.zarr\n    destination: out/a.zarr\n  - source: acq.zarr\n",
            ["entry 2"],
            "no `destination` path",
            id="entry-without-destination",
        ),
        pytest.param(
            "targets:\n  - source: acq.zarr\n    destinaton: out/a.zarr\n",
            ["entry 1", "destinaton"],
            "unknown key",
            id="misspelt-key",
        ),
        pytest.param(
            "targets:\n  - source: acq.zarr\n    destination: out/a.zarr\n"
            "  - source: acq.zarr\n    destination: out/./a.zarr\n",
            ["entry 2", "entry 1"],
            "its own destination",
            id="same-destination",
        ),
    ],
)
def test_malformed_targets_file(tmp_path, archive, text, names, fix):
    (tmp_path / "out").mkdir()
    targets = write_targets(tmp_path, text)
    refused(tmp_path, "copy", "--targets", targets, must_name=names, fix=fix)


def test_one_bad_target_starts_none(tmp_path, archive):
    """The first entry is fine, the second is not: nothing is copied for either."""
    (tmp_path / "out").mkdir()
    targets = write_targets(
        tmp_path,
        "targets:\n  - source: acq.zarr\n    destination: out/a.zarr\n"
        "  - source: missing.zarr\n    destination: out/b.zarr\n",
    )
    refused(
        tmp_path,
        "copy",
        "--targets",
        targets,
        must_name=str(tmp_path / "missing.zarr"),
        fix="--wait-for-source",
    )


def test_targets_file_missing(tmp_path):
    refused(
        tmp_path,
        "copy",
        "--targets",
        tmp_path / "targets.yml",
        must_name=str(tmp_path / "targets.yml"),
        fix="check the path",
    )


def test_verify_with_missing_folder(tmp_path, archive):
    refused(
        tmp_path,
        "verify",
        archive,
        tmp_path / "nope",
        must_name=f"destination {tmp_path / 'nope'} does not exist",
        fix="check the path",
    )
    (tmp_path / "file").write_bytes(b"")
    refused(
        tmp_path,
        "verify",
        tmp_path / "file",
        archive,
        must_name=f"source {tmp_path / 'file'} is not a folder",
        fix="check the path",
    )


@pytest.mark.parametrize("checksum", [[], ["--checksum"]], ids=["size", "checksum"])
@pytest.mark.parametrize("how", ["same-path", "symlink", "bind-mount"])
def test_verify_refuses_a_folder_compared_with_itself(tmp_path, archive, how, checksum):
    """`verify X X` would say "identical": the all-clear before the original is deleted."""
    if how == "same-path":
        other = contextlib.nullcontext(archive)
    elif how == "symlink":
        (tmp_path / "link.zarr").symlink_to(archive)
        other = contextlib.nullcontext(tmp_path / "link.zarr")
    else:
        other = bind_mount(archive, tmp_path / "mnt.zarr", read_only=False)
    with other as same:
        line = refused(
            tmp_path,
            "verify",
            archive,
            same,
            *checksum,
            must_name=[str(archive), str(same)],
            fix="in a folder of its own",
        )
        assert "same folder" in line


@pytest.mark.parametrize("inner", ["destination", "source"])
def test_verify_refuses_a_folder_inside_the_other(tmp_path, archive, inner):
    nested = archive / "c"
    args = (archive, nested) if inner == "destination" else (nested, archive)
    line = refused(
        tmp_path,
        "verify",
        *args,
        must_name=[str(archive), str(nested)],
        fix="in a folder of its own",
    )
    assert f"{inner} {nested} is inside the" in line


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workers", -3),
        ("workers", 0),
        ("workers", 257),
        ("workers", 2.5),
        ("workers", True),
        ("rescan_interval", 0),
        ("rescan_interval", -1.0),
        ("rescan_interval", float("inf")),
        ("finish_when_idle", -2),
        ("finish_when_idle", float("nan")),
        ("bandwidth_mb_s", -5),
        ("bandwidth_mb_s", 0),
        ("status_interval", 0),
        ("verify", "sha256"),
        ("fsync", "never"),
        ("marker", ""),
        ("marker", "../complete"),
    ],
)
def test_engine_options_out_of_range_are_refused(field, value):
    """The engine API holds the rule the command line's option types are built on."""
    with pytest.raises(InputError, match=rf"^option {field} must be .+, not "):
        CopyOptions(**{field: value})
    options = CopyOptions()
    setattr(options, field, value)
    with pytest.raises(InputError, match=rf"^option {field} must be"):
        options.validate()


def test_engine_options_in_range_are_taken():
    CopyOptions()  # every default
    CopyOptions(workers=1, rescan_interval=0.5, finish_when_idle=0.1, bandwidth_mb_s=0.5)
    CopyOptions(workers=256, marker="acquisition.done", verify="checksum", fsync="each")


def _out_of_range(rule) -> str:
    """A flag's text just outside ``rule``."""
    if isinstance(rule, Number):
        edge = rule.minimum if rule.exclusive else rule.minimum - 1
        return str(int(edge)) if rule.whole else str(float(edge))
    if isinstance(rule, FileName):
        return "sub/name"
    return "bogus"  # (a Choice: argparse's own "invalid choice" line)


@pytest.mark.parametrize(
    "name", [name for name, _default, option in schema() if option.rule is not None]
)
def test_the_command_line_and_the_api_refuse_an_option_by_the_same_rule(name, capsys):
    """Every option with a range: just outside it, the ``copy`` flag and `CopyOptions` say
    the same sentence (the flags are made from the options' rules, not written twice)."""
    option = option_of(name)
    text = _out_of_range(option.rule)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["copy", "/a", "/b", option.flag, text])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    if isinstance(option.rule, Choice):
        assert error.startswith(f"napari-softcopy copy: error: argument {option.flag}: invalid")
        value = text
    else:
        value = option.parse(text)
        assert error == f"napari-softcopy copy: error: argument {option.flag}: must be " + (
            f"{option.rule.text}, not {value!r}"
        )
    with pytest.raises(InputError, match=rf"^option {name} must be {re.escape(option.rule.text)}"):
        CopyOptions(**{name: value})


# ---------------------------------------------------------------------------- warnings
def test_destination_without_space_warns_before_copying(tmp_path):
    """The archive already holds more than the destination has free: a warning comes first
    (the copy still starts: space may be freed while it runs, see test_faults)."""
    src = tmp_path / "acq.zarr"
    make_archive(src, n_chunks=16, chunk_bytes=256 * 1024)  # 4 MiB
    status = tmp_path / "status.json"
    with tmpfs(tmp_path / "disk", "1m") as disk:
        dst = disk / "copy.zarr"
        proc = start_cli(
            "copy",
            src,
            dst,
            "--status-file",
            status,
            "--workers",
            "1",
            "--bandwidth",
            "0.1",
            state_dir=tmp_path / "state",
        )
        try:
            # The first lines: what the destination keeps (the probe), and the warning.
            lines = [proc.stderr.readline(), proc.stderr.readline()]
            first = next((line for line in lines if "free space there" in line), lines)
            assert str(dst) in first and "MiB free" in first, first
            assert "free space there or choose another destination" in first
            assert any("destination: tmpfs, mtime to 1 ns" in line for line in lines), lines
            s = poll(lambda: read_status(status), 10, "status file")
            assert s["files_copied"] <= 1, "the warning must come before the copying"
        finally:
            proc.terminate()
            proc.communicate(timeout=10)
        assert proc.returncode == 143

"""Starting, following and controlling engine processes, without Qt."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from napari_softcopy.cli import build_parser
from napari_softcopy.launch import (
    CANCEL,
    KEEP,
    STOP,
    CopyProcess,
    apply_close_decision,
    background_message,
    copy_command,
    eta_s,
    human_bytes,
    human_duration,
    split_by_origin,
    status_view,
)
from napari_softcopy.option_flags import options_from_args
from napari_softcopy.options import (
    DEFAULT_MARKER,
    Choice,
    CopyOptions,
    FileName,
    Number,
    Option,
    schema,
)
from napari_softcopy.status import Status, write_status_file


def test_copy_command_gives_the_options_that_are_not_their_default():
    options = CopyOptions(
        workers=2,
        bandwidth_mb_s=50,
        verify="checksum",
        marker="done",
        wait_for_source=True,
        low_priority=False,
        rescan_interval=2.5,
        status_file="/s.json",
    )
    cmd = copy_command("/a.zarr", "/b.zarr", options)
    assert cmd == [
        *(sys.executable, "-m", "napari_softcopy.cli", "copy", "/a.zarr", "/b.zarr"),
        *("--workers", "2", "--marker", "done", "--rescan-interval", "2.5"),
        *("--verify", "checksum", "--bandwidth", "50", "--normal-priority"),
        *("--wait-for-source", "--status-file", "/s.json"),
    ]
    assert copy_command("/a", "/b", CopyOptions())[4:] == ["/a", "/b"]  # every default


def _parse_copy(words: list[str]) -> tuple[argparse.Namespace, CopyOptions]:
    args = build_parser().parse_args(words)
    assert args.command == "copy"
    return args, options_from_args(args)


def _other_value(name: str, default: object, option: Option) -> object:
    """A value of the option ``name`` that is allowed and is not its default."""
    rule = option.rule
    if option.parse is None:
        return not default
    if isinstance(rule, Choice):
        return next(v for v in rule.values if v != default)
    if isinstance(rule, Number):
        value = (default or rule.minimum) + (1 if rule.whole else 0.25)
        return int(value) if rule.whole else float(value)
    if isinstance(rule, FileName):
        return f"{default}.done"
    if option.parse is Path:
        return Path(f"/tmp/{name}.json")
    pytest.fail(f"no sample value for option {name}: teach _other_value its kind of value")


def test_every_option_has_a_flag_and_reaches_the_engine_process_unchanged():
    """An option added to `CopyOptions` is on the command line and in `copy_command` (the
    widget's own share is checked by the widget's tests): each non-default value on its own
    goes to the command and comes back from the parser as it was."""
    copy_parser = build_parser().parse_args(["copy"]).parser
    flags = {a.dest: a.option_strings for a in copy_parser._actions}
    missing = [
        f"{name} ({option.flag})"
        for name, _d, option in schema()
        if flags.get(name) != [option.flag]
    ]
    assert missing == [], f"options without their flag in `copy`: {missing}"
    for name, default, option in schema():
        value = _other_value(name, default, option)
        options = CopyOptions(**{name: value})
        words = copy_command("/a", "/b", options)[3:]
        assert option.flag in words, f"copy_command leaves out {name}={value!r}"
        _args, parsed = _parse_copy(words)
        assert parsed == options, f"{name}={value!r} came back as {getattr(parsed, name)!r}"


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"workers": 256, "verify": "checksum", "fsync": "each", "force": True},
        {"marker": "acquisition.done", "finish_when_idle": 0.1, "bandwidth_mb_s": 1234567.0},
        {"finish_quiet": 0.0, "finish_quiet_max": 0.0, "drop_cache": False},
        {"rescan_interval": 1 / 3, "status_interval": 0.05, "status_file": Path("/x y/s.json")},
        {
            "low_priority": False,
            "wait_for_source": True,
            "workers": 1,
            "finish_quiet": 600.0,
            "finish_quiet_max": 600.0,
        },
    ],
)
def test_copy_command_parsed_by_the_cli_gives_the_same_options(changes):
    options = CopyOptions(**changes)
    args, parsed = _parse_copy(copy_command("/a b", "/c", options)[3:])
    assert (args.source, args.destination) == ("/a b", "/c")
    assert parsed == options


def test_the_marker_default_is_spelled_once():
    assert CopyOptions().marker == DEFAULT_MARKER == "complete"
    _args, options = _parse_copy(["copy", "/a", "/b"])
    assert options == CopyOptions()
    assert build_parser().parse_args(["simulate", "/a"]).marker == DEFAULT_MARKER


def test_status_view_and_eta():
    s = Status(
        "/a",
        "/b",
        state="copying",
        chunks_expected=200,
        chunks_at_destination=50,
        files_pending=10,
        bytes_pending=2**20,
        rate_bytes_s=2**19,
        rate_files_s=5,
        elapsed_s=3725,
    )
    v = status_view(s, now=s.updated_at)
    assert (v.progress, v.progress_max) == (50, 200)
    assert v.progress_text == "50 / 200 chunk files (25%)"
    assert v.elapsed == "1:02:05" and v.eta == "-"  # no ETA before "finish now"
    s.finish_reason = "request"
    assert eta_s(s) == pytest.approx(2.0)
    s.state = "verifying"
    assert eta_s(s) is None
    assert status_view(None).state == "starting"
    assert human_bytes(1536) == "1.5 KiB" and human_duration(None) == "-"


def test_a_stale_status_file_of_an_older_run_is_ignored(tmp_path):
    path = tmp_path / "s.json"
    write_status_file(path, Status("/a", "/b", state="verified", pid=1))
    p = CopyProcess(pid=2, source="/a", destination="/b", status_file=str(path))
    assert p.read_status() is None
    write_status_file(path, Status("/a", "/b", state="copying", pid=2))
    assert p.read_status().state == "copying"
    path.write_text("{not json")  # unreadable for a moment: keep the last good one
    assert p.read_status().state == "copying"


def test_close_decision_keeps_stops_or_cancels():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        p = CopyProcess(child.pid, "/a", "/b", "/s.json", popen=child)
        assert apply_close_decision(KEEP, [p]) and child.poll() is None
        assert not apply_close_decision(CANCEL, [p]) and child.poll() is None
        assert apply_close_decision(STOP, [p])
        assert child.wait(10) == -signal.SIGTERM
        assert not p.alive() and not p.stop()  # nothing to signal any more
    finally:
        child.kill()
        child.wait()


def test_status_view_shows_what_a_finish_waits_for_and_the_notices():
    s = Status("/a", "/b", state="copying", finish_reason="request")
    v = status_view(s, now=s.updated_at)
    assert (v.waiting, v.notice_text, v.notices) == ("", "", [])
    s.waiting_for = "the source to stay quiet for 42 s (last change 3 s ago)"
    s.notices = ["no copy helper under --bandwidth", "", "mtimes kept to the microsecond"]
    v = status_view(s, now=s.updated_at)
    assert v.waiting == "Waiting for the source to stay quiet for 42 s (last change 3 s ago)"
    assert v.notice_text == "Note: no copy helper under --bandwidth (+1 more)"
    assert v.notices == ["no copy helper under --bandwidth", "mtimes kept to the microsecond"]
    s.state = "verified"  # an ended copy waits for nothing, whatever its last field said
    assert status_view(s).waiting == ""
    s.notices = None  # a status file with "notices": null
    assert status_view(s).notice_text == ""


def test_status_view_says_first_that_the_copy_waits_for_the_destination():
    away = "lost the connection to the destination (Broken pipe): /mnt/x; retrying in 4 s"
    s = Status("/a", "/b", state="copying", destination_away=away)
    s.waiting_for = "the source to stay quiet for 42 s (last change 3 s ago)"
    assert status_view(s, now=s.updated_at).waiting == f"Waiting for the destination: {away}"
    s.state = "failed"  # (an ended copy waits for nothing)
    assert status_view(s).waiting == ""


def test_status_view_says_how_many_folders_are_watched_and_how_the_rest_are_covered():
    s = Status("/a", "/b", state="copying")
    assert status_view(s).watching == ""  # (an engine that does not say: watchdog's observer)
    s.folders_watched = 16_384
    assert status_view(s).watching == "16,384 watched"
    s.folders_unwatched = 83_000
    v = status_view(s)
    assert v.watching == "16,384 watched; 83,000 finished: by rescans and the final check"


def test_status_view_counts_fit_one_line():
    s = Status("/a", "/b", state="copying", bytes_at_destination=2**30, bytes_copied=2**30)
    s.files_pending, s.bytes_pending = 1, 3 * 2**20
    v = status_view(s, now=s.updated_at)
    assert v.bytes_text == "1.0 GiB at destination"
    assert v.backlog == "1 file, 3.0 MiB"
    s.bytes_copied = 2**28  # a resumed copy: most was there before this run
    assert status_view(s).bytes_text == "1.0 GiB at destination, 256.0 MiB copied this run"


def test_only_copies_started_here_are_the_closing_napari_s_to_stop():
    a = CopyProcess(10, "/a", "/x", "/s1.json")
    b = CopyProcess(11, "/b", "/y", "/s2.json")
    assert split_by_origin([a, b], {11}) == ([b], [a])
    assert background_message(0) == ""
    assert background_message(1) == (
        "1 copy keeps running in the background; reopen the widget to follow them"
    )
    assert background_message(3).startswith("3 copies keep running in the background")

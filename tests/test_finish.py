"""A finish never leaves the marker over an incomplete copy (issue 17 item 2).

Real microscopes pause between timepoints. A finish asked for in such a pause waits until
the source has been quiet for longer than its pauses so far; a forced one does not wait, but
any change at the source before the marker is written cancels the marker, and the copy goes
on. The writers here are real (tensorstore through `simulate`), pausing between timepoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from napari_softcopy.engine import CopyEngine
from napari_softcopy.quiet import PAUSE_FACTOR, SourceActivity
from napari_softcopy.simulate import PRESETS, simulate
from napari_softcopy.status import FINAL_STATES, read_status_file
from support import assert_identical, engine, tree_bytes, wait_for

PRESET = dataclasses.replace(PRESETS["demo"], shape=(8, 8, 64, 64))


def pausing_writer(src, *, pauses: dict[int, float] | None = None, hold_after: int | None = None):
    """Write `PRESET` at 10 timepoints/s with a tensorstore writer, then its marker.

    After timepoint ``t`` it pauses ``pauses[t]`` seconds (the acquisition's own pauses);
    after ``hold_after`` it holds until ``resume`` is set (``held`` says it is holding).
    ``written[t]`` is set once timepoint ``t`` is written.
    """
    out = SimpleNamespace(
        held=threading.Event(),
        resume=threading.Event(),
        written=[threading.Event() for _ in range(PRESET.shape[0])],
        errors=[],
        pause_started={},
    )
    pause = threading.Event()  # never set: waiting on it is the writer's pause

    def on_timepoint(t: int) -> None:
        out.written[t].set()
        if t == hold_after:
            out.held.set()
            assert out.resume.wait(60), "the test never resumed the writer"
        if pauses and t in pauses:
            out.pause_started[t] = time.monotonic()
            pause.wait(pauses[t])

    def run() -> None:
        try:
            simulate(src, PRESET, rate=10, on_timepoint=on_timepoint)
        except BaseException as exc:  # reported by the test
            out.errors.append(exc)

    out.thread = threading.Thread(target=run, daemon=True)
    out.thread.start()
    return out


def names(root) -> set[str]:
    """The final names of the files below ``root`` (writers' temporary files left out)."""
    return set(tree_bytes(root))


def assert_copy(src, dst) -> dict:
    """Assert that ``dst`` is an identical copy of ``src``, which has no marker of its own,
    and return the engine's JSON summary in the destination's marker."""
    assert not (src / "complete").exists()
    marker = dst / "complete"
    summary = json.loads(marker.read_text())
    assert summary["ok"]
    marker.unlink()  # (the engine has ended: the rest must be the source's copy)
    assert_identical(src, dst)
    return summary


def waiting_or_ended(e):
    """The engine's status once its finish waits for something, or once it has ended."""

    def status():
        s = e.status()
        return s if s.waiting_for or s.state in FINAL_STATES else None

    return wait_for(status, what="the finish to wait, or the engine to end")


def finish_live(writer, e, timeout: float = 60.0) -> None:
    """The writer ends (with its marker), the engine verifies, the trees are identical."""
    writer.resume.set()
    writer.thread.join(timeout)
    assert not writer.thread.is_alive() and not writer.errors, writer.errors
    assert e.wait(timeout), f"engine ended {e.state}: {e.status().message}"


def test_a_finish_asked_for_in_a_pause_waits_until_the_writer_has_ended(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    # (a long minimum costs nothing here: the writer's marker ends the finish)
    e = engine(src, dst, wait_for_source=True, finish_quiet=5.0)
    writer = pausing_writer(src, hold_after=2)
    assert writer.held.wait(30)
    e.finish()  # "Finish now" between two timepoints
    s = waiting_or_ended(e)
    assert s.state == "copying" and "quiet" in s.waiting_for, s
    assert not (dst / "complete").exists()
    finish_live(writer, e)  # the acquisition goes on: 5 more timepoints, then its marker
    assert_identical(src, dst)  # the marker stands over the finished source's copy
    s = e.status()
    assert s.state == "verified" and s.finish_reason == "request" and s.waiting_for is None


def test_a_pause_as_long_as_the_acquisitions_own_pauses_is_not_its_end(tmp_path):
    """The wait is longer than the longest pause seen so far, not only the minimum: after a
    3 s pause (t=1), a finish asked for at the start of a 1.5 s pause (t=3) does not end the
    copy before the writer goes on (the minimum alone, 0.3 s, would)."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e = engine(src, dst, wait_for_source=True, finish_quiet=0.3)
    writer = pausing_writer(src, pauses={1: 3.0, 3: 1.5})
    assert writer.written[3].wait(30)
    e.finish()
    s = waiting_or_ended(e)
    assert s.state == "copying", s
    needed = float(s.waiting_for.split("quiet for ")[1].split(" s")[0])
    longest = float(s.waiting_for.split("pauses so far reached ")[1].split(" s")[0])
    assert longest >= 3.0 - 0.5 and needed >= longest * PAUSE_FACTOR - 0.5, s.waiting_for
    finish_live(writer, e)
    assert_identical(src, dst)


def _cancel_when(e, src, dst, writer, where: str):
    """Make the writer go on at ``where`` in the engine's first finish: after its
    verification walk (``"walk"``), or after the flush right before the marker
    (``"flush"``). The hook returns once the engine has seen the writer's change; the event
    returned is set then."""
    done = threading.Event()

    def writer_goes_on() -> None:
        if done.is_set():
            return
        writer.resume.set()
        assert writer.written[2].wait(30)  # the next timepoint is written...
        written = names(src)
        # ... and the engine has seen it: its workers copied it (on its events, counted
        # before the copies were queued).
        wait_for(lambda: written <= names(dst), 10, "the engine to copy the new timepoint")
        done.set()

    if where == "walk":
        walk = e._walk_and_compare

        def walk_then_write(*args, **kwargs):
            report = walk(*args, **kwargs)
            writer_goes_on()
            return report

        e._walk_and_compare = walk_then_write
    else:
        dest = e._dest
        flush = dest.flush

        def flush_then_write():
            flush()
            writer_goes_on()

        dest.flush = flush_then_write
    return done


@pytest.mark.parametrize("where", ["walk", "flush"])
def test_a_change_during_a_forced_finish_cancels_its_marker(tmp_path, caplog, where):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    caplog.set_level(logging.WARNING, logger="napari_softcopy.engine")
    e = engine(src, dst, wait_for_source=True, finish_quiet=1.0)
    writer = pausing_writer(src, hold_after=1)
    assert writer.held.wait(30)
    wait_for(lambda: dst.exists() and names(dst) == names(src), what="the copy to catch up")
    went_on = _cancel_when(e, src, dst, writer, where)
    e.finish(force=True)  # "finish now, even if the acquisition may still be writing"
    assert went_on.wait(30), f"the finish did not reach the {where} (engine {e.state})"
    finish_live(writer, e)
    assert_identical(src, dst)  # no marker over the copy of the first timepoints only
    assert e.status().state == "verified"
    cancelled = [r.getMessage() for r in caplog.records if "finish cancelled" in r.getMessage()]
    # (An event of the timepoint before the hold that came late may cancel an earlier try;
    # the hook then makes the writer go on at the next.)
    why = "before its marker" if where == "flush" else "during its verification"
    assert any(why in message for message in cancelled), cancelled


def test_a_finish_on_a_quiet_finished_source_waits_for_the_quiet_period(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, PRESET, rate=1000, timepoints=2, marker=None)  # ended, but no marker
    status_file = tmp_path / "status.json"
    started = time.monotonic()
    e = engine(src, dst, finish_quiet=3.0, status_file=status_file, status_interval=0.05)
    e.finish()
    seen = wait_for(lambda: (s := read_status_file(status_file)) and s.waiting_for and s)
    assert seen.state == "copying" and seen.finish_reason == "request"
    assert seen.waiting_for.startswith("the source to stay quiet for 3 s (last change")
    assert not (dst / "complete").exists()
    assert e.wait(30)
    assert time.monotonic() - started >= 3.0  # quiet since the copy began watching
    final = wait_for(lambda: (s := read_status_file(status_file)) and s.done and s)
    assert final.state == "verified" and final.waiting_for is None
    assert_copy(src, dst)


def test_a_forced_finish_does_not_wait(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, PRESET, rate=1000, timepoints=2, marker=None)
    e = engine(src, dst, finish_quiet=60)
    e.finish()
    wait_for(lambda: e.status().waiting_for, what="the finish to wait for quiet")
    e.finish(force=True)
    assert e.wait(10)
    assert e.status().finish_reason == "request"
    assert_copy(src, dst)


def test_a_writers_temporary_file_holds_a_finish_until_it_is_forced(tmp_path):
    """A writer's temporary file says a chunk is being written: however long the source has
    been quiet, a finish waits (one left by a crashed writer needs a forced finish)."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, PRESET, rate=1000, timepoints=2, marker=None)
    (src / "c" / "1" / "0" / "0" / "1.__lock").write_bytes(b"half a chunk")  # tensorstore's
    e = engine(src, dst, finish_quiet=0.2)
    e.finish()
    s = waiting_or_ended(e)
    while s.waiting_for and "temporary files" not in s.waiting_for:  # (after the quiet)
        s = waiting_or_ended(e)
    assert s.state == "copying", s
    assert s.waiting_for.startswith("the writers' temporary files in the source to go (1 ")
    assert not (dst / "complete").exists()
    e.finish(force=True)
    assert e.wait(10), e.status().message
    assert not (dst / "c" / "1" / "0" / "0" / "1.__lock").exists()
    (src / "c" / "1" / "0" / "0" / "1.__lock").unlink()
    assert_copy(src, dst)


def test_the_acquisitions_marker_ends_the_wait(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    e = engine(src, dst, wait_for_source=True, finish_quiet=60)
    writer = pausing_writer(src, hold_after=3)
    assert writer.held.wait(30)
    e.finish()
    wait_for(lambda: e.status().waiting_for, what="the finish to wait for quiet")
    finish_live(writer, e, timeout=30)  # its marker: no minute of quiet needed
    assert_identical(src, dst)


def test_finish_takes_no_lock_a_signal_handler_could_deadlock_on(tmp_path):
    """The CLI calls `finish` from a signal handler: in the main thread, between two steps,
    perhaps while that thread holds the engine's lock (its progress line calls `status`)."""
    e = CopyEngine(tmp_path / "acq.zarr", tmp_path / "copy.zarr")
    with e._lock:  # (as `status` holds it)
        asked = threading.Thread(target=e.finish, kwargs={"force": True}, daemon=True)
        asked.start()
        asked.join(5)
        assert not asked.is_alive(), "finish() waited for the engine's lock"
    assert e.status().finish_reason == "request"


# ---------------------------------------------------------------------------- the rule
def test_the_quiet_needed_is_longer_than_the_longest_pause_between_changes():
    a = SourceActivity(now=100.0)
    assert a.quiet_needed(5, 300) == 5  # nothing seen: the minimum
    a.note(at=160.0)  # the first change: the minute before it is no pause of the writer
    assert (a.changes, a.longest_pause) == (1, 0.0)
    for at in (160.1, 160.2, 195.2, 195.3):  # bursts with a 35 s pause between them
        a.note(at=at)
    assert a.changes == 5 and a.longest_pause == pytest.approx(35.0)
    assert a.quiet_needed(5, 300) == pytest.approx(35.0 * PAUSE_FACTOR)
    assert a.quiet_needed(60, 300) == 60
    assert a.quiet_needed(5, 30) == 30  # the cap
    a.note(at=190.0)  # dated before the last change (a scan finding what an event told)
    assert a.changes == 5 and a.last_change == pytest.approx(195.3)
    line = a.describe_wait(42, capped=False, now=198.3)
    assert line == (
        "the source to stay quiet for 42 s (last change 3 s ago; its pauses so far reached 35 s)"
    )


def test_a_scan_counts_a_change_that_events_missed(tmp_path):
    """A whole scan that finds a ctime newer than any before counts a change dated by it,
    unless an event already counted it (lost events, folders beyond the watch limit)."""
    src = tmp_path / "acq.zarr"
    simulate(src, PRESET, rate=1000, timepoints=1, marker=None)
    e = CopyEngine(src, tmp_path / "copy.zarr")
    e._activity = SourceActivity(now=time.monotonic() - 10.0)
    now_ns = time.time_ns()
    e._scanned_changes(now_ns - 5 * 10**9, started=time.monotonic())  # 5 s ago: new
    assert e._activity.changes == 1
    assert e._activity.quiet_for() == pytest.approx(5.0, abs=0.5)
    e._activity.note()  # an event, now
    e._scanned_changes(now_ns - 2 * 10**9, started=time.monotonic())  # told by the event
    assert e._activity.changes == 2 and e._activity.quiet_for() < 0.5
    e._scanned_changes(now_ns + 3600 * 10**9, started=time.monotonic())  # a clock ahead: now
    assert e._activity.changes == 3 and e._activity.quiet_for() < 0.5


# ---------------------------------------------------------------------------- the CLI
def test_a_bad_quiet_option_is_refused(tmp_path):
    src = tmp_path / "acq.zarr"
    simulate(src, PRESET, rate=1000, timepoints=1)
    cmd = [sys.executable, "-m", "napari_softcopy.cli", "copy", str(src), str(tmp_path / "c")]
    for bad, says in (
        (
            ["--finish-quiet", "-1"],
            "argument --finish-quiet: must be a number of seconds, 0 or more, not -1.0",
        ),
        (
            ["--finish-quiet", "inf"],
            "argument --finish-quiet: must be a number of seconds, 0 or more, not inf",
        ),
        (["--finish-quiet", "soon"], "argument --finish-quiet: invalid float value: 'soon'"),
        (
            ["--finish-quiet", "30", "--finish-quiet-max", "10"],
            "option finish_quiet (30 s) must not exceed finish_quiet_max (10 s)",
        ),
    ):
        r = subprocess.run([*cmd, *bad], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines()[-1].endswith(says), r.stderr
        assert not (tmp_path / "c").exists()


def test_sigusr1_waits_for_quiet_and_sigusr2_finishes_now(tmp_path):
    """Through the process that forwards signals to the copy in its own session, too."""
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, PRESET, rate=1000, timepoints=2, marker=None)
    status = tmp_path / "status.json"
    env = {"NAPARI_SOFTCOPY_STATE_DIR": str(tmp_path / "state")}
    cmd = [sys.executable, "-m", "napari_softcopy.cli", "copy", src, dst]
    cmd += ["--status-file", status, "--finish-quiet", "600", "--finish-quiet-max", "600"]
    proc = subprocess.Popen(
        list(map(str, cmd)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | env,
    )
    try:
        wait_for(lambda: (s := read_status_file(status)) and s.scans >= 1, what="first scan")
        proc.send_signal(signal.SIGUSR1)
        s = wait_for(lambda: (s := read_status_file(status)) and s.waiting_for and s)
        assert s.finish_reason == "request" and "quiet for 600 s" in s.waiting_for
        assert proc.poll() is None and not (dst / "complete").exists()
        proc.send_signal(signal.SIGUSR2)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert read_status_file(status).state == "verified"
    assert_copy(src, dst)


def test_the_widgets_copy_process_finishes_when_quiet_or_forced(tmp_path, monkeypatch):
    """`CopyProcess.finish` (the widget's *Finish now*) on an engine process it started."""
    from napari_softcopy.launch import start_copy
    from napari_softcopy.options import CopyOptions

    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(tmp_path / "state"))
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, PRESET, rate=1000, timepoints=2, marker=None)
    options = CopyOptions(low_priority=False, finish_quiet=600, finish_quiet_max=600)
    p = start_copy(src, dst, options)
    try:
        wait_for(lambda: (s := p.read_status()) and s.scans >= 1, what="first scan")
        assert p.finish()
        s = wait_for(lambda: (s := p.read_status()) and s.waiting_for and s)
        assert s.state == "copying" and "quiet for 600 s (last change" in s.waiting_for
        assert p.alive()
        assert p.finish(force=True)
        assert p.popen.wait(30) == 0, p.last_log_line()
    finally:
        if p.alive():
            p.stop()
            p.popen.wait(10)
    assert p.read_status().state == "verified"
    assert_copy(src, dst)

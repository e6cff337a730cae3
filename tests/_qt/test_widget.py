"""The dock widget in a real napari viewer (pytest-qt + make_napari_viewer, under Xvfb).

Every engine process a test starts is killed by the `engines` fixture's finalizer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt, QTimer
from qtpy.QtTest import QTest
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
)

from napari_softcopy import jobs
from napari_softcopy._qt.job_panel import viewer_grid
from napari_softcopy._qt.layers import source_of
from napari_softcopy._qt.widget import SoftcopyWidget
from napari_softcopy.chunkmap import COPIED, MISMATCHED
from napari_softcopy.launch import KEEP, STOP, CopyProcess
from napari_softcopy.option_flags import option_args
from napari_softcopy.options import CopyOptions, default_of, help_text, schema
from napari_softcopy.simulate import frame, simulate
from napari_softcopy.status import Status, read_status_file, write_status_file

#: What the widget's copies change for tests: normal priority, quicker rescans.
TEST_ENGINE_OPTIONS = {"low_priority": False, "rescan_interval": 2.0}
TEST_ENGINE_ARGS = option_args(CopyOptions(**TEST_ENGINE_OPTIONS))
T = 12  # timepoints of the live acquisition


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """A private job registry (inherited by every engine process a test starts)."""
    path = tmp_path / "state"
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", os.fspath(path))
    return path


@pytest.fixture(autouse=True)
def asked(monkeypatch):
    """Closing napari never shows a modal question in tests: record it, answer "keep"."""
    calls = []

    def ask(self, own, *_rest):
        calls.append([p.pid for p in own])
        return KEEP

    monkeypatch.setattr(SoftcopyWidget, "ask_keep_copying", ask)
    return calls


@pytest.fixture
def engines(state_dir):
    """Popen objects and widgets whose engines must die at the end of the test."""
    started = SimpleNamespace(popens=[], widgets=[])
    yield started
    pids = {r.pid for r in jobs.list_jobs(alive_only=False)}
    pids |= {p.pid for p in started.popens}
    for w in started.widgets:
        pids |= {panel.process.pid for panel in w.panels.values()}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # engines run in their own session
    for p in started.popens:
        p.wait(10)
    for w in started.widgets:
        for panel in list(w.panels.values()):
            if panel.process.popen is not None:
                panel.process.popen.wait(10)
    started.widgets.clear()  # napari checks that no viewer outlives its test


@pytest.fixture
def acquisition(tmp_path):
    """Start simulated acquisitions in threads; all are stopped at the end of the test."""
    running = []

    def start(name: str, preset: str = "demo", **kwargs) -> SimpleNamespace:
        path = tmp_path / f"{name}.zarr"
        stop = threading.Event()
        out = SimpleNamespace(path=path, stop=stop, report=None, error=None)

        def run():
            try:
                out.report = simulate(path, preset, stop=stop, **kwargs)
            except BaseException as exc:  # reported by the test that waits for it
                out.error = exc

        out.thread = threading.Thread(target=run, daemon=True)
        out.thread.start()
        running.append(out)
        return out

    yield start
    for out in running:
        out.stop.set()
        out.thread.join(20)


def dock(viewer, engines, qtbot=None):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-softcopy", "Live copy")
    widget.engine_options = TEST_ENGINE_OPTIONS
    engines.widgets.append(widget)
    if qtbot is not None:  # the close filter is installed once the event loop has run
        qtbot.waitUntil(lambda: widget._main_window is not None, timeout=5000)
    return widget


def wait_for_metadata(qtbot, path, timeout=20_000):
    qtbot.waitUntil(
        lambda: any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray")),
        timeout=timeout,
    )


def start_copy(qtbot, widget, source, destination):
    widget.source_edit.setText(os.fspath(source))
    widget.destination_edit.setText(os.fspath(destination))
    widget.start_clicked()
    source = os.path.abspath(source)
    qtbot.waitUntil(
        lambda: any(p.process.source == source for p in widget.panels.values()), timeout=10_000
    )
    return next(p for p in widget.panels.values() if p.process.source == source)


def state(panel):
    panel.refresh()
    return panel.status.state if panel.status else None


def test_widget_docks_from_the_manifest(make_napari_viewer, engines):
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    assert isinstance(widget, SoftcopyWidget)
    assert widget.start_button.text() == "Start copy"
    assert widget.verify_combo.currentData() == "size"
    assert widget.panels == {}
    assert widget.copy_options() == CopyOptions(**TEST_ENGINE_OPTIONS)  # the rest: defaults


def test_the_form_offers_the_options_marked_for_it_with_their_defaults_and_help(
    make_napari_viewer, engines
):
    """An option added to `CopyOptions` says whether the widget offers it (`Option.widget`);
    the form has a field for exactly those, starting at the default, with the option's help
    as its tooltip, and each field's change reaches the engine's options."""
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    offered = {name for name, _default, option in schema() if option.widget}
    assert set(widget.option_fields) == offered, "the form and `Option.widget` disagree"
    widget.engine_options = {}
    assert widget.copy_options() == CopyOptions()
    for name, editor in widget.option_fields.items():
        assert editor.toolTip() == help_text(name), name
    widget.workers_spin.setValue(widget.workers_spin.maximum())
    widget.bandwidth_spin.setValue(25)
    widget.verify_combo.setCurrentIndex(widget.verify_combo.findData("checksum"))
    widget.marker_edit.setText("acquisition.done")
    widget.wait_check.setChecked(not default_of("wait_for_source"))
    widget.move_check.setChecked(not default_of("move"))
    changed = {
        "workers": 256,
        "bandwidth_mb_s": 25.0,
        "verify": "checksum",
        "marker": "acquisition.done",
        "wait_for_source": not default_of("wait_for_source"),
        "move": not default_of("move"),
    }
    assert set(changed) == offered  # (a field added to the form: change it here too)
    assert widget.copy_options() == CopyOptions(**changed)
    assert widget.options_summary.text() == (
        "Options: 256 workers, 25 MB/s cap, checksum, marker acquisition.done"
    )


def test_a_marker_that_is_no_file_name_is_refused_in_the_form_and_starts_nothing(
    make_napari_viewer, engines, tmp_path, qtbot
):
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    src = simulate(tmp_path / "src.zarr", "demo", rate=float("inf"), timepoints=1).path
    widget.source_edit.setText(os.fspath(src))
    widget.destination_edit.setText(os.fspath(tmp_path / "copy.zarr"))
    qtbot.waitUntil(lambda: widget.last_validation.startswith("Ready"), timeout=5000)
    widget.marker_edit.setText("done/now")
    expected = "option marker must be a file name (not empty, without '/'), not 'done/now'"
    qtbot.waitUntil(lambda: widget.last_validation == expected, timeout=5000)
    widget.start_clicked()
    qtbot.waitUntil(lambda: widget.last_validation == expected, timeout=5000)
    qtbot.wait(200)
    assert widget.validation_label.text() == expected
    assert widget.panels == {} and jobs.list_jobs(alive_only=False) == []
    assert not (tmp_path / "copy.zarr").exists()


def test_invalid_input_shows_the_cli_message_and_starts_nothing(
    make_napari_viewer, engines, tmp_path, qtbot
):
    from napari_softcopy.checks import InputError, check_pair

    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    missing, dst = tmp_path / "missing.zarr", tmp_path / "copy.zarr"
    with pytest.raises(InputError) as expected:
        check_pair(missing, dst)
    widget.source_edit.setText(os.fspath(missing))
    widget.destination_edit.setText(os.fspath(dst))
    widget.start_clicked()
    qtbot.waitUntil(lambda: widget.last_validation == str(expected.value), timeout=5000)
    assert widget.validation_label.text() == str(expected.value)
    # inline, before any click: a destination inside the source
    src = simulate(tmp_path / "src.zarr", "demo", rate=float("inf"), timepoints=1).path
    widget.source_edit.setText(os.fspath(src))
    widget.destination_edit.setText(os.fspath(src / "inner"))
    qtbot.waitUntil(lambda: "inside the source" in widget.last_validation, timeout=5000)
    qtbot.wait(200)
    assert widget.panels == {}
    assert jobs.list_jobs(alive_only=False) == []
    assert not dst.exists() and not (src / "inner").exists()


def test_live_copy_verified_layers_equal_source_and_chunk_map(
    make_napari_viewer, engines, acquisition, tmp_path, qtbot
):
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    acq = acquisition("live", "multiscale", writer="tensorstore", timepoints=T, rate=3.0, grow=True)
    wait_for_metadata(qtbot, acq.path)
    dst = tmp_path / "copy.zarr"
    panel = start_copy(qtbot, widget, acq.path, dst)
    qtbot.waitUntil(lambda: state(panel) == "copying", timeout=15_000)
    assert acq.thread.is_alive()  # copying while the writer writes

    # Open the destination while it is copied: lazy layers that grow with it.
    qtbot.waitUntil(lambda: (dst / "0" / "zarr.json").exists(), timeout=10_000)
    panel.open_destination()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=10_000)
    first = viewer.layers[0]
    assert first.data[0].shape[0] < T  # the acquisition is still going
    assert source_of(first).role == "destination"
    assert first.multiscale and first.axis_labels == ("t", "z", "y", "x")
    assert tuple(first.scale[1:]) == pytest.approx((2.0, 0.4, 0.4))
    assert widget.follower.is_following(os.fspath(dst))

    qtbot.waitUntil(lambda: state(panel) == "verified", timeout=30_000)
    assert acq.error is None and acq.report.completed
    assert (dst / "complete").exists()
    assert panel.progress.value() == panel.progress.maximum()
    # The last refresh shows every timepoint; the layers equal what the writer wrote.
    qtbot.waitUntil(lambda: first.data[0].shape[0] == T, timeout=10_000)
    for layer in viewer.layers:
        c = source_of(layer).channel
        level0 = np.asarray(layer.data[0])
        expected = np.stack([frame(acq.report.spec, t)[c] for t in range(T)])
        np.testing.assert_array_equal(level0, expected)

    # Source beside it, and a difference that is zero everywhere.
    panel.open_source()
    qtbot.waitUntil(lambda: len(viewer.layers) == 4, timeout=10_000)
    assert not viewer_grid(viewer).enabled  # side by side by translation (see test_layers.py)
    source_x = np.asarray(viewer.layers[2].extent.world)[:, -1]
    assert np.asarray(first.extent.world)[1, -1] < source_x[0]
    panel.open_difference()
    qtbot.waitUntil(lambda: len(viewer.layers) == 6, timeout=10_000)
    diffs = [ly for ly in viewer.layers if source_of(ly).role == "difference"]
    assert diffs[0].data[0].dtype == np.int32
    assert not np.asarray(diffs[0].data[0][T - 1]).any()

    # Chunk map: all copied; then a removed and a corrupted destination chunk.
    follower = panel.open_chunk_map()
    qtbot.waitUntil(lambda: follower.updates >= 1, timeout=10_000)
    cmap = follower.layer
    assert cmap.data.shape == (T, 1, 4, 4)  # channel axis folded; t, z, y, x chunks
    assert (cmap.data == COPIED).all()
    assert tuple(cmap.scale[1:]) == pytest.approx((32.0, 25.6, 25.6))
    (dst / "0/c/3/0/0/1/2").unlink()
    corrupt = dst / "0/c/5/1/0/3/0"
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0x01
    corrupt.write_bytes(bytes(data))  # same size, new mtime
    seen = follower.updates
    follower.update_now()
    qtbot.waitUntil(lambda: follower.updates > seen, timeout=10_000)
    bad = {tuple(i) for i in np.argwhere(cmap.data == MISMATCHED)}
    assert bad == {(3, 0, 1, 2), (5, 0, 3, 0)}
    assert "2 mismatched" in panel.map_summary.text()


def _external_copy(source, destination, state_dir):
    env = dict(os.environ, NAPARI_SOFTCOPY_STATE_DIR=os.fspath(state_dir))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "napari_softcopy.cli",
            "copy",
            os.fspath(source),
            os.fspath(destination),
            *TEST_ENGINE_ARGS,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_reattach_to_an_external_copy_then_stop_it(
    make_napari_viewer, engines, acquisition, tmp_path, qtbot, state_dir
):
    acq = acquisition("ext", "demo", timepoints=200, rate=5.0)
    wait_for_metadata(qtbot, acq.path)
    proc = _external_copy(acq.path, tmp_path / "ext-copy.zarr", state_dir)
    engines.popens.append(proc)
    qtbot.waitUntil(lambda: any(j.pid == proc.pid for j in jobs.list_jobs()), timeout=15_000)

    viewer = make_napari_viewer()
    widget = dock(viewer, engines)  # lists running copies when it opens
    [panel] = widget.panels.values()
    assert panel.process.pid == proc.pid and not panel.process.started_here
    assert "re-attached" in panel.title()
    qtbot.waitUntil(
        lambda: state(panel) == "copying" and panel.status.files_copied > 0, timeout=15_000
    )
    panel.stop_button.click()
    assert proc.wait(10) == 143  # SIGTERM: stopped, resumable
    qtbot.waitUntil(lambda: panel.state_label.text() == "stopped", timeout=5000)
    assert "Resume with" in panel.message_label.text()
    assert panel.dismiss_button.isEnabled() and not panel.stop_button.isEnabled()
    panel.dismiss_button.click()
    qtbot.waitUntil(lambda: widget.panels == {}, timeout=2000)


def test_closing_napari_keeps_the_copies_the_user_keeps(
    make_napari_viewer, engines, acquisition, tmp_path, qtbot, asked
):
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    first = acquisition("one", "demo", timepoints=200, rate=5.0)
    second = acquisition("two", "nested-v2", timepoints=200, rate=5.0)
    wait_for_metadata(qtbot, first.path)
    wait_for_metadata(qtbot, second.path)
    panels = [
        start_copy(qtbot, widget, first.path, tmp_path / "one-copy.zarr"),
        start_copy(qtbot, widget, second.path, tmp_path / "two-copy.zarr"),
    ]
    assert len(widget.panels) == 2  # several copies at once, one per source
    for panel in panels:
        qtbot.waitUntil(lambda p=panel: state(p) == "copying", timeout=15_000)
    pids = sorted(p.process.pid for p in panels)

    viewer.close()
    assert asked == [pids] or sorted(asked[0]) == pids  # the question was asked
    for panel in panels:
        assert panel.process.alive()
    before = [panel.process.read_status().updated_at for panel in panels]
    qtbot.waitUntil(
        lambda: all(
            p.process.read_status().updated_at > b for p, b in zip(panels, before, strict=True)
        ),
        timeout=5000,
    )  # still copying after napari closed

    # A new napari lists both again. It did not start them: closing it asks nothing and
    # stops nothing, whatever "stop" would answer; each panel's Stop (an explicit pick) does.
    viewer2 = make_napari_viewer()
    widget2 = dock(viewer2, engines)
    assert sorted(p.process.pid for p in widget2.panels.values()) == pids
    del asked[:]
    widget2.ask_keep_copying = lambda own, *_: asked.append(own) or STOP
    assert widget2.handle_close(interactive=False)
    assert asked == []
    assert all(panel.process.alive() for panel in panels)
    assert widget2.close_message == (
        "2 copies keep running in the background; reopen the widget to follow them"
    )
    for panel in widget2.panels.values():
        panel.stop_button.click()
    for panel in panels:
        assert panel.process.popen.wait(10) == 143


def answer_finish(qtbot, panel, respond):
    """Click *Finish now*; ``respond(box)`` answers the confirmation (a real QMessageBox).

    Returns what the question showed, or {} when no question was asked.
    """
    seen = {}
    clicked = []

    def on_modal():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            if not clicked:  # the click has not returned: the question may be on its way
                QTimer.singleShot(20, on_modal)
            return
        seen.update(
            text=f"{box.text()}\n{box.informativeText()}",
            default=box.defaultButton().text(),
            buttons=[b.text() for b in box.buttons()],
        )
        respond(box)

    QTimer.singleShot(0, on_modal)
    panel.finish_button.click()  # returns once the question is answered
    clicked.append(True)
    qtbot.wait(50)  # when no question was asked, let the timer fire before returning
    return seen


def press_enter(box):
    QTest.keyClick(box, Qt.Key.Key_Return)  # the default button, as a user in a hurry would


def test_eta_appears_after_finish_now(make_napari_viewer, engines, acquisition, tmp_path, qtbot):
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    widget.bandwidth_spin.setValue(2)  # slow enough to see an ETA
    acq = acquisition("slow", "demo", rate=float("inf"), timepoints=10, marker=None)
    acq.thread.join(20)
    panel = start_copy(qtbot, widget, acq.path, tmp_path / "slow-copy.zarr")
    assert "--bandwidth" in " ".join(panel.process.popen.args)
    qtbot.waitUntil(lambda: state(panel) == "copying", timeout=15_000)
    assert panel.eta_label.text() == "-" and panel.eta_label.isHidden()  # no ETA yet
    # Finish now asks first; its default finishes when the source is quiet (SIGUSR1).
    asked = answer_finish(qtbot, panel, press_enter)
    assert asked["default"] == "Finish when the source is quiet"
    assert "Finish now anyway" in asked["buttons"]
    assert "nothing is marked complete until the source has stopped changing" in asked["text"]
    qtbot.waitUntil(lambda: state(panel) in ("finishing", "verifying", "verified"), timeout=10_000)
    qtbot.waitUntil(
        lambda: state(panel) == "finishing" and panel.eta_label.text() != "-", timeout=10_000
    )
    assert not panel.eta_label.isHidden()
    assert panel.status.files_pending > 0  # the ETA is about the backlog still to copy
    qtbot.waitUntil(lambda: state(panel) == "verified", timeout=30_000)
    assert panel.status.finish_reason == "request"


def test_closing_napari_stops_only_the_copies_it_started(
    make_napari_viewer, engines, acquisition, tmp_path, qtbot, state_dir, asked
):
    mine = acquisition("mine", "demo", timepoints=200, rate=5.0)
    theirs = acquisition("theirs", "demo", timepoints=200, rate=5.0)
    wait_for_metadata(qtbot, mine.path)
    wait_for_metadata(qtbot, theirs.path)
    external = _external_copy(theirs.path, tmp_path / "theirs-copy.zarr", state_dir)
    engines.popens.append(external)
    qtbot.waitUntil(lambda: any(j.pid == external.pid for j in jobs.list_jobs()), timeout=15_000)

    # Only a copy started in a terminal: closing napari asks nothing and leaves it running.
    viewer = make_napari_viewer()
    widget = dock(viewer, engines, qtbot)
    [attached] = widget.panels.values()
    assert attached.process.pid == external.pid
    viewer.close()
    assert asked == []
    assert external.poll() is None
    assert widget.close_message == (
        "1 copy keeps running in the background; reopen the widget to follow them"
    )

    # One copy started here, one re-attached: "stop" stops the one started here only.
    viewer = make_napari_viewer()
    widget = dock(viewer, engines, qtbot)
    panel = start_copy(qtbot, widget, mine.path, tmp_path / "mine-copy.zarr")
    assert len(widget.panels) == 2
    qtbot.waitUntil(lambda: state(panel) == "copying", timeout=15_000)
    widget.ask_keep_copying = lambda own, *_: asked.append([p.pid for p in own]) or STOP
    viewer.close()
    assert asked == [[panel.process.pid]]  # the question names only the copy started here
    assert panel.process.popen.wait(10) == 143  # stopped as chosen (resumable)
    assert external.poll() is None
    ext_status = jobs.list_jobs()[0].status_file
    before = read_status_file(ext_status).updated_at
    qtbot.waitUntil(lambda: read_status_file(ext_status).updated_at > before, timeout=5000)
    assert read_status_file(ext_status).state == "copying"  # still copying after napari
    assert widget.close_message.startswith("1 copy keeps running")


SIGNAL_RECORDER = """
import signal, sys, time
out = open(sys.argv[1], "a", buffering=1)
for sig in (signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, lambda n, _f: out.write(signal.Signals(n).name + "\\n"))
print("ready", file=out)
time.sleep(60)
"""


def test_finish_now_anyway_is_an_explicit_second_choice(
    make_napari_viewer, engines, tmp_path, qtbot
):
    """The panel sends "finish now, even while the source changes" only when chosen."""
    record = tmp_path / "signals.txt"
    child = subprocess.Popen(  # its own session, like an engine (the fixture kills its group)
        [sys.executable, "-c", SIGNAL_RECORDER, os.fspath(record)], start_new_session=True
    )
    engines.popens.append(child)
    qtbot.waitUntil(lambda: record.exists() and "ready" in record.read_text(), timeout=10_000)
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    process = CopyProcess(
        child.pid, "/data/acq.zarr", "/mnt/acq.zarr", os.fspath(tmp_path / "s.json"), popen=child
    )
    panel = widget.add_process(process)

    def received():
        return record.read_text().split()[1:]

    asked = answer_finish(
        qtbot, panel, lambda box: box.button(QMessageBox.StandardButton.Cancel).click()
    )
    assert asked, "Finish now must ask first"
    qtbot.wait(200)
    assert received() == []  # cancelled: nothing sent

    answer_finish(qtbot, panel, lambda box: box.force_button.click())
    qtbot.waitUntil(lambda: received() == ["SIGUSR2"], timeout=5000)
    answer_finish(qtbot, panel, press_enter)
    qtbot.waitUntil(lambda: received() == ["SIGUSR2", "SIGUSR1"], timeout=5000)


def test_panel_shows_what_a_finish_waits_for_and_the_notices(
    make_napari_viewer, engines, tmp_path, qtbot
):
    """What the engine writes in its status file (`waiting_for`, `destination_away`,
    `notices`, `destination_info`) reaches the panel."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    engines.popens.append(child)
    status_file = tmp_path / "s.json"
    notices = [
        "--bandwidth is shared by one process: no copy helper",
        "the destination does not keep mtimes to the nanosecond",
    ]
    status = Status(
        "/data/acq.zarr",
        "/mnt/acq.zarr",
        state="copying",
        pid=child.pid,
        finish_reason="request",
        waiting_for="the source to stay quiet for 42 s (last change 3 s ago)",
        notices=notices,
        destination_info="fuse.sshfs, mtime to 1 s, no xattrs (ENOTSUP), case-sensitive",
    )
    write_status_file(status_file, status)
    viewer = make_napari_viewer(show=True)
    widget = dock(viewer, engines)
    panel = widget.add_process(
        CopyProcess(
            child.pid, status.source, status.destination, os.fspath(status_file), popen=child
        )
    )
    panel.refresh()

    def shown():  # (a one-line label's whole text: what it shows is cut to the dock's width)
        return {
            getattr(lb, "full_text", lb.text)(): lb.toolTip()
            for lb in panel.findChildren(QLabel)
            if lb.isVisible()
        }

    qtbot.waitUntil(lambda: any("42 s" in t for t in shown()), timeout=5000)
    waiting = "Waiting for the source to stay quiet for 42 s (last change 3 s ago)"
    assert shown()[waiting] == waiting  # one line, whole on its tooltip
    # The notices and what the probe found: one details line (the first notice, and how
    # many more), every notice and what the destination keeps on its tooltip.
    [(line, tip)] = [(t, tip) for t, tip in shown().items() if notices[0] in t]
    assert line == f"Note: {notices[0]} (+1 more)"  # once, in one line
    assert all(n in tip for n in notices)  # every notice on its tooltip
    assert status.destination_info in tip
    assert panel.details_label.height() <= panel.fontMetrics().height() + 4  # (one line)

    # The destination away comes first: nothing goes on until it is back.
    status.destination_away = "lost the connection to the destination: /mnt; retrying in 8 s"
    write_status_file(status_file, status)
    panel.refresh()
    assert f"Waiting for the destination: {status.destination_away}" in shown()
    assert waiting not in shown()

    status.waiting_for = status.destination_away = None
    status.notices = []
    write_status_file(status_file, status)
    panel.refresh()
    assert not any("42 s" in t or notices[0] in t for t in shown())  # gone when the engine says so
    assert not any("Waiting for the destination" in t for t in shown())
    # Without notices the line says what the destination keeps, cut with "…" to the width.
    assert panel.details_label.full_text() == f"Destination: {status.destination_info}"
    assert status.destination_info in panel.details_label.toolTip()

    # Past the watch limit: how many folders are watched, and how the finished ones are covered.
    status.folders_watched, status.folders_unwatched = 16_384, 83_000
    write_status_file(status_file, status)
    panel.refresh()
    [(line, tip)] = [(t, tip) for t, tip in shown().items() if "16,384 watched" in t]
    assert line == "Folders: 16,384 watched; 83,000 finished: by rescans and the final check"
    assert "final verification" in tip and "rescan" in tip
    assert status.destination_info in tip

    # Errors: their count in red beside the progress bar, the list one press away.
    status.error_count = 2
    status.errors = [{"path": "0/c/1/0/0/0", "message": "[Errno 5] Input/output error"}] * 2
    write_status_file(status_file, status)
    panel.refresh()
    assert panel.errors_button.isVisible() and panel.errors_button.text() == "2 errors"
    assert "0/c/1/0/0/0: [Errno 5] Input/output error" in panel.errors_button.toolTip()
    assert not panel.errors_list.isVisible()
    panel.errors_button.click()
    assert panel.errors_list.isVisible() and panel.errors_list.count() == 2
    status.error_count, status.errors = 0, []
    write_status_file(status_file, status)
    panel.refresh()
    assert not panel.errors_button.isVisible() and not panel.errors_list.isVisible()


#: Room the dock keeps below two copy panels at napari's default size, for what a loaded
#: machine adds (a wrapped line, an error's row): 5 px once proved too little.
DOCK_MARGIN = 40


def dock_slack(viewport, panels) -> int:
    """Pixels of the scroll area's viewport left below the lowest panel."""
    bottoms = [p.mapTo(viewport, QPoint(0, 0)).y() + p.height() for p in panels]
    return viewport.height() - max(bottoms)


def test_two_panels_in_their_fullest_state_fit_napari_default_window_with_a_margin(
    make_napari_viewer, engines, tmp_path, qtbot
):
    """Two copies showing every row a running copy shows at once (a resumed copy finishing on
    a share past the watch limit, with notices, errors and what the finish waits for; only
    the engine's message after a cancelled finish can add a row) fit napari's default
    1280 x 800 window with `DOCK_MARGIN` to spare, and what a user needs at a glance stays in
    view: state, counts, rate, lag, ETA, what the finish waits for, a notice, the errors."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    dock_widget, widget = viewer.window.add_plugin_dock_widget("napari-softcopy", "Live copy")
    widget.engine_options = TEST_ENGINE_OPTIONS
    engines.widgets.append(widget)
    notices = [
        "source stamps at the destination: /mnt/share/acq.zarr (fuse.sshfs) keeps no extended "
        "attributes (ENOTSUP); what each file was copied from is recorded in .softcopy/ there",
        "nanosecond modification times at the destination: /mnt/share/acq.zarr keeps mtimes "
        "to 1 s; what each file was copied from is recorded in .softcopy/ there",
    ]
    panels = []
    for i in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
        )
        engines.popens.append(child)
        status = Status(
            f"/data/acq-{i}.zarr",
            f"/mnt/share/acq-{i}.zarr",
            state="copying",
            pid=child.pid,
            bytes_at_destination=512 * 2**30,
            bytes_copied=3 * 2**30,  # (resumed: "copied this run" too)
            files_pending=12_345,
            bytes_pending=96 * 2**30,
            chunks_expected=200_000,
            chunks_at_destination=150_000,
            rate_bytes_s=400 * 2**20,
            rate_files_s=1234,
            lag_s=12.5,
            elapsed_s=3600.0,
            finish_reason="request",
            waiting_for="the source to stay quiet for 42 s (last change 3 s ago)",
            notices=notices,
            destination_info="fuse.sshfs, mtime to 1 s, no xattrs (ENOTSUP), case-sensitive, "
            "Windows names, 812.4 GiB free",
            folders_watched=16_384,
            folders_unwatched=83_000,
            error_count=3,
            errors=[
                {"path": f"0/c/{t}/0/0/0", "message": "[Errno 5] Input/output error"}
                for t in range(3)
            ],
        )
        status_file = tmp_path / f"s{i}.json"
        write_status_file(status_file, status)
        process = CopyProcess(
            child.pid, status.source, status.destination, os.fspath(status_file), popen=child
        )
        panels.append(widget.add_process(process))
    [scroll] = dock_widget.findChildren(QScrollArea)
    viewport = scroll.viewport()
    for panel in panels:
        panel.refresh()
        qtbot.waitUntil(lambda p=panel: not p.eta_label.isHidden(), timeout=5000)

    def laid_out():  # (shown, each panel as tall as its rows ask: the layout caught up)
        assert all(p.isVisible() for p in panels)
        assert [p.height() for p in panels] == [p.sizeHint().height() for p in panels]

    qtbot.waitUntil(laid_out, timeout=5000)
    for panel in panels:  # at a glance: none of it folded away
        shown = {lb.text() for lb in panel.findChildren(QLabel) if lb.isVisible()}
        for must in ("copying", "Rate:", "Backlog:", "Lag:", "Elapsed:", "ETA:", "4:06"):
            assert must in shown, (must, shown)
        assert panel.errors_button.isVisible() and panel.errors_button.text() == "3 errors"
        assert panel.waiting_label.isVisible()
        assert panel.waiting_label.full_text().startswith("Waiting for the source")
        assert panel.details_label.isVisible()
        assert panel.details_label.full_text().startswith(f"Note: {notices[0]}")
    assert not scroll.horizontalScrollBar().isVisible()
    slack = dock_slack(viewport, panels)
    assert slack >= DOCK_MARGIN, slack


def test_the_dock_fits_napari_default_window(
    make_napari_viewer, engines, acquisition, tmp_path, qtbot
):
    """At 1280 x 800, no horizontal scrollbar, no text cut off, two copies in view."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    dock_widget, widget = viewer.window.add_plugin_dock_widget("napari-softcopy", "Live copy")
    widget.engine_options = TEST_ENGINE_OPTIONS
    engines.widgets.append(widget)
    sources = [acquisition(n, "demo", timepoints=200, rate=5.0) for n in ("one", "two")]
    for acq in sources:
        wait_for_metadata(qtbot, acq.path)
    panels = [
        start_copy(qtbot, widget, acq.path, tmp_path / f"copy-{i}.zarr")
        for i, acq in enumerate(sources)
    ]
    for panel in panels:
        qtbot.waitUntil(lambda p=panel: state(p) == "copying", timeout=15_000)
    widget.refresh_status()
    [scroll] = dock_widget.findChildren(QScrollArea)
    body, viewport = scroll.widget(), scroll.viewport()
    qtbot.waitUntil(lambda: body.width() <= viewport.width(), timeout=2000)

    assert widget.minimumSizeHint().width() <= dock_widget.width()
    assert body.minimumSizeHint().width() <= viewport.width()
    assert not scroll.horizontalScrollBar().isVisible()
    # Two copy panels, whole, without scrolling, and room to spare below them.
    rows = [lb.text() for p in panels for lb in p.findChildren(QLabel) if lb.isVisible()]
    assert all(p.mapTo(viewport, QPoint(0, 0)).y() >= 0 for p in panels)
    assert dock_slack(viewport, panels) >= DOCK_MARGIN, (dock_slack(viewport, panels), rows)
    # No field squeezed until its text is cut off ("o cap", "omplete"), the options shown.
    widget.show_options(True)
    qtbot.waitUntil(lambda: widget.bandwidth_spin.isVisible(), timeout=2000)
    qtbot.wait(50)
    assert not scroll.horizontalScrollBar().isVisible()
    cut = []
    for w in body.findChildren((QAbstractSpinBox, QComboBox, QPushButton, QToolButton, QLabel)):
        if not w.isVisible():
            continue
        if isinstance(w, QLabel) and (
            w.wordWrap() or w.sizePolicy().horizontalPolicy() == QSizePolicy.Policy.Ignored
        ):
            continue  # wraps, or holds changing numbers (checked below)
        if w.sizeHint().width() > w.width():
            cut.append((type(w).__name__, getattr(w, "text", lambda: "")(), w.width()))
    assert cut == []
    for edit in (widget.marker_edit, widget.source_edit, widget.destination_edit):
        text = edit.text() if edit is widget.marker_edit else edit.placeholderText()
        assert edit.fontMetrics().horizontalAdvance(text) < edit.contentsRect().width() - 8
    for panel in panels:  # the numbers of a copy fit their line, now and when they grow
        worst = {
            panel.rate_label: "999.9 MiB/s, 9,999 files/s",
            panel.backlog_label: "99,999 files, 999.9 GiB",
            panel.lag_label: "9999.9 s",
            panel.elapsed_label: "99:59:59",
            panel.eta_label: "99:59:59",
            panel.bytes_label: "999.9 GiB at destination",
        }
        for label, longest in worst.items():
            for text in (label.text(), longest):
                assert label.fontMetrics().horizontalAdvance(text) <= label.width(), text


def test_a_tuning_that_does_not_apply_is_noted_in_the_panel(
    make_napari_viewer, engines, tmp_path, qtbot, monkeypatch
):
    """A real engine started by the widget, following its source through watchdog's observer
    (as where the engine's own inotify reader cannot run): the panel says so, in one line."""
    from napari_softcopy.watcher import WATCHER_ENV

    monkeypatch.setenv(WATCHER_ENV, "watchdog")  # (inherited by the engine process)
    source = tmp_path / "acq.zarr"
    simulate(source, "demo", rate=1000, timepoints=2)
    viewer = make_napari_viewer(show=True)
    widget = dock(viewer, engines, qtbot)
    panel = start_copy(qtbot, widget, source, tmp_path / "copy.zarr")

    def note() -> str:  # (the line's whole text: what it shows is cut to the dock's width)
        panel.refresh()
        shown = [lb for lb in panel.findChildren(QLabel) if lb.isVisible()]
        texts = [getattr(lb, "full_text", lb.text)() for lb in shown]
        return next((t for t in texts if "batched event reads" in t), "")

    qtbot.waitUntil(lambda: bool(note()), timeout=20_000)
    assert note().startswith("Note: batched event reads and quick rename pairing are off")
    qtbot.waitUntil(lambda: state(panel) == "verified", timeout=30_000)


# ---------------------------------------------------------------------------- freeing
def answer_free(qtbot, widget, respond) -> dict:
    """Click *Start copy*; ``respond(box)`` answers the question a copy that frees its source
    asks once its input is checked (a real QMessageBox). Returns what the question showed."""
    from napari_softcopy._qt.free_dialog import DELETE_TEXT

    seen = {}

    def on_modal():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox) or DELETE_TEXT not in [b.text() for b in box.buttons()]:
            QTimer.singleShot(20, on_modal)  # (the input is checked in a worker first)
            return
        seen.update(
            text=box.text(),
            default=box.defaultButton().text(),
            buttons=[b.text() for b in box.buttons()],
        )
        respond(box)

    QTimer.singleShot(0, on_modal)
    widget.start_clicked()
    qtbot.waitUntil(lambda: bool(seen), timeout=10_000)
    return seen


def test_freeing_the_source_asks_first_naming_the_folder_and_its_size(
    make_napari_viewer, engines, tmp_path, qtbot
):
    from napari_softcopy._qt.free_dialog import MOVE_TEXT, size_text
    from napari_softcopy.move_step import tree_size

    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    src = simulate(tmp_path / "src.zarr", "demo", rate=float("inf"), timepoints=3).path
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    dst = tmp_path / "copy.zarr"
    assert widget.move_check.text() == MOVE_TEXT and not widget.move_check.isChecked()
    widget.source_edit.setText(os.fspath(src))
    widget.destination_edit.setText(os.fspath(dst))
    widget.move_check.setChecked(True)
    files, nbytes = tree_size(src)
    seen = answer_free(qtbot, widget, lambda box: box.cancel_button.click())
    assert f"delete the acquisition {src} ({size_text(nbytes)} in {files:,} files" in seen["text"]
    assert seen["default"] == "Cancel"  # (Enter does not delete)
    qtbot.waitUntil(lambda: widget.last_validation.startswith("Not started"), timeout=5000)
    assert widget.panels == {} and jobs.list_jobs(alive_only=False) == []
    assert not dst.exists()
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before


def test_a_confirmed_move_frees_the_source_and_says_so(
    make_napari_viewer, engines, acquisition, tmp_path, qtbot
):
    """Copied live from a tensorstore writer, verified, the source freed by the engine the
    widget started; the panel says "freed ...", and *Check copy* vouches for the copy."""
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    acq = acquisition("live", "demo", writer="tensorstore", timepoints=6, rate=4.0)
    wait_for_metadata(qtbot, acq.path)
    dst = tmp_path / "copy.zarr"
    widget.source_edit.setText(os.fspath(acq.path))
    widget.destination_edit.setText(os.fspath(dst))
    widget.move_check.setChecked(True)
    answer_free(qtbot, widget, lambda box: box.delete_button.click())
    qtbot.waitUntil(lambda: len(widget.panels) == 1, timeout=10_000)
    panel = next(iter(widget.panels.values()))
    assert "--move" in panel.process.popen.args
    qtbot.waitUntil(
        lambda: state(panel) == "verified" and panel.status.freed is not None, timeout=60_000
    )
    assert acq.error is None and acq.report.completed
    assert os.listdir(acq.path) == []
    assert panel.freed_label.text().startswith("freed ")
    assert panel.freed_label.text().split(" from ")[1].startswith(f"{acq.path} (")
    assert not panel.freed_label.isHidden()
    panel.check_button.click()
    qtbot.waitUntil(lambda: widget.status_line.text().startswith("intact: "), timeout=20_000)
    chunk = next(p for p in dst.rglob("*") if p.is_file() and p.parent.name.isdigit())
    data = bytearray(chunk.read_bytes())
    data[0] ^= 0xFF
    chunk.write_bytes(bytes(data))
    panel.check_button.click()
    qtbot.waitUntil(lambda: widget.status_line.text().startswith("DIFFERENT: "), timeout=20_000)

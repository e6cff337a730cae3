"""One copy in the widget: its live status, its controls and its layers."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..launch import CopyProcess, StatusView, is_final, status_view
from ..layer_data import difference_layers
from ..open_zarr import ArchiveInfo
from ..status import JobState, Status
from .compare import arrange_side_by_side, viewer_grid  # noqa: F401  (re-exported: tests)
from .finish_dialog import FINISH_FORCE, FINISH_QUIET, finish_dialog
from .free_dialog import CHECK_TIP, check_line, freed_line
from .layers import ChunkMapFollower, LayerFollower, add_layer_data, run_in_thread
from .opening import archive_name, inspect_either, link_channels, open_image
from .parts import Figure

STATE_COLORS = {
    JobState.STARTING: "#9aa0a6",
    JobState.WAITING: "#9aa0a6",
    JobState.COPYING: "#4a90d9",
    JobState.FINISHING: "#d9a441",
    JobState.VERIFYING: "#d9a441",
    JobState.FREEING: "#d9a441",
    JobState.VERIFIED: "#3fae49",
    JobState.STOPPED: "#9aa0a6",
    JobState.FAILED: "#e0201b",
}


class JobPanel(QGroupBox):
    """Follows one engine process through its status file.

    Parameters
    ----------
    process : CopyProcess
        The engine (started by the widget, or re-attached from the job registry).
    viewer : napari.Viewer
        Where its layers go.
    """

    dismissed = Signal(object)
    message = Signal(str)

    def __init__(
        self, process: CopyProcess, viewer, follower: LayerFollower, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.process = process
        self.viewer = viewer
        self.follower = follower
        self.status: Status | None = None
        self.view: StatusView = status_view(None)
        self.info: ArchiveInfo | None = None
        self._inspecting = False
        self._exited_early = False
        self.chunk_maps: list[ChunkMapFollower] = []
        origin = "" if process.started_here else "  (re-attached)"
        src, dst = Path(process.source), Path(process.destination)
        target = dst.name if dst.name != src.name else f"{dst.parent.name}/{dst.name}"
        self.setTitle(f"{src.name} → {target}{origin}")
        self.setToolTip(f"{process.source}\n→ {process.destination}\npid {process.pid}")
        self._build()
        self.refresh()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        # Compact, so that two panels and the form fit napari's default window: the state
        # sits beside the progress bar, the pid is on the tooltip, empty lines take no room.
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 4, 6, 6)
        outer.setSpacing(3)
        top = QHBoxLayout()
        self.state_label = QLabel(str(JobState.STARTING))
        self.state_label.setObjectName("softcopyState")
        top.addWidget(self.state_label)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setMinimumHeight(18)
        self.progress.setMinimumWidth(60)
        top.addWidget(self.progress, 1)
        outer.addLayout(top)
        # Figures: as wide as their longest value; changing numbers must not resize the
        # dock (and with it napari's canvas), nor be cut off.
        self.bytes_label = Figure("999.9 GiB at destination")
        self.bytes_label.setWordWrap(True)  # a resumed copy's second part may wrap
        outer.addWidget(self.bytes_label)

        grid = QGridLayout()
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(1)
        self.rate_label = Figure("999.9 MiB/s, 9,999 files/s")
        self.backlog_label = Figure("99,999 files, 999.9 GiB")
        self.lag_label = Figure("9999.9 s")
        self.elapsed_label = Figure("99:59:59")
        self.eta_label = Figure("99:59:59")
        self.eta_label.setToolTip(
            "time to copy what is pending, once a finish was requested (before that the "
            "acquisition's end is unknown)"
        )
        # The long values (rate; backlog with its bytes) get a row each; the short ones share
        # one. The ETA's row shows only once there is an ETA (after a finish request).
        grid.addWidget(QLabel("Rate:"), 0, 0)
        grid.addWidget(self.rate_label, 0, 1, 1, 3)
        grid.addWidget(QLabel("Backlog:"), 1, 0)
        grid.addWidget(self.backlog_label, 1, 1, 1, 3)
        grid.addWidget(QLabel("Lag:"), 2, 0)
        grid.addWidget(self.lag_label, 2, 1)
        grid.addWidget(QLabel("Elapsed:"), 2, 2)
        grid.addWidget(self.elapsed_label, 2, 3)
        self.eta_title = QLabel("ETA:")
        grid.addWidget(self.eta_title, 3, 0)
        grid.addWidget(self.eta_label, 3, 1, 1, 3)
        self.eta_title.hide()
        self.eta_label.hide()
        # The folders with a file-event watch, and how the finished ones are covered.
        self.watching_title = QLabel("Folders:")  # (no wider than the column's others)
        self.watching_label = QLabel("")
        self.watching_label.setWordWrap(True)
        self.watching_label.setToolTip(
            "source folders followed by file events; past the inotify watch limit, finished "
            "folders give their watch back, and their files are found by the periodic full "
            "rescan and by the final verification, which compares every file before the marker"
        )
        grid.addWidget(self.watching_title, 4, 0)
        grid.addWidget(self.watching_label, 4, 1, 1, 3)
        self.watching_title.hide()
        self.watching_label.hide()
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        outer.addLayout(grid)

        # What the destination keeps, as the engine's probe found it (`destination_info`).
        self.destination_label = QLabel("")
        self.destination_label.setObjectName("softcopyDestination")
        self.destination_label.setWordWrap(True)
        self.destination_label.setStyleSheet("color: #9aa0a6;")
        # What a requested finish waits for (the engine's `waiting_for`).
        self.waiting_label = QLabel("")
        self.waiting_label.setObjectName("softcopyWaiting")
        self.waiting_label.setWordWrap(True)
        self.waiting_label.setStyleSheet("color: #d9a441;")
        # The engine's notices: one short line, every notice on its tooltip.
        self.notice_label = QLabel("")
        self.notice_label.setObjectName("softcopyNotices")
        self.notice_label.setWordWrap(True)
        self.notice_label.setStyleSheet("color: #9aa0a6;")
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # "freed 281.0 MiB from /data/acq.zarr" (the status's `freed`, with --move).
        self.freed_label = QLabel("")
        self.freed_label.setObjectName("softcopyFreed")
        self.freed_label.setWordWrap(True)
        self.freed_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        labels = (
            self.destination_label,
            self.waiting_label,
            self.notice_label,
            self.message_label,
            self.freed_label,
        )
        for label in labels:
            label.hide()
            outer.addWidget(label)

        self.errors_title = QLabel("Errors")
        self.errors_title.setStyleSheet("color: #e0201b; font-weight: bold;")
        self.errors_list = QListWidget()
        self.errors_list.setMaximumHeight(90)
        self.errors_list.setWordWrap(True)
        outer.addWidget(self.errors_title)
        outer.addWidget(self.errors_list)
        self.errors_title.hide()
        self.errors_list.hide()

        controls = QHBoxLayout()
        self.finish_button = QPushButton("Finish now")
        self.finish_button.setToolTip(
            "Copy the rest, verify, then write the marker; asks whether to wait until the "
            "source is quiet"
        )
        self.finish_button.clicked.connect(self.finish_clicked)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(
            "Stop promptly; nothing partial is left and starting again resumes (SIGTERM)"
        )
        self.stop_button.clicked.connect(self.stop)
        self.dismiss_button = QPushButton("Dismiss")
        self.dismiss_button.setToolTip("Remove this ended copy from the list")
        self.dismiss_button.clicked.connect(lambda: self.dismissed.emit(self))
        for b in (self.finish_button, self.stop_button, self.dismiss_button):
            controls.addWidget(b)
        outer.addLayout(controls)

        self.well_combo = QComboBox()
        self.field_combo = QComboBox()
        self.image_combo = QComboBox()
        self.well_combo.currentTextChanged.connect(self._fill_fields)
        self.plate_row = QWidget()
        row = QHBoxLayout(self.plate_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Well:"))
        row.addWidget(self.well_combo, 1)
        row.addWidget(QLabel("Field:"))
        row.addWidget(self.field_combo, 1)
        self.image_row = QWidget()
        row = QHBoxLayout(self.image_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Image:"))
        row.addWidget(self.image_combo, 1)
        outer.addWidget(self.plate_row)
        outer.addWidget(self.image_row)
        self._show_pickers()

        view = QGridLayout()
        view.setVerticalSpacing(2)
        self.open_button = QPushButton("Open destination")
        self.open_button.setToolTip("Add the copy as lazy layers (refreshed while it runs)")
        self.open_button.clicked.connect(self.open_destination)
        self.source_button = QPushButton("Open source")
        self.source_button.setToolTip(
            "Add the source to the right of the copy (contrast linked per channel)"
        )
        self.source_button.clicked.connect(self.open_source)
        self.diff_button = QPushButton("Difference")
        self.diff_button.setToolTip("Destination minus source, lazily: zero where identical")
        self.diff_button.clicked.connect(self.open_difference)
        self.map_button = QPushButton("Chunk map")
        self.map_button.setToolTip("State of every chunk file, over the image")
        self.map_button.clicked.connect(self.open_chunk_map)
        view.addWidget(self.open_button, 0, 0)
        view.addWidget(self.source_button, 0, 1)
        view.addWidget(self.diff_button, 1, 0)
        view.addWidget(self.map_button, 1, 1)
        self.check_button = QPushButton("Check copy")
        self.check_button.setToolTip(CHECK_TIP)
        self.check_button.clicked.connect(self.check_copy)
        view.addWidget(self.check_button, 2, 0, 1, 2)
        outer.addLayout(view)
        self.map_summary = QLabel("")
        self.map_summary.setWordWrap(True)
        self.map_summary.setStyleSheet("color: #9aa0a6;")
        self.map_summary.hide()
        outer.addWidget(self.map_summary)

    def _show_pickers(self) -> None:
        info = self.info
        plate = info is not None and info.kind == "plate"
        multi = info is not None and not plate and len(info.images) > 1
        self.plate_row.setVisible(plate)
        self.image_row.setVisible(multi)

    # ------------------------------------------------------------------ status
    @property
    def running(self) -> bool:
        """True while the engine process runs."""
        return self.process.alive()

    @property
    def ended(self) -> bool:
        return is_final(self.status) or not self.running

    def refresh(self) -> None:
        """Read the status file (small; fine on the Qt thread) and update the display."""
        status = self.process.read_status()
        alive = self.running
        if status is None and not alive:
            code = self.process.exit_code()
            if code is not None and not self._exited_early:
                self._exited_early = True
                line = self.process.last_log_line() or f"the engine exited with code {code}"
                self.message.emit(line)
            self._show_ended_without_status()
            return
        self.status = status
        v = status_view(status)
        self.view = v
        state = v.state if alive or status is None or status.done else JobState.STOPPED
        self._show_state(state)
        # Only what changed: every repaint of napari's window costs a redraw of its canvas.
        # (QProgressBar repaints synchronously on setValue; with updates off it is queued.)
        self.progress.setUpdatesEnabled(False)
        if self.progress.maximum() != max(v.progress_max, 1):
            self.progress.setMaximum(max(v.progress_max, 1))
        if self.progress.value() != v.progress:
            self.progress.setValue(v.progress)
        if self.progress.format() != v.progress_text:
            self.progress.setFormat(v.progress_text)
        self.progress.setUpdatesEnabled(True)
        for label, text in (
            (self.bytes_label, v.bytes_text),
            (self.rate_label, v.rate),
            (self.lag_label, v.lag),
            (self.backlog_label, v.backlog),
            (self.elapsed_label, v.elapsed),
            (self.eta_label, v.eta),
        ):
            if label.text() != text:
                label.setText(text)
        eta_known = v.eta != "-"
        if self.eta_label.isHidden() == eta_known:
            self.eta_title.setVisible(eta_known)
            self.eta_label.setVisible(eta_known)
        # The folders line takes a row only where it tells something: past the watch limit
        # (every folder watched is the rule; the count is then on the destination's tooltip).
        watching = v.watching if status is not None and status.folders_unwatched else ""
        if self.watching_label.text() != watching:
            self.watching_label.setText(watching)
            self.watching_title.setVisible(bool(watching))
            self.watching_label.setVisible(bool(watching))
        info = status.destination_info if status is not None else None
        _set_text(self.destination_label, f"Destination: {info}" if info else "")
        tip = f"What the destination keeps, as probed when the copy started: {info}" if info else ""
        if tip and v.watching and not watching:
            tip += f"\nSource folders followed by file events: {v.watching}"
        if self.destination_label.toolTip() != tip:
            self.destination_label.setToolTip(tip)
        _set_text(self.waiting_label, v.waiting)
        _set_text(self.message_label, v.message)
        _set_text(self.notice_label, v.notice_text)
        freed = freed_line(status.freed if status else None)
        if freed is not None:
            self.freed_label.setStyleSheet(f"color: {'#e0201b' if freed[1] else '#3fae49'};")
        _set_text(self.freed_label, freed[0] if freed else "")
        tip = "\n".join(f"• {n}" for n in v.notices)
        if self.notice_label.toolTip() != tip:
            self.notice_label.setToolTip(tip)
        self._show_errors(v.errors, status.error_count if status else 0)
        self._enable(
            finish=alive
            and state not in (JobState.FINISHING, JobState.VERIFYING, JobState.FREEING),
            stop=alive,
            dismiss=not alive,
        )
        if self.info is None or self.info.kind == "missing":
            self._inspect()

    def _show_state(self, state: str) -> None:
        if self.state_label.text() != state:
            color = STATE_COLORS.get(state, "#9aa0a6")
            self.state_label.setText(str(state))
            self.state_label.setStyleSheet(f"color: {color}; font-weight: bold;")

    def _enable(self, *, finish: bool, stop: bool, dismiss: bool) -> None:
        for button, on in (
            (self.finish_button, finish),
            (self.stop_button, stop),
            (self.dismiss_button, dismiss),
        ):
            if button.isEnabled() != on:
                button.setEnabled(on)

    def _show_ended_without_status(self) -> None:
        line = self.process.last_log_line()
        self._show_state(JobState.FAILED if self.process.exit_code() else "ended")
        _set_text(self.message_label, line)
        _set_text(self.waiting_label, "")
        self._enable(finish=False, stop=False, dismiss=True)

    def _show_errors(self, errors: list[str], count: int) -> None:
        if not errors:
            self.errors_title.hide()
            self.errors_list.hide()
            return
        self.errors_title.setText(f"Errors ({count})" + (" - last 50" if count > 50 else ""))
        if [self.errors_list.item(i).text() for i in range(self.errors_list.count())] != errors:
            self.errors_list.clear()
            self.errors_list.addItems(errors)
            self.errors_list.scrollToBottom()
        self.errors_title.show()
        self.errors_list.show()

    # ------------------------------------------------------------------ control
    def finish_clicked(self) -> None:
        """*Finish now*: ask how (see `finish_dialog`), then ask the engine to finish."""
        choice = self.ask_finish()
        if choice is not None:
            self.finish(force=choice == FINISH_FORCE)

    def finish_dialog(self) -> QMessageBox:
        """The confirmation *Finish now* shows: what is at risk, and the two ways to finish.

        The default is to finish when the source is quiet; forcing is a second, explicit
        choice. The buttons are ``box.quiet_button`` and ``box.force_button``.
        """
        return finish_dialog(self, self.process.source, self.process.destination)

    def ask_finish(self) -> str | None:
        """`FINISH_QUIET`, `FINISH_FORCE`, or None when the user cancels."""
        box = self.finish_dialog()
        box.exec()
        clicked = box.clickedButton()
        if clicked is box.force_button:
            return FINISH_FORCE
        if clicked is box.quiet_button:
            return FINISH_QUIET
        return None

    def finish(self, force: bool = False) -> None:
        """Ask the engine to finish: copy the rest, verify, write the marker.

        Without ``force`` it waits until the source has stopped changing (``SIGUSR1``);
        with it, it finishes at once (``SIGUSR2``). Either way, a change seen at the source
        before the marker is written cancels the marker and the copy goes on.
        """
        if self.process.finish(force=force):
            how = "now" if force else "once the source is quiet"
            self.message.emit(f"finishing the copy into {self.process.destination} {how}")

    def stop(self) -> None:
        """Stop the engine (it resumes when started again with the same paths)."""
        if self.process.stop():
            self.message.emit(f"stopping the copy into {self.process.destination}")

    # ------------------------------------------------------------------ what to show
    def _inspect(self) -> None:
        if self._inspecting:
            return
        self._inspecting = True
        run_in_thread(
            inspect_either,
            self.process.source,
            self.process.destination,
            on_done=self._inspected,
            on_error=self._inspect_failed,
        )

    def _inspect_failed(self, _exc: BaseException) -> None:
        self._inspecting = False

    def _inspected(self, info: ArchiveInfo) -> None:
        self._inspecting = False
        self.info = info
        self.well_combo.blockSignals(True)
        self.well_combo.clear()
        self.well_combo.addItems(list(info.wells))
        self.well_combo.blockSignals(False)
        self._fill_fields(self.well_combo.currentText())
        self.image_combo.clear()
        self.image_combo.addItems([i or "(root)" for i in info.images])
        self._show_pickers()

    def _fill_fields(self, well: str) -> None:
        self.field_combo.clear()
        if self.info is not None and well in self.info.wells:
            self.field_combo.addItems([f.rpartition("/")[2] for f in self.info.wells[well]])

    def selected_image(self) -> str:
        """The image path chosen in the pickers ("" for the root image)."""
        info = self.info
        if info is None or not info.images:
            return ""
        if info.kind == "plate":
            well, field = self.well_combo.currentText(), self.field_combo.currentText()
            fields = info.wells.get(well) or []
            for f in fields:
                if f.rpartition("/")[2] == field:
                    return f
            return fields[0] if fields else info.images[0]
        if len(info.images) > 1:
            text = self.image_combo.currentText()
            return "" if text == "(root)" else text
        return info.images[0]

    def _live(self) -> bool:
        return not self.ended

    def _add(self, layers: list, follow_root: str | None) -> list:
        added = add_layer_data(self.viewer, layers)
        if arrange_side_by_side(self.viewer, self.process.destination, self.process.source):
            self.viewer.reset_view()
        if follow_root is not None and self._live():
            self.follower.follow(follow_root, self._live)
        return added

    def _failed(self, what: str) -> callable:
        return lambda exc: self.message.emit(f"{what}: {exc}")

    def open_destination(self) -> None:
        """Add the destination as lazy layers; they refresh while the copy runs."""
        image = self.selected_image()
        run_in_thread(
            open_image,
            self.process.destination,
            image,
            "destination",
            on_done=lambda layers: self._add(layers, self.process.destination),
            on_error=self._failed("cannot open the destination"),
        )

    def open_source(self) -> None:
        """Add the source beside the destination (side by side, linked contrast)."""
        image = self.selected_image()
        run_in_thread(
            open_image,
            self.process.source,
            image,
            "source",
            on_done=self._add_source,
            on_error=self._failed("cannot open the source"),
        )

    def _add_source(self, layers: list) -> None:
        if self._add(layers, self.process.source):
            link_channels(self.viewer, self.process.destination, self.process.source)

    def open_difference(self) -> None:
        """Add destination minus source (signed, lazy): zero where the copy is identical."""
        image = self.selected_image()
        run_in_thread(
            difference_layers,
            self.process.destination,
            self.process.source,
            image,
            on_done=lambda layers: self._add(layers, self.process.destination),
            on_error=self._failed("cannot compute the difference"),
        )

    def open_chunk_map(self) -> ChunkMapFollower:
        """Add (or redraw) the chunk map of the chosen image."""
        image = self.selected_image()
        for follower in self.chunk_maps:
            if follower.image == image:
                follower.start()
                return follower
        name = f"chunk map {archive_name(self.process.destination)}" + (
            f"/{image}" if image else ""
        )
        follower = ChunkMapFollower(
            self.viewer,
            self.process.source,
            self.process.destination,
            image,
            finished=lambda: self.ended,
            name=name,
            on_summary=lambda text: _set_text(self.map_summary, text),
            parent=self,
        )
        self.chunk_maps.append(follower)
        follower.start()
        return follower

    def check_copy(self) -> None:
        """*Check copy*: the copy against its manifest, in a worker; the verdict's one line
        goes to the widget's message line."""
        dest = self.process.destination
        self.message.emit(f"Checking {dest} against its manifest…")
        run_in_thread(
            check_line,
            dest,
            on_done=self.message.emit,
            on_error=lambda exc: self.message.emit(f"cannot check {dest}: {exc}"),
        )

    def close_panel(self) -> None:
        for follower in self.chunk_maps:
            follower.stop()


def _set_text(label: QLabel, text: str) -> None:
    """Set a label's text only when it changed (a repaint costs napari a canvas redraw);
    an empty label is hidden, so that it takes no room in the panel."""
    if label.text() != text:
        label.setText(text)
    if label.isHidden() == bool(text):
        label.setVisible(bool(text))

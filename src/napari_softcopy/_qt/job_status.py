"""A copy panel's status: its state, progress and figures, as the engine's status file says.

`StatusDisplay` is the part of `job_panel.JobPanel` that builds those widgets and redraws them
from each status read. It touches only what changed: every repaint of a label or the progress
bar makes napari redraw its canvas.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QVBoxLayout,
)

from ..launch import status_view
from ..status import JobState
from .free_dialog import freed_line
from .parts import ElidedLabel, Figure

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


class StatusDisplay:
    """The status half of `JobPanel` (a mixin of it).

    Needs of the panel: ``process`` (its `CopyProcess`), ``running``, ``_exited_early``,
    ``info`` and ``_inspect`` (the pickers filled once the archive is readable), the buttons
    ``finish_button``, ``stop_button`` and ``dismiss_button``, and the ``message`` signal.
    Sets ``status`` and ``view`` at each `refresh`.
    """

    def _build_status(self, outer: QVBoxLayout) -> None:
        """The state, progress bar, figures, notice lines and errors, at the top of ``outer``."""
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
        self.destination_label = ElidedLabel()
        self.destination_label.setObjectName("softcopyDestination")
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
        line = f"Destination: {info}" if info else ""
        self.destination_label.set_full_text(line)
        if self.destination_label.isHidden() == bool(line):
            self.destination_label.setVisible(bool(line))
        tip = (
            f"What the destination keeps, as probed when the copy started:\n{info}" if info else ""
        )
        if tip and v.watching and not watching:
            tip += f"\nSource folders followed by file events: {v.watching}"
        if self.destination_label.toolTip() != tip:
            self.destination_label.setToolTip(tip)
        set_text(self.waiting_label, v.waiting)
        set_text(self.message_label, v.message)
        set_text(self.notice_label, v.notice_text)
        freed = freed_line(status.freed if status else None)
        if freed is not None:
            self.freed_label.setStyleSheet(f"color: {'#e0201b' if freed[1] else '#3fae49'};")
        set_text(self.freed_label, freed[0] if freed else "")
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
        set_text(self.message_label, line)
        set_text(self.waiting_label, "")
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


def set_text(label: QLabel, text: str) -> None:
    """Set a label's text only when it changed (a repaint costs napari a canvas redraw);
    an empty label is hidden, so that it takes no room in the panel."""
    if label.text() != text:
        label.setText(text)
    if label.isHidden() == bool(text):
        label.setVisible(bool(text))

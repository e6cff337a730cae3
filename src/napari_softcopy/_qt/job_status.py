"""A copy panel's status: its state, progress and figures, as the engine's status file says.

`StatusDisplay` is the part of `job_panel.JobPanel` that builds those widgets and redraws them
from each status read. It touches only what changed: every repaint of a label or the progress
bar makes napari redraw its canvas.

Two panels must fit napari's default window (1280 x 800) beside the copy form, with room to
spare for what a loaded machine adds. So what a user needs at a glance keeps a row (state and
progress, bytes, rate, backlog, lag, elapsed and ETA, what a finish waits for, the error
count), and each rarely needed fact takes at most one line, cut with "…" and whole on its
tooltip: the notices (the first, and how many more) or else what the destination keeps, on
one details line; the error list opens from the error count.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QToolButton,
    QVBoxLayout,
)

from ..launch import StatusView, status_view
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
        # The errors: their count at a glance, the last ones on its tooltip, the list below
        # when it is pressed (90 px a panel cannot spare for good).
        self.errors_button = QToolButton()
        self.errors_button.setObjectName("softcopyErrors")
        self.errors_button.setCheckable(True)
        self.errors_button.setStyleSheet("color: #e0201b; font-weight: bold;")
        self.errors_button.toggled.connect(self._show_error_list)
        self.errors_button.hide()
        top.addWidget(self.errors_button)
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
        # one, the ETA's pair shown there once there is an ETA (after a finish request).
        grid.addWidget(QLabel("Rate:"), 0, 0)
        grid.addWidget(self.rate_label, 0, 1, 1, 5)
        grid.addWidget(QLabel("Backlog:"), 1, 0)
        grid.addWidget(self.backlog_label, 1, 1, 1, 5)
        grid.addWidget(QLabel("Lag:"), 2, 0)
        grid.addWidget(self.lag_label, 2, 1)
        grid.addWidget(QLabel("Elapsed:"), 2, 2)
        grid.addWidget(self.elapsed_label, 2, 3)
        self.eta_title = QLabel("ETA:")
        grid.addWidget(self.eta_title, 2, 4)
        grid.addWidget(self.eta_label, 2, 5)
        self.eta_title.hide()
        self.eta_label.hide()
        for column in (1, 3, 5):
            grid.setColumnStretch(column, 1)
        outer.addLayout(grid)

        # What a requested finish waits for (the engine's `waiting_for`): one line.
        self.waiting_label = ElidedLabel()
        self.waiting_label.setObjectName("softcopyWaiting")
        self.waiting_label.setStyleSheet("color: #d9a441;")
        # One details line: the engine's notices (the first, and how many more), else the
        # folders past the watch limit, else what the destination keeps (`destination_info`);
        # all of it on its tooltip.
        self.details_label = ElidedLabel()
        self.details_label.setObjectName("softcopyDetails")
        self.details_label.setStyleSheet("color: #9aa0a6;")
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # "freed 281.0 MiB from /data/acq.zarr" (the status's `freed`, with --move).
        self.freed_label = QLabel("")
        self.freed_label.setObjectName("softcopyFreed")
        self.freed_label.setWordWrap(True)
        self.freed_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        labels = (self.waiting_label, self.details_label, self.message_label, self.freed_label)
        for label in labels:
            label.hide()
            outer.addWidget(label)

        self.errors_list = QListWidget()
        self.errors_list.setMaximumHeight(90)
        self.errors_list.setWordWrap(True)
        outer.addWidget(self.errors_list)
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
        info = status.destination_info if status is not None else None
        set_elided(self.waiting_label, v.waiting, v.waiting)
        unwatched = status is not None and status.folders_unwatched > 0
        set_elided(self.details_label, *details(v, info, past_watch_limit=unwatched))
        set_text(self.message_label, v.message)
        freed = freed_line(status.freed if status else None)
        if freed is not None:
            self.freed_label.setStyleSheet(f"color: {'#e0201b' if freed[1] else '#3fae49'};")
        set_text(self.freed_label, freed[0] if freed else "")
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
        set_elided(self.waiting_label, "", "")
        self._enable(finish=False, stop=False, dismiss=True)

    def _show_errors(self, errors: list[str], count: int) -> None:
        if not errors:
            self.errors_button.setChecked(False)
            self.errors_button.hide()
            return
        text = f"{count:,} error{'s' * (count != 1)}"
        if self.errors_button.text() != text:
            self.errors_button.setText(text)
        last = "\n".join(f"• {e}" for e in errors[-5:])
        more = " (last 50)" if count > 50 else ""
        tip = f"Click for the list{more}; the last ones:\n{last}"
        if self.errors_button.toolTip() != tip:
            self.errors_button.setToolTip(tip)
        if [self.errors_list.item(i).text() for i in range(self.errors_list.count())] != errors:
            self.errors_list.clear()
            self.errors_list.addItems(errors)
            self.errors_list.scrollToBottom()
        self.errors_button.show()

    def _show_error_list(self, shown: bool) -> None:
        self.errors_list.setVisible(shown)


def details(v: StatusView, info: str | None, *, past_watch_limit: bool) -> tuple[str, str]:
    """The details line and its tooltip.

    The line: the notices (the first, and how many more), else the folders watched where
    some are not (``past_watch_limit``: finished folders gave their watch back), else what
    the destination keeps. The tooltip: every notice, the folders and the destination.
    """
    folders = f"Folders: {v.watching}" if v.watching else ""
    line = v.notice_text or (folders if past_watch_limit else "")
    line = line or (f"Destination: {info}" if info else "")
    tips = [f"• {n}" for n in v.notices]
    if folders:
        tips.append(
            f"Source folders followed by file events: {v.watching}"
            + (
                "\nPast the inotify watch limit, finished folders give their watch back; "
                "their files are found by the periodic rescan (a folder proven during the "
                "copy by a look at its source side) and by the final verification, which "
                "compares every file before the marker"
                if past_watch_limit
                else ""
            )
        )
    if info:
        tips.append(f"What the destination keeps, as probed when the copy started:\n{info}")
    return line, "\n".join(tips)


def set_elided(label: ElidedLabel, text: str, tip: str) -> None:
    """`set_text` for a one-line label cut with "…" (whole on its ``tip``)."""
    label.set_full_text(text)
    if label.toolTip() != tip:
        label.setToolTip(tip)
    if label.isHidden() == bool(text):
        label.setVisible(bool(text))


def set_text(label: QLabel, text: str) -> None:
    """Set a label's text only when it changed (a repaint costs napari a canvas redraw);
    an empty label is hidden, so that it takes no room in the panel."""
    if label.text() != text:
        label.setText(text)
    if label.isHidden() == bool(text):
        label.setVisible(bool(text))

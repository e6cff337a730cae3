"""The dock widget: start copies, follow them, verify them in the viewer.

The widget never scans or copies: it validates input in a worker thread (the same
`checks.check_pair` as the CLI; the form and its checks are `copy_form.CopyForm`), starts each
copy as its own engine process, and reads the engines' JSON status files on a timer (one
`job_panel.JobPanel` per copy).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from qtpy.QtCore import QEvent, QObject, QSize, QTimer
from qtpy.QtWidgets import (
    QLabel,
    QMainWindow,
    QScrollArea,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from ..checks import InputError
from ..launch import (
    KEEP,
    CopyProcess,
    apply_close_decision,
    background_message,
    running_copies,
    split_by_origin,
    start_copy,
)
from ..move_step import tree_size
from .closing import ask_keep_copying
from .copy_form import BANDWIDTH_FIELD_MAX, VERIFY_TEXT, CopyForm, validate  # noqa: F401
from .free_dialog import free_dialog
from .job_panel import JobPanel
from .layers import LayerFollower
from .parts import legend, pair_text

STATUS_MS = 1000
JOBS_MS = 2000
VALIDATE_DELAY_MS = 300


class SoftcopyWidget(CopyForm, QWidget):
    """Copy Zarr archives while they are written; follow and verify the copies.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).
    """

    #: `CopyOptions` fields the form does not show, for every copy started here (tests ask
    #: for normal priority and quicker rescans).
    engine_options: Mapping[str, object] = MappingProxyType({})

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._main_window: QObject | None = None
        self.viewer = napari_viewer
        self.follower = LayerFollower(napari_viewer, self)
        self.panels: dict[str, JobPanel] = {}
        self._validation_generation = 0
        self._start_requested = False
        self.last_validation: str = ""
        # Engines this widget started: the only ones closing napari may stop. Copies it
        # re-attached to (a terminal's, another napari's) are not napari's to end.
        self.launched: set[int] = set()
        #: What closing napari said about copies that keep running ("" when none did).
        self.close_message: str = ""
        self._build()
        self._status_timer = QTimer(self)
        self._status_timer.setInterval(STATUS_MS)
        self._status_timer.timeout.connect(self.refresh_status)
        self._status_timer.start()
        self._jobs_timer = QTimer(self)
        self._jobs_timer.setInterval(JOBS_MS)
        self._jobs_timer.timeout.connect(self.attach_running)
        self._jobs_timer.start()
        self._validate_timer = QTimer(self)
        self._validate_timer.setSingleShot(True)
        self._validate_timer.setInterval(VALIDATE_DELAY_MS)
        self._validate_timer.timeout.connect(self.validate_inputs)
        self._message_timer = QTimer(self)
        self._message_timer.setSingleShot(True)
        self._message_timer.setInterval(30_000)
        self._message_timer.timeout.connect(lambda: self.show_message(""))
        # Docking parents this widget after __init__: look for napari's window then.
        QTimer.singleShot(0, self._install_close_filter)
        self.attach_running()

    # ------------------------------------------------------------------ layout
    # The dock must fit napari's default window (1280 x 800) without a horizontal scrollbar
    # and with two copy panels in view: short labels, form rows that wrap when narrow, the
    # less used options folded away, and no field squeezed until its text is cut off.
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.body = QWidget()
        self._body = QVBoxLayout(self.body)
        self._body.setContentsMargins(0, 0, 0, 0)
        self._body.setSpacing(6)
        self.scroll.setWidget(self.body)
        outer.addWidget(self.scroll)

        self._body.addWidget(self._build_form())

        # No frame around the copies: each panel has its own, and height is scarce.
        self.copies_box = QWidget()
        self._copies = QVBoxLayout(self.copies_box)
        self._copies.setContentsMargins(0, 0, 0, 0)
        self._copies.setSpacing(6)
        self.no_copies_label = QLabel("No copy running. Copies started elsewhere appear here.")
        self.no_copies_label.setWordWrap(True)
        self.no_copies_label.setStyleSheet("color: #9aa0a6;")
        self._copies.addWidget(self.no_copies_label)
        self._body.addWidget(self.copies_box)

        self._body.addWidget(legend())
        self.status_line = QLabel("")
        self.status_line.setWordWrap(True)
        self.status_line.setStyleSheet("color: #9aa0a6;")
        self.status_line.hide()
        self._body.addWidget(self.status_line)
        self._body.addStretch(1)

    # ------------------------------------------------------------------ starting
    def _launch(self, src: str, dst: str, size: tuple[int, int] | None = None) -> JobPanel | None:
        try:
            options = self.copy_options()
        except InputError as exc:
            self._show_validation(str(exc), ok=False)
            return None
        if options.move and not self.confirm_free(src, *(size or tree_size(src))):
            self._show_validation(
                f"Not started: {pair_text(src, dst)} (freeing the source not confirmed)",
                ok=None,
            )
            return None
        try:
            process = start_copy(src, dst, options)
        except InputError as exc:
            self._show_validation(str(exc), ok=False)
            return None
        except OSError as exc:
            self._show_validation(f"cannot start the engine: {exc}", ok=False)
            return None
        self.launched.add(process.pid)
        self._show_validation(
            f"Started: {pair_text(src, dst)} (pid {process.pid})", ok=True, tip=f"{src}\n→ {dst}"
        )
        return self.add_process(process)

    def confirm_free(self, src: str, files: int, nbytes: int) -> bool:
        """Ask before a copy that frees its source starts (`free_dialog`): True to go on."""
        box = free_dialog(self, src, files, nbytes)
        box.exec()
        return box.clickedButton() is box.delete_button

    def add_process(self, process: CopyProcess) -> JobPanel:
        """Show a copy (started here or found in the job registry)."""
        old = self.panels.get(process.key)
        if old is not None:
            if old.process.pid == process.pid:
                return old
            if old.running:
                return old
            self._remove_panel(old)
        panel = JobPanel(process, self.viewer, self.follower, self.copies_box)
        panel.dismissed.connect(self._remove_panel)
        panel.message.connect(self.show_message)
        self.panels[process.key] = panel
        self._copies.insertWidget(0, panel)
        self.no_copies_label.hide()
        self.updateGeometry()  # napari's dock follows a wider minimum
        return panel

    def show_message(self, text: str) -> None:
        """One line under the copies (what a button did, why it failed); fades after 30 s."""
        self.status_line.setText(text)
        self.status_line.setVisible(bool(text))  # an empty line must not take a row
        if text:
            self._message_timer.start()

    def _remove_panel(self, panel: JobPanel) -> None:
        panel.close_panel()
        self.panels.pop(panel.process.key, None)
        self._copies.removeWidget(panel)
        panel.deleteLater()
        self.no_copies_label.setVisible(not self.panels)

    def attach_running(self) -> list[JobPanel]:
        """Show every running copy of the job registry not shown yet (re-attach)."""
        added = []
        for process in running_copies():
            panel = self.panels.get(process.key)
            if panel is not None and panel.process.pid == process.pid:
                continue
            added.append(self.add_process(process))
        return added

    def refresh_status(self) -> None:
        """Read every followed status file and update the panels."""
        for panel in list(self.panels.values()):
            panel.refresh()

    def running_processes(self) -> list[CopyProcess]:
        """The engines still running among those shown."""
        return [p.process for p in self.panels.values() if p.running]

    # ------------------------------------------------------------------ closing napari
    def _install_close_filter(self) -> None:
        """Watch napari's main window (our nearest QMainWindow ancestor) for its closing."""
        if self._main_window is not None:
            return
        parent = self.parentWidget()
        while parent is not None and not isinstance(parent, QMainWindow):
            parent = parent.parentWidget()
        if parent is not None:
            parent.installEventFilter(self)
            self._main_window = parent

    # napari sizes its dock area by these: the form's and the panels' minimum width plus the
    # vertical scrollbar, so the dock never starts narrower than its content (which would
    # hide the right edge of every field behind a horizontal scrollbar).
    def minimumSizeHint(self) -> QSize:
        return self._fit(self.body.minimumSizeHint(), super().minimumSizeHint())

    def sizeHint(self) -> QSize:
        return self._fit(self.body.sizeHint(), super().sizeHint())

    def _fit(self, body: QSize, own: QSize) -> QSize:
        margins = self.layout().contentsMargins()
        bar = self.scroll.verticalScrollBar()
        extent = bar.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, bar)
        reserve = max(bar.sizeHint().width(), extent) + 2 * self.scroll.frameWidth()
        width = body.width() + reserve + margins.left() + margins.right()
        return QSize(max(width, own.width()), own.height())

    def showEvent(self, event) -> None:
        self._install_close_filter()
        super().showEvent(event)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        # getattr: Qt may still call this while Python tears the widget down.
        if (
            event.type() == QEvent.Type.Close
            and obj is getattr(self, "_main_window", None)
            and not self.handle_close(interactive=event.spontaneous())
        ):
            event.ignore()
            return True
        return False

    def handle_close(self, interactive: bool = False) -> bool:
        """napari is closing; True lets it close.

        Only the copies this widget started are the user's to decide about here (keep them or
        stop them); every other copy keeps running, and the widget says how many do.
        """
        own, others = split_by_origin(self.running_processes(), self.launched)
        kept = len(others)
        if own:
            answer = self.ask_keep_copying(own, others, interactive)
            if not apply_close_decision(answer, own):
                return False
            if answer == KEEP:
                kept += len(own)
        self._stop_timers()
        self.close_message = background_message(kept)
        if self.close_message:
            # Non-blocking: napari's notification (also printed to its log/terminal).
            from napari.utils.notifications import show_info

            show_info(self.close_message)
        return True

    def ask_keep_copying(
        self, own: list[CopyProcess], others: list[CopyProcess], interactive: bool
    ) -> str:
        """The question about the copies started here; `KEEP`, `STOP` or `CANCEL`.

        ``CANCEL`` only when it can be honoured (``interactive``). ``others`` (copies this
        widget did not start) are only mentioned: they keep running whatever the answer.
        Tests replace this method; the message box appears only here.
        """
        return ask_keep_copying(self, own, others, interactive)

    def _stop_timers(self) -> None:
        for timer in (
            self._status_timer,
            self._jobs_timer,
            self._validate_timer,
            self._message_timer,
        ):
            timer.stop()
        for panel in self.panels.values():
            panel.close_panel()

    def closeEvent(self, event) -> None:
        self._stop_timers()
        if self._main_window is not None:
            self._main_window.removeEventFilter(self)
        super().closeEvent(event)

    @staticmethod
    def short(path: str) -> str:
        return Path(path).name

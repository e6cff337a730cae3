"""The dock widget: start copies, follow them, verify them in the viewer.

The widget never scans or copies: it validates input in a worker thread (the same
`checks.check_pair` as the CLI), starts each copy as its own engine process, and reads the
engines' JSON status files on a timer.
"""

from __future__ import annotations

import os
from pathlib import Path

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..checks import InputError, check_pair
from ..chunkmap import LEGEND
from ..jobs import list_jobs
from ..launch import (
    CANCEL,
    KEEP,
    STOP,
    CopyProcess,
    LaunchOptions,
    apply_close_decision,
    running_copies,
    start_copy,
)
from .job_panel import JobPanel
from .layers import LayerFollower, run_in_thread

STATUS_MS = 1000
JOBS_MS = 2000
VALIDATE_DELAY_MS = 300


def validate(
    source: str, destination: str, *, wait_for_source: bool = False, force: bool = False
) -> tuple[str, str]:
    """The widget's input check: `check_pair` plus "no other engine copies there".

    Returns the absolute paths; raises `InputError` with the CLI's one-line message.
    """
    if not source.strip():
        raise InputError("choose the source: the Zarr archive being acquired")
    if not destination.strip():
        raise InputError("choose the destination: where the copy goes")
    src, dst = check_pair(
        source.strip(), destination.strip(), force=force, wait_for_source=wait_for_source
    )
    real = os.path.realpath(dst)
    for job in list_jobs():
        if os.path.realpath(job.destination) == real:
            raise InputError(
                f"another napari-softcopy (pid {job.pid}) is already copying into {dst}; "
                "stop it first or choose another destination"
            )
    return os.fspath(src), os.fspath(dst)


class SoftcopyWidget(QWidget):
    """Copy Zarr archives while they are written; follow and verify the copies.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).
    """

    #: Extra engine arguments for every copy started here (tests speed up rescans).
    extra_args: tuple[str, ...] = ()

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._main_window: QObject | None = None
        self.viewer = napari_viewer
        self.follower = LayerFollower(napari_viewer, self)
        self.panels: dict[str, JobPanel] = {}
        self._validation_generation = 0
        self._start_requested = False
        self.last_validation: str = ""
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
        self._message_timer.timeout.connect(self.status_line.clear)
        # Docking parents this widget after __init__: look for napari's window then.
        QTimer.singleShot(0, self._install_close_filter)
        self.attach_running()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        body = QWidget()
        self._body = QVBoxLayout(body)
        self._body.setContentsMargins(0, 0, 0, 0)
        scroll.setWidget(body)
        outer.addWidget(scroll)

        form_box = QGroupBox("New copy")
        form = QFormLayout(form_box)
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("the Zarr archive being acquired")
        self.destination_edit = QLineEdit()
        self.destination_edit.setPlaceholderText("where the copy goes (e.g. on the cluster)")
        form.addRow("Source:", self._with_browse(self.source_edit, "Choose the source"))
        form.addRow(
            "Destination:", self._with_browse(self.destination_edit, "Choose the destination")
        )
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(0, 64)
        self.workers_spin.setSpecialValueText("auto")
        self.workers_spin.setValue(0)
        self.workers_spin.setToolTip(
            "copy threads; auto: 1 on a local disk, 4 on a network or FUSE filesystem"
        )
        self.bandwidth_spin = QDoubleSpinBox()
        self.bandwidth_spin.setRange(0.0, 100_000.0)
        self.bandwidth_spin.setDecimals(0)
        self.bandwidth_spin.setSuffix(" MB/s")
        self.bandwidth_spin.setSpecialValueText("no cap")
        self.bandwidth_spin.setToolTip("cap the copy's bandwidth (all workers together)")
        row = QHBoxLayout()
        row.addWidget(self.workers_spin)
        row.addWidget(QLabel("Bandwidth:"))
        row.addWidget(self.bandwidth_spin, 1)
        form.addRow("Workers:", row)
        self.verify_combo = QComboBox()
        self.verify_combo.addItem("size + mtime", "size")
        self.verify_combo.addItem("checksum (reads both)", "checksum")
        self.verify_combo.setToolTip("final verification")
        self.marker_edit = QLineEdit("complete")
        self.marker_edit.setToolTip("the file the acquisition writes in the source root when done")
        row = QHBoxLayout()
        row.addWidget(self.verify_combo, 1)
        row.addWidget(QLabel("Marker:"))
        row.addWidget(self.marker_edit, 1)
        form.addRow("Verify:", row)
        self.wait_check = QCheckBox("Wait for the source to appear")
        form.addRow("", self.wait_check)
        self.validation_label = QLabel("Choose a source and a destination.")
        self.validation_label.setObjectName("softcopyValidation")
        self.validation_label.setWordWrap(True)
        self.validation_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.validation_label)
        self.start_button = QPushButton("Start copy")
        self.start_button.clicked.connect(self.start_clicked)
        form.addRow(self.start_button)
        self._body.addWidget(form_box)
        for edit in (self.source_edit, self.destination_edit):
            edit.textChanged.connect(self._schedule_validation)
        self.wait_check.toggled.connect(self._schedule_validation)

        self.copies_box = QGroupBox("Copies")
        self._copies = QVBoxLayout(self.copies_box)
        self.no_copies_label = QLabel("No copy running. Copies started elsewhere appear here.")
        self.no_copies_label.setWordWrap(True)
        self.no_copies_label.setStyleSheet("color: #9aa0a6;")
        self._copies.addWidget(self.no_copies_label)
        self._body.addWidget(self.copies_box)

        legend = QGroupBox("Chunk map legend")
        grid = QVBoxLayout(legend)
        for value, (name, meaning, color) in LEGEND.items():
            swatch = QLabel(f"{value}")
            swatch.setAlignment(Qt.AlignmentFlag.AlignCenter)
            swatch.setFixedSize(18, 18)
            swatch.setStyleSheet(f"background: {color}; color: black; border-radius: 3px;")
            text = QLabel(f"<b>{name}</b>: {meaning}")
            text.setWordWrap(True)
            line = QHBoxLayout()
            line.addWidget(swatch)
            line.addWidget(text, 1)
            grid.addLayout(line)
        self._body.addWidget(legend)
        self.status_line = QLabel("")
        self.status_line.setWordWrap(True)
        self.status_line.setStyleSheet("color: #9aa0a6;")
        self._body.addWidget(self.status_line)
        self._body.addStretch(1)

    def _with_browse(self, edit: QLineEdit, title: str) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        button = QPushButton("Browse…")

        def browse() -> None:
            start = edit.text() or os.path.expanduser("~")
            path = QFileDialog.getExistingDirectory(self, title, start)
            if path:
                edit.setText(path)

        button.clicked.connect(browse)
        row.addWidget(button)
        return row

    # ------------------------------------------------------------------ options
    def launch_options(self) -> LaunchOptions:
        """The engine options chosen in the form."""
        return LaunchOptions(
            workers=self.workers_spin.value() or None,
            bandwidth_mb_s=self.bandwidth_spin.value() or None,
            verify=self.verify_combo.currentData(),
            marker=self.marker_edit.text().strip() or "complete",
            wait_for_source=self.wait_check.isChecked(),
            extra_args=tuple(self.extra_args),
        )

    # ------------------------------------------------------------------ validation
    def _schedule_validation(self) -> None:
        self._validation_generation += 1
        self._start_requested = False  # the input changed: a new click is needed
        self._validate_timer.start()

    def validate_inputs(self) -> None:
        """Check the source and destination in a worker; show the message inline."""
        self._validation_generation += 1
        generation = self._validation_generation
        src, dst = self.source_edit.text(), self.destination_edit.text()
        wait = self.wait_check.isChecked()
        if not src.strip() and not dst.strip():
            self._start_requested = False
            self._show_validation("Choose a source and a destination.", ok=None)
            return
        run_in_thread(
            validate,
            src,
            dst,
            wait_for_source=wait,
            on_done=lambda paths: self._validated(generation, paths, None),
            on_error=lambda exc: self._validated(generation, None, exc),
        )

    def _validated(self, generation: int, paths, exc) -> None:
        if generation != self._validation_generation:
            return  # the fields changed meanwhile; a newer check is on its way
        start = self._start_requested
        self._start_requested = False
        if exc is not None:
            text = str(exc) if isinstance(exc, InputError) else f"cannot check: {exc!r}"
            self._show_validation(text, ok=False)
            return
        src, dst = paths
        self._show_validation(f"Ready: {src} → {dst}", ok=True)
        if start:
            self._launch(src, dst)

    def _show_validation(self, text: str, ok: bool | None) -> None:
        self.last_validation = text
        color = {True: "#3fae49", False: "#e0201b", None: "#9aa0a6"}[ok]
        self.validation_label.setStyleSheet(f"color: {color};")
        self.validation_label.setText(text)

    # ------------------------------------------------------------------ starting
    def start_clicked(self) -> None:
        """Validate (in a worker), then start the engine process if the input is good."""
        self._validate_timer.stop()
        self._start_requested = True
        self._show_validation("Checking…", ok=None)
        self.validate_inputs()

    def _launch(self, src: str, dst: str) -> JobPanel | None:
        try:
            process = start_copy(src, dst, self.launch_options())
        except OSError as exc:
            self._show_validation(f"cannot start the engine: {exc}", ok=False)
            return None
        self._show_validation(f"Started: {src} → {dst} (pid {process.pid})", ok=True)
        return self.add_process(process)

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
        return panel

    def show_message(self, text: str) -> None:
        """One line under the copies (what a button did, why it failed); fades after 30 s."""
        self.status_line.setText(text)
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
        """napari is closing: ask what to do with running copies. True lets it close."""
        running = self.running_processes()
        if not running:
            return True
        answer = self.ask_keep_copying(running, interactive)
        allowed = apply_close_decision(answer, running)
        if allowed:
            self._stop_timers()
        return allowed

    def ask_keep_copying(self, running: list[CopyProcess], interactive: bool) -> str:
        """The question; returns `KEEP`, `STOP` or `CANCEL` (only when it can be honoured).

        Tests replace this method; the message box appears only here.
        """
        names = "\n".join(f"  {p.source} → {p.destination}" for p in running)
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Copies are running")
        box.setText(
            f"{len(running)} cop{'y is' if len(running) == 1 else 'ies are'} "
            f"running:\n{names}\n\nKeep copying after napari closes?"
        )
        box.setInformativeText(
            "A copy kept running is listed again when you reopen this "
            "widget. A stopped copy resumes when started again."
        )
        keep = box.addButton("Keep copying", QMessageBox.ButtonRole.AcceptRole)
        stop = box.addButton("Stop copies", QMessageBox.ButtonRole.DestructiveRole)
        cancel = None
        if interactive:
            cancel = box.addButton("Don't close", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(keep)
        box.exec()
        clicked = box.clickedButton()
        if clicked is stop:
            return STOP
        if cancel is not None and clicked is cancel:
            return CANCEL
        return KEEP

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

"""The dock widget: start copies, follow them, verify them in the viewer.

The widget never scans or copies: it validates input in a worker thread (the same
`checks.check_pair` as the CLI), starts each copy as its own engine process, and reads the
engines' JSON status files on a timer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..checks import InputError, check_pair
from ..destinations.s3_settings import endpoint_of, is_s3_url
from ..jobs import list_jobs
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
from ..options import CopyOptions, default_of, help_text, option_of
from .closing import ask_keep_copying
from .free_dialog import MOVE_TEXT, free_dialog
from .job_panel import JobPanel
from .layers import LayerFollower, run_in_thread
from .parts import (
    WholeComboBox,
    WholeDoubleSpinBox,
    WholeSpinBox,
    form_layout,
    legend,
    pair_text,
)

STATUS_MS = 1000
JOBS_MS = 2000
VALIDATE_DELAY_MS = 300
#: The bandwidth field's largest value (the option itself has no cap): a spin box is as wide
#: as its largest value and the dock must fit napari's window; 10 GB/s is beyond any disk or
#: network a copy goes to.
BANDWIDTH_FIELD_MAX = 10_000.0
#: The verification choices as the form names them (a choice without a name shows as is).
VERIFY_TEXT = {"size": "size + mtime", "checksum": "checksum (reads both)"}


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
    remote = is_s3_url(dst)  # (a URL names one place from anywhere: compared as written)
    real = dst if remote else os.path.realpath(dst)
    for job in list_jobs():
        if (job.destination if remote else os.path.realpath(job.destination)) == real:
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

        form_box = QGroupBox("New copy")
        form = form_layout(form_box)
        # Paths under their labels: a path needs the dock's whole width more than a label.
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        form.setVerticalSpacing(3)
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("the Zarr archive being written")
        self.source_edit.setToolTip("the Zarr archive being acquired (the folder)")
        self.destination_edit = QLineEdit()
        self.destination_edit.setPlaceholderText("where the copy goes")
        self.destination_edit.setToolTip(
            "where the copy goes: a new folder, or an earlier copy of the same archive (resumes)"
        )
        row, self.source_browse = self._with_browse(self.source_edit, "Choose the source")
        form.addRow("Source:", row)
        row, self.destination_browse = self._with_browse(
            self.destination_edit, "Choose the destination"
        )
        form.addRow("Destination:", row)
        # Visible, not under Options: a missing source's message points to it.
        self.wait_check = QCheckBox("Wait for the source")
        self.wait_check.setChecked(default_of("wait_for_source"))
        self.wait_check.setToolTip(help_text("wait_for_source"))
        # Visible, not under Options: it deletes the acquisition (after asking, `_launch`).
        self.move_check = QCheckBox(MOVE_TEXT)
        self.move_check.setChecked(default_of("move"))
        self.move_check.setToolTip(help_text("move"))
        self._build_options(form)
        form.addRow(self.move_check)
        self.option_fields["move"] = self.move_check
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
        self.marker_edit.textChanged.connect(self._schedule_validation)  # (may be no name)

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

    def _build_options(self, form: QFormLayout) -> None:
        """The engine options, folded under a toggle that summarises what is not default."""
        self.options_toggle = QToolButton()
        self.options_toggle.setText("Options")
        self.options_toggle.setCheckable(True)
        self.options_toggle.setAutoRaise(True)
        self.options_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.options_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.options_toggle.setToolTip("workers, bandwidth cap, verification, marker name")
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.wait_check)
        header.addStretch(1)
        header.addWidget(self.options_toggle)
        form.addRow(header)
        self.options_summary = QLabel("")
        self.options_summary.setStyleSheet("color: #9aa0a6;")
        self.options_summary.setWordWrap(True)
        form.addRow(self.options_summary)

        self.options_box = QWidget()
        options = form_layout(self.options_box)
        options.setContentsMargins(12, 0, 0, 0)
        options.setVerticalSpacing(3)
        # Ranges, defaults and tooltips are the options' own (`options.CopyOptions`); 0 in a
        # spin box is the option's None: the engine picks (workers), no cap (bandwidth).
        workers = option_of("workers").rule
        self.workers_spin = WholeSpinBox()
        self.workers_spin.setRange(int(workers.minimum) - 1, int(workers.maximum))
        self.workers_spin.setSpecialValueText("auto")
        self.workers_spin.setValue(default_of("workers") or 0)
        self.workers_spin.setToolTip(help_text("workers"))
        bandwidth = option_of("bandwidth_mb_s").rule
        self.bandwidth_spin = WholeDoubleSpinBox()
        self.bandwidth_spin.setRange(bandwidth.minimum, min(bandwidth.maximum, BANDWIDTH_FIELD_MAX))
        self.bandwidth_spin.setDecimals(0)
        self.bandwidth_spin.setSuffix(" MB/s")
        self.bandwidth_spin.setSpecialValueText("no cap")
        self.bandwidth_spin.setValue(default_of("bandwidth_mb_s") or 0.0)
        self.bandwidth_spin.setToolTip(help_text("bandwidth_mb_s"))
        self.verify_combo = WholeComboBox()
        for choice in option_of("verify").rule.values:
            self.verify_combo.addItem(VERIFY_TEXT.get(choice, choice), choice)
        self.verify_combo.setCurrentIndex(self.verify_combo.findData(default_of("verify")))
        self.verify_combo.setToolTip(help_text("verify"))
        self.marker_edit = QLineEdit(default_of("marker"))
        self.marker_edit.setToolTip(help_text("marker"))
        #: The form's field for each `CopyOptions` field it offers.
        self.option_fields: dict[str, QWidget] = {
            "workers": self.workers_spin,
            "bandwidth_mb_s": self.bandwidth_spin,
            "verify": self.verify_combo,
            "marker": self.marker_edit,
            "wait_for_source": self.wait_check,
        }
        options.addRow("Workers:", self.workers_spin)
        options.addRow("Bandwidth:", self.bandwidth_spin)
        options.addRow("Verify:", self.verify_combo)
        options.addRow("Marker:", self.marker_edit)
        form.addRow(self.options_box)
        self.options_box.setVisible(False)
        self.options_toggle.toggled.connect(self.show_options)
        for signal in (
            self.workers_spin.valueChanged,
            self.bandwidth_spin.valueChanged,
            self.verify_combo.currentIndexChanged,
            self.marker_edit.textChanged,
        ):
            signal.connect(self._summarise_options)
        self._summarise_options()

    def show_options(self, shown: bool = True) -> None:
        """Unfold (or fold) the engine options."""
        if self.options_toggle.isChecked() != shown:
            self.options_toggle.setChecked(shown)  # comes back here through `toggled`
            return
        self.options_toggle.setArrowType(
            Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        )
        self.options_box.setVisible(shown)
        self._summarise_options()
        self.updateGeometry()  # napari's dock follows a wider minimum

    def _summarise_options(self, *_args) -> None:
        # Folded options must not hide a choice that changes the copy: name what is not default.
        o = self._form_values()  # (not checked: a bad marker is the validation line's)
        parts = []
        if o["workers"] != default_of("workers"):
            parts.append(f"{o['workers']} workers")
        if o["bandwidth_mb_s"] != default_of("bandwidth_mb_s"):
            parts.append(f"{o['bandwidth_mb_s']:g} MB/s cap")
        if o["verify"] != default_of("verify"):
            parts.append(o["verify"])
        if o["marker"] != default_of("marker"):
            parts.append(f"marker {o['marker']}")
        text = f"Options: {', '.join(parts)}" if parts else ""
        self.options_summary.setText(text)
        # Hidden while unfolded (the fields say it) or at the defaults (nothing to say).
        self.options_summary.setVisible(bool(text) and not self.options_toggle.isChecked())

    def _with_browse(self, edit: QLineEdit, title: str) -> tuple[QHBoxLayout, QToolButton]:
        row = QHBoxLayout()
        row.setSpacing(2)
        row.addWidget(edit, 1)
        button = QToolButton()
        button.setText("…")
        button.setToolTip(title)

        def browse() -> None:
            start = edit.text() or os.path.expanduser("~")
            path = QFileDialog.getExistingDirectory(self, title, start)
            if path:
                edit.setText(path)

        button.clicked.connect(browse)
        row.addWidget(button)
        return row, button

    # ------------------------------------------------------------------ options
    def _form_values(self) -> dict[str, object]:
        """The form's option fields as `CopyOptions` values, by field name (unchecked)."""
        return {
            "workers": self.workers_spin.value() or None,
            "bandwidth_mb_s": self.bandwidth_spin.value() or None,
            "verify": self.verify_combo.currentData(),
            "marker": self.marker_edit.text().strip() or default_of("marker"),
            "wait_for_source": self.wait_check.isChecked(),
            "move": self.move_check.isChecked(),
        }

    def copy_options(self) -> CopyOptions:
        """The engine options chosen in the form, on top of `engine_options`.

        Raises
        ------
        InputError
            A field breaks its option's rule (a marker name with a ``/``), in the words of
            the command line and the engine.
        """
        return CopyOptions(**{**self.engine_options, **self._form_values()})

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
        try:
            self.copy_options()  # (the same rule the engine process would refuse them by)
        except InputError as exc:
            self._start_requested = False
            self._show_validation(str(exc), ok=False)
            return
        # A copy that will free its source asks first, naming its size: measured here, in
        # the worker, and only for a click (a large tree takes a while to add up).
        measure = self._start_requested and self.move_check.isChecked()

        def check() -> tuple[tuple[str, str], tuple[int, int] | None]:
            paths = validate(src, dst, wait_for_source=wait)
            return paths, (tree_size(paths[0]) if measure else None)

        run_in_thread(
            check,
            on_done=lambda checked: self._validated(generation, checked, None),
            on_error=lambda exc: self._validated(generation, None, exc),
        )

    def _validated(self, generation: int, checked, exc) -> None:
        if generation != self._validation_generation:
            return  # the fields changed meanwhile; a newer check is on its way
        start = self._start_requested
        self._start_requested = False
        if exc is not None:
            text = str(exc) if isinstance(exc, InputError) else f"cannot check: {exc!r}"
            self._show_validation(text, ok=False)
            return
        (src, dst), size = checked
        text, tip = f"Ready: {pair_text(src, dst)}", f"{src}\n→ {dst}"
        if is_s3_url(dst):  # which server: the endpoint comes from the environment
            text, tip = f"{text} at {endpoint_of()}", f"{tip}\nat {endpoint_of()}"
        self._show_validation(text, ok=True, tip=tip)
        if start:
            self._launch(src, dst, size)

    def _show_validation(self, text: str, ok: bool | None, tip: str = "") -> None:
        self.last_validation = text
        # An error's path may be longer than the dock is wide: readable in full on hover.
        self.validation_label.setToolTip(tip or (text if ok is False else ""))
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

"""The dock's *New copy* form: the source and destination, the engine options, and their
validation.

`CopyForm` is the part of `widget.SoftcopyWidget` that builds the form and checks it. The
checks run in a worker thread (`validate`: the CLI's `checks.check_pair` plus "no other engine
copies there"), debounced while the user types; a click on *Start copy* checks again, and the
widget starts the copy once the check passes.
"""

from __future__ import annotations

import os

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QToolButton,
    QWidget,
)

from ..checks import InputError, check_pair
from ..destinations.s3_settings import endpoint_of, is_s3_url
from ..jobs import list_jobs
from ..move_step import tree_size
from ..options import CopyOptions, default_of, help_text, option_of
from .free_dialog import MOVE_TEXT
from .layers import run_in_thread
from .parts import WholeComboBox, WholeDoubleSpinBox, WholeSpinBox, form_layout, pair_text

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


class CopyForm:
    """The form half of `SoftcopyWidget` (a mixin of it).

    Needs of the widget: ``engine_options``, ``_validation_generation``, ``_start_requested``,
    the single-shot ``_validate_timer`` (which calls `validate_inputs`), and ``_launch`` (which
    starts the checked pair). Sets ``last_validation``: the validation line's text.
    """

    def _build_form(self) -> QGroupBox:
        """The *New copy* box: the paths, the options, the validation line, *Start copy*."""
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
        for edit in (self.source_edit, self.destination_edit):
            edit.textChanged.connect(self._schedule_validation)
        self.wait_check.toggled.connect(self._schedule_validation)
        self.marker_edit.textChanged.connect(self._schedule_validation)  # (may be no name)
        return form_box

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

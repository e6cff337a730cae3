"""One copy in the widget: its live status, its controls and its layers."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..archive_store import root_name, take_notices
from ..launch import CopyProcess, StatusView, is_final, status_view
from ..layer_data import difference_layers
from ..open_zarr import ArchiveInfo
from ..status import Status
from .chunk_map_layer import ChunkMapFollower
from .compare import arrange_side_by_side, viewer_grid  # noqa: F401  (re-exported: tests)
from .finish_dialog import FINISH_FORCE, FINISH_QUIET, finish_dialog
from .free_dialog import CHECK_TIP, check_line
from .job_status import STATE_COLORS, StatusDisplay, set_text  # noqa: F401  (re-exported)
from .layers import LayerFollower, add_layer_data, run_in_thread
from .opening import archive_name, inspect_either, link_channels, open_image


class JobPanel(StatusDisplay, QGroupBox):
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
        # The roots as the layers name them (an S3 URL without a trailing "/").
        self.source_root = root_name(process.source)
        self.destination_root = root_name(process.destination)
        origin = "" if process.started_here else "  (re-attached)"
        src, dst = Path(process.source), Path(process.destination)
        target = dst.name if dst.name != src.name else f"{dst.parent.name}/{dst.name}"
        self.setTitle(f"{src.name} → {target}{origin}")
        self.setToolTip(f"{process.source}\n→ {process.destination}\npid {process.pid}")
        self._build()
        self.refresh()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        # Compact, so that two panels and the form fit napari's default window with room to
        # spare (`job_status`): the state sits beside the progress bar, the pid is on the
        # tooltip, empty lines take no room, the buttons take two rows: the copy's, the layers'.
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 2, 6, 4)
        outer.setSpacing(2)
        self._build_status(outer)

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
        self.check_button = QPushButton("Check copy")
        self.check_button.setToolTip(CHECK_TIP)
        self.check_button.clicked.connect(self.check_copy)
        for b in (self.finish_button, self.stop_button, self.dismiss_button, self.check_button):
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

        view = QHBoxLayout()
        self.open_button = QPushButton("Open copy")
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
        for b in (self.open_button, self.source_button, self.diff_button, self.map_button):
            view.addWidget(b)
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
        if arrange_side_by_side(self.viewer, self.destination_root, self.source_root):
            self.viewer.reset_view()
        if follow_root is not None and self._live():
            self.follower.follow(follow_root, self._live)
        for text in take_notices():  # (a reader's fallback: said once, here too)
            self.message.emit(text)
        return added

    def _failed(self, what: str) -> callable:
        return lambda exc: self.message.emit(f"{what}: {exc}")

    def open_destination(self) -> None:
        """Add the destination as lazy layers; they refresh while the copy runs."""
        image = self.selected_image()
        run_in_thread(
            open_image,
            self.destination_root,
            image,
            "destination",
            on_done=lambda layers: self._add(layers, self.destination_root),
            on_error=self._failed("cannot open the destination"),
        )

    def open_source(self) -> None:
        """Add the source beside the destination (side by side, linked contrast)."""
        image = self.selected_image()
        run_in_thread(
            open_image,
            self.source_root,
            image,
            "source",
            on_done=self._add_source,
            on_error=self._failed("cannot open the source"),
        )

    def _add_source(self, layers: list) -> None:
        if self._add(layers, self.source_root):
            link_channels(self.viewer, self.destination_root, self.source_root)

    def open_difference(self) -> None:
        """Add destination minus source (signed, lazy): zero where the copy is identical."""
        image = self.selected_image()
        run_in_thread(
            difference_layers,
            self.destination_root,
            self.source_root,
            image,
            on_done=lambda layers: self._add(layers, self.destination_root),
            on_error=self._failed("cannot compute the difference"),
        )

    def open_chunk_map(self) -> ChunkMapFollower:
        """Add (or redraw) the chunk map of the chosen image."""
        image = self.selected_image()
        for follower in self.chunk_maps:
            if follower.image == image:
                follower.start()
                return follower
        name = f"chunk map {archive_name(self.destination_root)}" + (f"/{image}" if image else "")
        follower = ChunkMapFollower(
            self.viewer,
            self.source_root,
            self.destination_root,
            image,
            finished=lambda: self.ended,
            name=name,
            on_summary=lambda text: set_text(self.map_summary, text),
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

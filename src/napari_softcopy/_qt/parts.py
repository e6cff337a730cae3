"""Small parts of the dock, built to fit a narrow dock area without cutting text off."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from ..chunkmap import LEGEND


# Fields never narrower than their longest value (a squeezed spin box shows "o cap" for
# "no cap"): their row wraps under its label, or the dock is wider, instead. napari's style
# sheet sets a smaller min-width (which beats any minimumSizeHint) and changes the size
# hint, so the minimum is set again whenever the style changes or the field is shown.
class Whole:
    """Mixin: a field whose minimum width is its size hint (its longest value in full);
    `_fit_minimum` is set again whenever the field is shown or its style or font changes."""

    def _fit_minimum(self) -> None:
        self.setMinimumWidth(self.sizeHint().width())

    def showEvent(self, event) -> None:
        self._fit_minimum()
        super().showEvent(event)

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.StyleChange, QEvent.Type.FontChange):
            self._fit_minimum()


class WholeSpinBox(Whole, QSpinBox):
    """A QSpinBox never squeezed below its longest value."""


class WholeDoubleSpinBox(Whole, QDoubleSpinBox):
    """A QDoubleSpinBox never squeezed below its longest value."""


class WholeComboBox(Whole, QComboBox):
    """A QComboBox never squeezed below its longest value."""


class Figure(Whole, QLabel):
    """A label for a changing number: as wide as its longest expected text, whatever it
    shows now, so that neither a longer number is cut off nor the dock (and with it napari's
    canvas) changes width as the numbers change.

    Parameters
    ----------
    longest : str
        The widest text it should show in full (e.g. ``"99:59:59"``).
    """

    def __init__(self, longest: str, parent: QWidget | None = None) -> None:
        super().__init__("-", parent)
        self.longest = longest
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._fit_minimum()

    def _fit_minimum(self) -> None:
        # An explicit minimum: layouts ignore the size hints of an Ignored policy.
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance(self.longest) + 2)


def form_layout(parent: QWidget) -> QFormLayout:
    """A form whose fields go under their labels when the dock is narrow."""
    form = QFormLayout(parent)
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
    return form


def legend() -> QGroupBox:
    """The chunk map's colors in two columns; each meaning in full on its tooltip."""
    box = QGroupBox("Chunk map legend")
    grid = QGridLayout(box)
    grid.setContentsMargins(6, 4, 6, 4)
    grid.setVerticalSpacing(2)
    for i, (value, (name, meaning, color)) in enumerate(LEGEND.items()):
        swatch = QLabel(f"{value}")
        swatch.setAlignment(Qt.AlignmentFlag.AlignCenter)
        swatch.setFixedSize(18, 18)
        swatch.setStyleSheet(f"background: {color}; color: black; border-radius: 3px;")
        text = QLabel(name)
        for w in (swatch, text):
            w.setToolTip(f"{value} = {name}: {meaning}")
        row, col = divmod(i, 2)
        grid.addWidget(swatch, row, 2 * col)
        grid.addWidget(text, row, 2 * col + 1)
    grid.setColumnStretch(1, 1)
    grid.setColumnStretch(3, 1)
    return box


def pair_text(source: str, destination: str) -> str:
    """``acq.zarr → copy.zarr`` (the parent too when both names are equal): paths without
    spaces cannot wrap, and a label the width of two full paths would widen the dock."""
    src, dst = Path(source), Path(destination)
    target = dst.name if dst.name != src.name else f"{dst.parent.name}/{dst.name}"
    return f"{src.name} → {target}"


class ElidedLabel(QLabel):
    """A one-line label that shows as much of its text as the dock's width allows, ending in
    "…" where it is cut, with the whole text on its tooltip: a fact shown once (what the
    destination keeps) takes one row, whatever the free-space figure or the dock's width."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(1)

    def full_text(self) -> str:
        """The whole text (`text` is what fits)."""
        return self._full

    def set_full_text(self, text: str) -> None:
        """Show ``text``, cut to the width with "…" where it does not fit."""
        if text != self._full:
            self._full = text
            self._elide()

    def resizeEvent(self, event) -> None:  # (Qt names it)
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(
            self._full, Qt.TextElideMode.ElideRight, max(self.width(), 1)
        )
        if shown != self.text():
            self.setText(shown)

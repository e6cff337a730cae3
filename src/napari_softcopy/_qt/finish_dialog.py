"""The confirmation *Finish now* asks for: what finishing risks, and the two ways to do it.

A finish pressed in a pause of the acquisition must not mark an incomplete copy complete.
The engine's answer is to wait until the source has stayed quiet (``SIGUSR1``); forcing it
(``SIGUSR2``) is a second, explicit choice, never the default.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QMessageBox, QWidget

FINISH_QUIET, FINISH_FORCE = "quiet", "force"

QUIET_TEXT = "Finish when the source is quiet"
FORCE_TEXT = "Finish now anyway"

RISK = (
    "If the microscope is still writing, the copy will wait and try again; nothing is "
    "marked complete until the source has stopped changing."
)
DETAILS = (
    f"{QUIET_TEXT} (recommended): the copy waits until the source has stayed quiet for "
    "longer than the acquisition's own pauses so far, then copies the rest, verifies it and "
    "writes the finish marker at the destination.\n\n"
    f"{FORCE_TEXT}: no waiting for a quiet source; verify and write the marker as soon as "
    "the rest is copied. Choose it only when the acquisition has surely ended (for example "
    "its software crashed before writing its marker): a change seen before the marker is "
    "written still cancels it, but files the microscope writes after the copy ended are "
    "not copied."
)


def finish_dialog(parent: QWidget | None, source: str, destination: str) -> QMessageBox:
    """The question, not yet shown.

    Parameters
    ----------
    parent : QWidget or None
        The panel asking.
    source, destination : str
        The copy's paths (named in the question).

    Returns
    -------
    QMessageBox
        With ``quiet_button`` (the default), ``force_button`` and ``cancel_button``
        attributes; `JobPanel.ask_finish` maps the clicked one to a choice.
    """
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Finish this copy?")
    box.setText(f"Finish the copy of {Path(source).name} into {destination}?\n\n{RISK}")
    box.setInformativeText(DETAILS)
    box.quiet_button = box.addButton(QUIET_TEXT, QMessageBox.ButtonRole.AcceptRole)
    box.force_button = box.addButton(FORCE_TEXT, QMessageBox.ButtonRole.DestructiveRole)
    box.cancel_button = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(box.quiet_button)
    box.setEscapeButton(box.cancel_button)
    return box

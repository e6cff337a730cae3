"""Freeing the acquisition disk in the widget: the checkbox's words, the confirmation that
names the folder and its size, and the panel's "freed ..." line.

Deleting the acquisition is the one step napari-softcopy takes that cannot be undone, so the
checkbox alone does not do it: starting such a copy asks first, naming exactly what will go.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QMessageBox, QWidget

MOVE_TEXT = "Free the acquisition disk once the copy is verified"
DELETE_TEXT = "Copy, then free the disk"

WHEN = (
    "Nothing is deleted while the acquisition runs. Once the copy is verified complete, each "
    "source file is read again and compared with its copy read back from the destination; "
    "only files found identical are deleted, then their empty folders, the finish marker "
    "last. A file that changes after that check is kept, and if any copy differs nothing is "
    "deleted at all. The folder itself stays, empty."
)


def size_text(nbytes: int) -> str:
    """``"281.0 MiB"``, ``"1.2 GiB"``: a size as the confirmation and the panel say it."""
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.1f} GiB"
    return f"{nbytes / 2**20:.1f} MiB"


def free_dialog(parent: QWidget | None, source: str, files: int, nbytes: int) -> QMessageBox:
    """The question asked before a copy that frees its source starts, not yet shown.

    Returns
    -------
    QMessageBox
        With ``delete_button`` and ``cancel_button`` (the default: Enter does not delete)
        attributes.
    """
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Free the acquisition disk?")
    so_far = "so far " if files else ""
    box.setText(
        f"Once the copy is verified, delete the acquisition {source} "
        f"({size_text(nbytes)} in {files:,} files {so_far}and what is still written there)?"
    )
    box.setInformativeText(WHEN)
    box.delete_button = box.addButton(DELETE_TEXT, QMessageBox.ButtonRole.DestructiveRole)
    box.cancel_button = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(box.cancel_button)
    box.setEscapeButton(box.cancel_button)
    return box


def freed_line(freed: dict[str, Any] | None) -> tuple[str, bool] | None:
    """The panel's line for the status's ``freed`` (None: nothing to say yet) and whether it
    is a problem (a refusal, files kept)."""
    if not freed:
        return None
    return freed.get("message", ""), bool(freed.get("refused") or freed.get("files_kept"))


CHECK_TIP = (
    "Check the copy against the manifest written with it: every file there, of its size and "
    "BLAKE3 hash (read back from the destination), and no other file. Needs no source."
)


def check_line(destination: str) -> str:
    """The one-line verdict of ``napari-softcopy verify DEST`` (run in a worker thread)."""
    from ..destinations import open_destination
    from ..manifest import ManifestError, check_manifest

    try:
        dest = open_destination(destination, create=False)
    except OSError as exc:
        return f"cannot check {destination}: {exc.strerror or exc}"
    try:
        return check_manifest(dest).summary()
    except ManifestError as exc:
        return str(exc)
    finally:
        dest.close()

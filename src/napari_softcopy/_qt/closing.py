"""What closing napari asks about running copies: only those this widget started."""

from __future__ import annotations

from qtpy.QtWidgets import QMessageBox, QWidget

from ..launch import CANCEL, KEEP, STOP, CopyProcess


def ask_keep_copying(
    parent: QWidget, own: list[CopyProcess], others: list[CopyProcess], interactive: bool
) -> str:
    """Show the close prompt; `KEEP` (the default), `STOP` or `CANCEL`.

    Parameters
    ----------
    parent : QWidget
        The widget asking.
    own : list of CopyProcess
        The running copies this widget started: the only ones the answer applies to.
    others : list of CopyProcess
        Running copies it did not start; mentioned, never stopped.
    interactive : bool
        Whether napari can stay open (a "Don't close" button is offered only then).
    """
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Copies are running")
    box.setText(close_question(own, others))
    box.setInformativeText(
        "A copy you keep goes on in the background; reopen the widget to follow it. "
        "A stopped copy leaves nothing partial and resumes when started again."
    )
    keep = box.addButton("Keep copying", QMessageBox.ButtonRole.AcceptRole)
    what = "copy" if len(own) == 1 else f"{len(own)} copies"
    stop = box.addButton(f"Stop the {what} started here", QMessageBox.ButtonRole.DestructiveRole)
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


def close_question(own: list[CopyProcess], others: list[CopyProcess]) -> str:
    """The close prompt's question: the copies started here, and what happens to the rest."""
    names = "\n".join(f"  {p.source} → {p.destination}" for p in own)
    n = len(own)
    text = (
        f"{'This copy was' if n == 1 else f'These {n} copies were'} started here and "
        f"{'is' if n == 1 else 'are'} still running:\n{names}\n\nKeep copying after napari "
        "closes?"
    )
    if others:
        m = len(others)
        text += (
            f"\n\n{m} other cop{'y' if m == 1 else 'ies'} (started in a terminal or another "
            f"napari) keep{'s' if m == 1 else ''} running either way."
        )
    return text

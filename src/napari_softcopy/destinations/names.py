"""Names a destination cannot hold, found before a file is copied.

exFAT, NTFS (Win32 names), FAT and SMB refuse ``: * ? " < > | \\`` and control characters,
drop a trailing dot or space (so ``a.`` and ``a`` become one file), fold case (``A`` and ``a``
become one file), and every filesystem limits the length of a name. Copying such a name
fails midway, or worse, lands two source files on one destination file. So each name is
checked against what the probe found (`Capabilities`) before its file is copied
(`name_problem`, `CaseFolds`), and `check_names` walks the source's names (no stat) before a
copy starts: the pre-flight that makes the CLI exit 2 with one line naming the file.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable

from ..layout import is_temp_name
from .base import STATE_DIR, Capabilities


class UnholdableName(OSError):
    """The destination cannot hold this name: not copied, never retried (rename it at the
    source or choose another destination)."""


def name_problem(name: str, capabilities: Capabilities) -> str | None:
    """Why a destination with ``capabilities`` cannot hold the name ``name`` (None: it can)."""
    if capabilities.invalid_chars:
        bad = sorted({c for c in name if c in capabilities.invalid_chars or ord(c) < 32})
        if bad:
            shown = " ".join(repr(c)[1:-1] for c in bad)
            return f"holds {shown}, which the destination cannot hold in a name"
    if not capabilities.trailing_dot_space and name[-1:] in (".", " "):
        return "ends in a dot or a space, which the destination drops from a name"
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > capabilities.max_name_bytes:
        return (
            f"is {size} bytes long; the destination holds names up to {capabilities.max_name_bytes}"
        )
    return None


def unholdable_message(rel: str, reason: str, destination: object) -> str:
    """One line naming the file, the reason and the fix."""
    return (
        f"cannot copy {rel}: its name {reason} ({destination}); rename it in the source or "
        "choose another destination"
    )


class CaseFolds:
    """Which name of each destination folder owns a case-folded name, on a case-insensitive
    destination: a second source name folding to it is refused, never copied over the first.
    Thread-safe; folders are filled from the destination listing the first time they are
    asked about."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folders: dict[str, dict[str, str]] = {}

    def _names(self, parent: str, listing: Callable[[], Iterable[str]]) -> dict[str, str]:
        names = self._folders.get(parent)
        if names is None:
            names = {}
            for other in listing():
                names.setdefault(other.casefold(), other)
            if len(self._folders) > 10_000:  # bounded memory on huge trees
                self._folders.clear()
            self._folders[parent] = names
        return names

    def owner(self, rel: str, listing: Callable[[], Iterable[str]]) -> str | None:
        """The name in ``rel``'s folder holding its folded form (None: none known)."""
        parent, _, name = rel.rpartition("/")
        with self._lock:
            return self._names(parent, listing).get(name.casefold())

    def claim(self, rel: str, listing: Callable[[], Iterable[str]]) -> str | None:
        """Claim the name of ``rel`` in its folder; returns the other name already holding
        its folded form (None: claimed). ``listing()``: the folder's names at the
        destination, asked for when the folder is new here."""
        parent, _, name = rel.rpartition("/")
        with self._lock:
            holder = self._names(parent, listing).setdefault(name.casefold(), name)
        return None if holder == name else holder

    def release(self, rel: str) -> None:
        """The file ``rel`` was removed at the destination: its folded name is free."""
        parent, _, name = rel.rpartition("/")
        with self._lock:
            names = self._folders.get(parent)
            if names is not None and names.get(name.casefold()) == name:
                del names[name.casefold()]


class NameGuard:
    """The names of one destination: each checked before its file is copied there.

    Parameters
    ----------
    capabilities : Capabilities
        The destination's (what the probe found).
    destination : object
        The destination, as messages name it.
    names_in : callable
        The names in a folder of the destination (``""``: the root), read once a folder.
    """

    def __init__(
        self,
        capabilities: Capabilities,
        destination: object,
        names_in: Callable[[str], Iterable[str]],
    ) -> None:
        self._capabilities = capabilities
        self._destination = destination
        self._names_in = names_in
        self._folds = None if capabilities.case_sensitive else CaseFolds()

    def check(self, rel: str) -> None:
        """Raise `UnholdableName` when the destination cannot hold the name of ``rel``, or
        it would land on another file's copy there (case folded); else claim it."""
        parent, _, name = rel.rpartition("/")
        reason = name_problem(name, self._capabilities)
        if reason is None and self._folds is not None:
            other = self._folds.claim(rel, lambda: self._names_in(parent))
            if other is not None:
                reason = (
                    f"differs from {other!r} in the same folder only by case, and the "
                    "destination does not tell case apart"
                )
        if reason is not None:
            message = unholdable_message(rel, reason, self._destination)
            raise UnholdableName(errno.EINVAL, message, rel)

    def held_by_another(self, rel: str) -> bool:
        """Whether, where case folds, another spelling holds the name of ``rel`` (what the
        destination finds by that name is then not its entry)."""
        if self._folds is None:
            return False
        parent, _, name = rel.rpartition("/")
        owner = self._folds.owner(rel, lambda: self._names_in(parent))
        return owner is not None and owner != name

    def removed(self, rel: str) -> None:
        """The file ``rel`` was removed at the destination: its name is free again."""
        if self._folds is not None:
            self._folds.release(rel)


def holds_any_name(source: str, capabilities: Capabilities) -> bool:
    """Whether a destination with ``capabilities`` holds every name the file system of the
    folder ``source`` can: case told apart, no character refused, no trailing dot or space
    dropped, and names at least as long as the source's ``NAME_MAX`` (a POSIX disk to a
    POSIX disk)."""
    if (
        not capabilities.case_sensitive
        or capabilities.invalid_chars
        or not capabilities.trailing_dot_space
    ):
        return False
    try:
        longest = os.pathconf(source, "PC_NAME_MAX")
    except (OSError, ValueError):
        return False
    return 0 < longest <= capabilities.max_name_bytes


def check_names(
    source: str | os.PathLike, capabilities: Capabilities, destination: object
) -> str | None:
    """The first problem of the source's names at a destination with ``capabilities`` (one
    line naming the file), or None. Reads names only (one ``scandir`` per folder), and none
    where the destination holds every name the source's file system can (`holds_any_name`):
    a resume of a million files onto a local disk starts a walk sooner."""
    root = os.fspath(source)
    if holds_any_name(root, capabilities):
        return None
    case_insensitive = not capabilities.case_sensitive
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            it = os.scandir(os.path.join(root, rel_dir) if rel_dir else root)
        except OSError:
            continue  # (the copy reports what it cannot read)
        folded: dict[str, str] = {}
        with it:
            for entry in it:
                name = entry.name
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if (not rel_dir and name == STATE_DIR) or is_temp_name(name):
                    continue  # (never copied)
                reason = name_problem(name, capabilities)
                if reason is not None:
                    return unholdable_message(rel, reason, destination)
                if case_insensitive:
                    other = folded.setdefault(name.casefold(), name)
                    if other != name:
                        return unholdable_message(
                            rel,
                            f"differs from {other!r} in the same folder only by case, and the "
                            "destination does not tell case apart",
                            destination,
                        )
                if entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
    return None

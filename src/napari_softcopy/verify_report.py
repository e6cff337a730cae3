"""The report of a verification (`verify.verify_tree`): what differs, counted exactly and
listed up to `MAX_LISTED` paths per kind; parts of a split walk merge theirs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

from .listing import Listing

__all__ = ["MAX_LISTED", "VerifyReport"]

MAX_LISTED = 10_000  # paths kept per category; counts stay exact beyond it
_INTERRUPTED = ("", "verification interrupted")


@dataclass
class VerifyReport:
    """Result of `verify_tree`.

    ``missing``: at the source, not at the destination. ``mismatched``: ``(path, reason)``
    pairs. ``extra``: at the destination only. ``unreadable``: ``(path, reason)`` at the source.
    """

    source: str
    destination: str
    checksum: bool
    files_checked: int = 0
    bytes_checked: int = 0
    metadata_files: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    n_missing: int = 0
    n_mismatched: int = 0
    n_extra: int = 0
    n_unreadable: int = 0
    # the size each listed missing or mismatched source file was counted with (for `recheck`)
    _counted: dict[str, int] = field(default_factory=dict, repr=False)
    # (kind, item) of each problem with a folder as a whole, seen by every part of a walk
    _folder_problems: list[tuple[str, object]] = field(default_factory=list, repr=False)
    #: The files found identical, as listed at the destination (`verify_tree`'s ``listing``).
    listing: Listing | None = field(default=None, repr=False, compare=False)
    #: Source folders opened by the walk (a split walk's part 0 opens every one).
    folders_walked: int = field(default=0, repr=False, compare=False)
    #: Proven folders without their watch, vouched for by a look at the source
    #: (`source_looks.source_unchanged`).
    folders_checked_at_source: int = field(default=0, repr=False, compare=False)
    #: Of the looks at unwatched proven folders' source, those a helper process made
    #: (`source_looks.look_at_sources`; found as proven or not).
    source_looks_in_helper: int = field(default=0, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the destination is identical."""
        return not (self.n_missing or self.n_mismatched or self.n_extra or self.n_unreadable)

    @property
    def fully_listed(self) -> bool:
        """True when every problem is listed by path (none cut off at `MAX_LISTED`)."""
        return all(
            len(getattr(self, kind)) == getattr(self, f"n_{kind}")
            for kind in ("missing", "mismatched", "extra", "unreadable")
        )

    def problem_paths(self) -> Iterator[str]:
        """Every listed path that needs copying again (or removing)."""
        yield from self.missing
        yield from (p for p, _ in self.mismatched)
        yield from self.extra

    def summary(self) -> dict:
        """Counts only (what the status file carries)."""
        return {
            "ok": self.ok,
            "checksum": self.checksum,
            "files_checked": self.files_checked,
            "bytes_checked": self.bytes_checked,
            "missing": self.n_missing,
            "mismatched": self.n_mismatched,
            "extra": self.n_extra,
            "unreadable": self.n_unreadable,
        }

    def to_dict(self) -> dict:
        """Everything, JSON-ready."""
        out = asdict(replace(self, listing=None)) | {"ok": self.ok}
        del out["_counted"], out["_folder_problems"], out["listing"], out["folders_walked"]
        del out["folders_checked_at_source"], out["source_looks_in_helper"]
        return out

    def lines(self) -> Iterator[str]:
        """Human-readable listing of every difference."""
        for p in self.missing:
            yield f"missing     {p}"
        for p, why in self.mismatched:
            yield f"mismatched  {p}  ({why})"
        for p in self.extra:
            yield f"extra       {p}"
        for p, why in self.unreadable:
            yield f"unreadable  {p}  ({why})"

    def _add(self, kind: str, item) -> None:
        setattr(self, f"n_{kind}", getattr(self, f"n_{kind}") + 1)
        items = getattr(self, kind)
        if len(items) < MAX_LISTED:
            items.append(item)

    def _merge(self, other: VerifyReport) -> None:
        """Add ``other``, the report of another part of the same walk."""
        self.files_checked += other.files_checked
        self.bytes_checked += other.bytes_checked
        self.metadata_files += other.metadata_files
        for kind in ("missing", "mismatched", "extra", "unreadable"):  # (files: one part each)
            setattr(self, f"n_{kind}", getattr(self, f"n_{kind}") + getattr(other, f"n_{kind}"))
            items = getattr(self, kind)
            items.extend(getattr(other, kind)[: MAX_LISTED - len(items)])
        for rel, size in other._counted.items():
            if len(self._counted) >= 2 * MAX_LISTED:
                break
            self._counted[rel] = size
        if self.listing is not None and other.listing is not None:
            self.listing = self.listing.merged(other.listing)
        known = set(self._folder_problems)  # (each part saw them: counted once)
        for kind, item in other._folder_problems:
            if (kind, item) not in known:
                self._add(kind, item)
                self._folder_problems.append((kind, item))

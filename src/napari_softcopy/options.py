"""The copy options, declared once: `CopyOptions`.

Every field of `CopyOptions` carries an `Option` (in its ``dataclasses.field`` metadata): its
help text, its command line flag, how a flag's text becomes a value, and its `Rule`, the one
range every way in is held to. The ``copy`` command's arguments, the command line that
reproduces a set of options (the widget's engine processes, the CLI's "Resume with:" line),
both in `option_flags`, and the widget's fields (their defaults, ranges and tooltips) are all
derived from it, so an option is added in one place. (rclone declares its options once and
generates its flags from them in the same way.)

Qt-free, and free of ``argparse`` (`option_flags` has the command line's side).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .checks import InputError

#: The file in the source root that says "acquisition complete"; at the destination it is
#: written last and means "verified complete". The one place this default is spelled.
DEFAULT_MARKER = "complete"


# ---------------------------------------------------------------------------- rules
def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Number:
    """A number within a range: ``minimum < value`` (``minimum <= value`` when not
    ``exclusive``) and ``value <= maximum``; never infinite, never NaN.

    Attributes
    ----------
    what : str
        What the number counts, as in "a number of seconds" (for the message).
    minimum, maximum : float
        The bounds (``maximum`` infinite: no upper bound, though infinity itself is refused).
    exclusive : bool
        The minimum itself is not allowed.
    whole : bool
        Only whole numbers (``int``).
    note : str
        Said in brackets after the range ("leave it out for no cap").
    """

    what: str = "a number"
    minimum: float = 0
    maximum: float = math.inf
    exclusive: bool = True
    whole: bool = False
    note: str = ""

    @property
    def text(self) -> str:
        """The allowed range, for "must be <text>, not <value>"."""
        if self.whole:
            text = f"a whole number from {self.minimum:g} to {self.maximum:g}"
        elif self.exclusive:
            text = f"{self.what} greater than {self.minimum:g}"
        else:
            text = f"{self.what}, {self.minimum:g} or more"
        return f"{text} ({self.note})" if self.note else text

    def allows(self, value: object) -> bool:
        """True when ``value`` is in the range."""
        if not _number(value) or (self.whole and not isinstance(value, int)):
            return False
        above = self.minimum < value if self.exclusive else self.minimum <= value
        return above and value <= self.maximum and value < math.inf  # (NaN fails both)


@dataclass(frozen=True)
class Choice:
    """One of a few words (the command line offers them as argparse ``choices``)."""

    values: tuple[str, ...]

    @property
    def text(self) -> str:
        """The allowed values: ``'size' or 'checksum'``."""
        quoted = [repr(v) for v in self.values]
        return f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]

    def allows(self, value: object) -> bool:
        """True when ``value`` is one of `values`."""
        return value in self.values


@dataclass(frozen=True)
class FileName:
    """The name of a file in a folder: not empty, not ``.`` or ``..``, without ``/``."""

    text: str = "a file name (not empty, without '/')"

    def allows(self, value: object) -> bool:
        """True when ``value`` names a file in one folder."""
        return (
            isinstance(value, str) and value not in ("", ".", "..") and not {"/", "\0"} & set(value)
        )


Rule = Number | Choice | FileName


@dataclass(frozen=True)
class Option:
    """What the world outside the engine knows about one `CopyOptions` field.

    Attributes
    ----------
    help : str
        One line for ``--help`` and the widget's tooltip; ``{default}`` is replaced by the
        field's default as the command line writes it.
    flag : str
        The ``copy`` command's flag.
    widget : bool
        The napari widget offers a field for it (the others keep their defaults there).
        Declared for every option, so that a new one is decided on.
    rule : Rule or None
        The allowed values (None: any value of the field's type).
    optional : bool
        None is allowed too (the option off, or picked by the engine).
    parse : callable or None
        Turns the flag's text into a value (``int``, ``float``, ``Path``); None for an on/off
        flag without a value.
    metavar : str or None
        The value's name in ``--help`` (None: argparse's, from the field's name).
    hidden : bool
        Left out of ``--help`` (an option for tools and tests more than for people).
    """

    help: str
    flag: str
    widget: bool
    rule: Rule | None = None
    optional: bool = False
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    hidden: bool = False


def _option(**option: Any) -> dict[str, Option]:
    """A dataclass field's metadata: its `Option`."""
    return {"option": Option(**option)}


_SECONDS = Number("a number of seconds")
_SECONDS_OR_0 = Number("a number of seconds", exclusive=False)


# ---------------------------------------------------------------------------- the options
@dataclass
class CopyOptions:
    """How an engine copies. Every field has a sensible default.

    Each field's help text, command line flag and allowed range is its `Option`
    (`schema`); `problem` is the one rule for every way in.

    Attributes
    ----------
    workers : int or None
        Copy threads; None picks by destination (`Destination.suggested_workers`): 1 on a
        local disk, 4 on a network or FUSE filesystem, 96 uploads in flight to S3. A large
        backlog at a finish is also copied by a helper process (`copy_helper`,
        `engine.Tuning.copy_helper_files`).
    marker : str
        Name of the file in the source root that says "acquisition complete"; at the
        destination it is written last and means "verified complete".
    rescan_interval : float
        Seconds between periodic rescans (events are hints; scans are the truth): each
        walks both trees but the folders proven during the copy and unchanged since.
    finish_when_idle : float or None
        Finish after this many seconds without any change and without writers' temp files.
    finish_quiet : float
        A finish requested while the acquisition may still be going on (`CopyEngine.finish`,
        ``SIGUSR1``) waits until the source has been quiet for longer than its longest pause
        between writes so far (`quiet.PAUSE_FACTOR` times it), and for at least this many
        seconds, before it verifies and writes the marker. Not for a finish on the marker,
        on `finish_when_idle`, or a forced one.
    finish_quiet_max : float
        The longest quiet that wait asks for, in seconds (an acquisition that pauses longer
        between timepoints needs its own marker, or a higher value here).
    verify : {"size", "checksum"}
        Final verification: size + mtime (+ metadata content), or content hashes of all files.
    bandwidth_mb_s : float or None
        Cap shared by all workers, in MB/s.
    low_priority : bool
        Idle IO class and nice 10 for every engine thread. (The command line also lowers
        the engine process's session: `platform.lower_session_priority`.)
    drop_cache : bool
        Drop copied pages from the page cache (the acquisition keeps its cache).
    fsync : {"finish", "each"}
        Flush the destination once before the marker, or every file before its rename.
    wait_for_source : bool
        Wait for the source to appear instead of failing.
    force : bool
        Copy into a destination that does not look like a copy of this source.
    move : bool
        After the copy is verified, free the acquisition disk: delete each source file whose
        content equals its copy's, read back from the destination (`move.free_source`;
        docs/move.md says exactly when a file is deleted).
    status_file : path or None
        Where to keep the JSON status file (None: none; the command line's default is a
        file in the state directory, `jobs.default_status_file`).
    status_interval : float
        Seconds between status file writes.
    """

    workers: int | None = field(
        default=None,
        metadata=_option(
            flag="--workers",
            help="copy threads (default: 1 on a local disk, 4 on a network or FUSE "
            "filesystem, 96 to S3)",
            rule=Number(minimum=1, maximum=256, exclusive=False, whole=True),
            optional=True,
            parse=int,
            widget=True,
        ),
    )
    marker: str = field(
        default=DEFAULT_MARKER,
        metadata=_option(
            flag="--marker",
            help="name of the 'acquisition complete' file in the source root",
            rule=FileName(),
            parse=str,
            widget=True,
        ),
    )
    rescan_interval: float = field(
        default=30.0,
        metadata=_option(
            flag="--rescan-interval",
            help="seconds between rescans (default {default})",
            rule=_SECONDS,
            parse=float,
            metavar="S",
            widget=False,
        ),
    )
    finish_when_idle: float | None = field(
        default=None,
        metadata=_option(
            flag="--finish-when-idle",
            help="finish after S seconds without changes or writers' temp files",
            rule=_SECONDS,
            optional=True,
            parse=float,
            metavar="S",
            widget=False,
        ),
    )
    finish_quiet: float = field(
        default=5.0,
        metadata=_option(
            flag="--finish-quiet",
            help="a finish asked for by SIGUSR1 (or the widget) without the marker waits "
            "until the source has been quiet for longer than its longest pause between "
            "writes so far, and at least S seconds (default {default})",
            rule=_SECONDS_OR_0,
            parse=float,
            metavar="S",
            widget=False,
        ),
    )
    finish_quiet_max: float = field(
        default=300.0,
        metadata=_option(
            flag="--finish-quiet-max",
            help="the longest quiet that wait asks for (default {default}); SIGUSR2 finishes "
            "without it",
            rule=_SECONDS_OR_0,
            parse=float,
            metavar="S",
            widget=False,
        ),
    )
    verify: Literal["size", "checksum"] = field(
        default="size",
        metadata=_option(
            flag="--verify",
            help="final verification: size+mtime (+metadata content) or checksums",
            rule=Choice(("size", "checksum")),
            parse=str,
            widget=True,
        ),
    )
    bandwidth_mb_s: float | None = field(
        default=None,
        metadata=_option(
            flag="--bandwidth",
            help="cap the copy at this many MB/s (all workers together)",
            rule=Number("a number of MB/s", note="leave it out for no cap"),
            optional=True,
            parse=float,
            metavar="MB/S",
            widget=True,
        ),
    )
    low_priority: bool = field(
        default=True,
        metadata=_option(
            flag="--normal-priority", help="do not lower IO and CPU priority", widget=False
        ),
    )
    drop_cache: bool = field(
        default=True,
        metadata=_option(
            flag="--keep-cache",
            help="do not drop copied pages from the page cache",
            widget=False,
        ),
    )
    fsync: Literal["finish", "each"] = field(
        default="finish",
        metadata=_option(
            flag="--fsync",
            help="flush the destination once before the marker (default) or every file",
            rule=Choice(("finish", "each")),
            parse=str,
            widget=False,
        ),
    )
    wait_for_source: bool = field(
        default=False,
        metadata=_option(
            flag="--wait-for-source",
            help="wait for the source to appear instead of failing",
            widget=True,
        ),
    )
    force: bool = field(
        default=False,
        metadata=_option(
            flag="--force",
            help="copy into a destination that does not look like a copy of the source",
            widget=False,
        ),
    )
    move: bool = field(
        default=False,
        metadata=_option(
            flag="--move",
            help="once the copy is verified, delete the source files whose content equals "
            "their copy's (read back from DEST), then their empty folders, the marker last",
            widget=True,
        ),
    )
    status_file: str | os.PathLike | None = field(
        default=None,
        metadata=_option(
            flag="--status-file",
            help="where to write the JSON status file (default: the state directory)",
            optional=True,
            parse=Path,
            widget=False,
        ),
    )
    status_interval: float = field(
        default=0.5,
        metadata=_option(
            flag="--status-interval",
            help="seconds between status file writes (default {default})",
            rule=_SECONDS,
            parse=float,
            metavar="S",
            hidden=True,  # (for tools that follow the status file closely; people need not)
            widget=False,
        ),
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every option against its allowed range (`problem`).

        Called at construction; call it again after changing a field.

        Raises
        ------
        InputError
            One line naming the first option out of range and the range.
        """
        for f in fields(self):
            problem = self.problem(f.name, getattr(self, f.name))
            if problem is not None:
                raise InputError(f"option {f.name} {problem}")
        if self.finish_quiet > self.finish_quiet_max:
            raise InputError(
                f"option finish_quiet ({self.finish_quiet:g} s) must not exceed "
                f"finish_quiet_max ({self.finish_quiet_max:g} s)"
            )

    @staticmethod
    def problem(name: str, value: object) -> str | None:
        """What is wrong with ``value`` for the option ``name``, or None when it is allowed.

        The one rule for every way in: the engine API (`validate`), the command line (its
        argument types are built on it, `option_flags.option_type`) and so targets files,
        the widget.

        Returns
        -------
        str or None
            ``"must be <the allowed range>, not <value>"``.
        """
        found = _SCHEMA.get(name)
        if found is None or found[1].rule is None:
            return None
        _f, option = found
        if (value is None and option.optional) or (value is not None and option.rule.allows(value)):
            return None
        return f"must be {option.rule.text}, not {value!r}"


_SCHEMA: dict[str, tuple[Field, Option]] = {
    f.name: (f, f.metadata["option"]) for f in fields(CopyOptions)
}


def schema() -> Iterator[tuple[str, Any, Option]]:
    """``(name, default, option)`` for every field of `CopyOptions`, in declaration order."""
    for name, (f, option) in _SCHEMA.items():
        yield name, (f.default if f.default is not MISSING else None), option


def option_of(name: str) -> Option:
    """The `Option` of the field ``name``."""
    return _SCHEMA[name][1]


def default_of(name: str) -> Any:
    """The default of the field ``name``."""
    return _SCHEMA[name][0].default


def help_text(name: str) -> str:
    """The help text of the field ``name`` (its default filled in)."""
    return option_of(name).help.format(default=arg_text(default_of(name)))


def arg_text(value: object) -> str:
    """``value`` as a command line writes it: the shortest text that parses back to it
    (``30.0`` as ``30``, a path as it is)."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)

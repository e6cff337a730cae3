"""Destinations: the interface the engine writes through (`Destination`, `Capabilities`,
`FileInfo`), the one rule "this file is a copy of that one" (`copy_difference`), and the
local filesystem as its implementation (`LocalDestination`)."""

from .base import (
    NO_MTIME_NS,
    SOURCE_STAMP,
    STATE_DIR,
    Capabilities,
    Destination,
    DestinationChanged,
    FileInfo,
    SourceRecord,
    SourceStat,
    TempFile,
    copied_from_another_version,
    copy_difference,
    is_copy_of,
    mtime_matches,
    source_stamp,
)
from .local import LocalDestination, LocalTempFile
from .names import UnholdableName

__all__ = [
    "NO_MTIME_NS",
    "SOURCE_STAMP",
    "STATE_DIR",
    "Capabilities",
    "Destination",
    "DestinationChanged",
    "FileInfo",
    "LocalDestination",
    "LocalTempFile",
    "SourceRecord",
    "SourceStat",
    "TempFile",
    "UnholdableName",
    "copied_from_another_version",
    "copy_difference",
    "is_copy_of",
    "mtime_matches",
    "source_stamp",
]

"""Destinations: the interface the engine writes through (`Destination`, `Capabilities`,
`FileInfo`), the one rule "this file is a copy of that one" (`copy_difference`), and the
local filesystem and S3 as its implementations (`LocalDestination`, `s3.S3Destination`), and
the one factory that opens either from what the user typed (`open_destination`).

The factory and S3's settings are imported when first used (PEP 562): a copy or scan helper
process imports this package for `LocalDestination`, and has no use for S3's settings
(`configparser` with them: 0.2-0.35 MiB of a helper's RSS, 1.2 MiB in a bare interpreter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy_exports import lazy_exports
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
    same_version,
    source_stamp,
)
from .local import LocalDestination, LocalTempFile
from .names import UnholdableName

#: Public names imported when first used -> their module.
_LAZY = {
    "destination_name": ".open",
    "open_destination": ".open",
    "S3SettingsError": ".s3_settings",
    "is_s3_url": ".s3_settings",
}

if TYPE_CHECKING:
    from .open import destination_name, open_destination
    from .s3_settings import S3SettingsError, is_s3_url

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
    "S3SettingsError",
    "SourceRecord",
    "SourceStat",
    "TempFile",
    "UnholdableName",
    "copied_from_another_version",
    "copy_difference",
    "destination_name",
    "is_copy_of",
    "is_s3_url",
    "mtime_matches",
    "open_destination",
    "same_version",
    "source_stamp",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

"""Destinations: the interface the engine writes through (`Destination`, `Capabilities`,
`FileInfo`), the one rule "this file is a copy of that one" (`copy_difference`), and the
local filesystem and S3 as its implementations (`LocalDestination`, `s3.S3Destination`), and
the one factory that opens either from what the user typed (`open_destination`)."""

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
    UploadDigest,
    copied_from_another_version,
    copy_difference,
    is_copy_of,
    mtime_matches,
    same_version,
    source_stamp,
)
from .local import LocalDestination, LocalTempFile
from .names import UnholdableName
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
    "UploadDigest",
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

"""One factory for every place that opens a destination from what the user typed: a folder
path gives a `LocalDestination`, an ``s3://bucket/prefix`` URL an `S3Destination`."""

from __future__ import annotations

import os

from .base import Destination
from .s3_settings import is_s3_url


def destination_name(target: str | os.PathLike) -> str:
    """``target`` as messages, status files and other processes name it: a URL as given, a
    path made absolute (``pathlib`` would turn ``s3://b/p`` into ``s3:/b/p``)."""
    if is_s3_url(target):
        return str(target)
    return os.path.abspath(os.fspath(target))


def open_destination(target: str | os.PathLike, *, create: bool = True) -> Destination:
    """The destination ``target`` names.

    Parameters
    ----------
    target : path or str
        A folder, or ``s3://bucket/prefix`` (settings from the standard AWS chain:
        `s3_settings.store_config`).
    create : bool
        A copy may create it (a missing folder; the S3 root's identity object); a
        verification or the chunk map only read (FileNotFoundError for a missing folder).

    Raises
    ------
    S3SettingsError
        An S3 URL that is malformed, or a server that refuses or cannot be reached (one
        line, no secret).
    OSError
        A folder that cannot be opened.
    """
    if is_s3_url(target):
        from .s3 import S3Destination

        return S3Destination(str(target), create=create)
    from .local import LocalDestination

    return LocalDestination(target, create=create)

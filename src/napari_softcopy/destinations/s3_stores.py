"""The obstore stores an `S3Destination` talks through: one for the copy, one that answers
fast for the first requests (they say at once what is wrong: no bucket, wrong keys, no
server). With a checksum algorithm, every PUT carries its content's checksum
(``x-amz-checksum-crc64nvme``), which the server checks against what it received (a
mismatch is refused: ``BadDigest``) and keeps with the object.
"""

from __future__ import annotations

from datetime import timedelta

from .s3_settings import S3Location


def make_stores(location: S3Location, settings: tuple, checksum: str | None) -> tuple:
    """``(store, probe)`` for ``location`` with the ``settings`` of
    `s3_settings.store_config`, PUTs carrying a ``checksum`` (None: none)."""
    from obstore.store import S3Store

    config, client_options, provider = settings
    if checksum is not None:
        config = {**config, "checksum_algorithm": checksum}
    kwargs = {"credential_provider": provider} if provider is not None else {}
    prefix = location.prefix or None
    store = S3Store(
        location.bucket,
        prefix=prefix,
        config=config,
        client_options={**client_options, "connect_timeout": "5s", "timeout": "120s"},
        # A few quick retries of each request here; longer outages are the engine's
        # (backoff with a visible "retrying in N s").
        retry_config={
            "max_retries": 4,
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=15),
                "base": 2,
            },
            "retry_timeout": timedelta(seconds=15),
        },
        **kwargs,
    )
    probe = S3Store(
        location.bucket,
        prefix=prefix,
        config=config,
        client_options={**client_options, "connect_timeout": "3s", "timeout": "20s"},
        retry_config={"max_retries": 1, "retry_timeout": timedelta(seconds=5)},
        **kwargs,
    )
    return store, probe

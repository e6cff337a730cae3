"""The obstore stores an `S3Destination` talks through: one for the copy, one that answers
fast for the first requests (they say at once what is wrong: no bucket, wrong keys, no
server). With a checksum algorithm, every PUT carries its content's checksum
(``x-amz-checksum-crc64nvme``), which the server checks against what it received (a
mismatch is refused: ``BadDigest``) and keeps with the object.
"""

from __future__ import annotations

from datetime import timedelta

from .s3_settings import S3Location


def s3_store(
    location: S3Location,
    settings: tuple,
    *,
    timeout_s: int,
    retries: int,
    max_backoff_s: float,
    retry_timeout_s: float,
    connect_timeout_s: int = 5,
    checksum: str | None = None,
):
    """An obstore `S3Store` for ``location`` with the ``settings`` of
    `s3_settings.store_config`: ``retries`` quick retries of each request (backing off from
    0.1 s to ``max_backoff_s``, for ``retry_timeout_s`` at most), PUTs carrying a
    ``checksum`` (None: none). Each caller chooses how patient its requests are."""
    from obstore.store import S3Store

    config, client_options, provider = settings
    if checksum is not None:
        config = {**config, "checksum_algorithm": checksum}
    kwargs = {"credential_provider": provider} if provider is not None else {}
    return S3Store(
        location.bucket,
        prefix=location.prefix or None,
        config=config,
        client_options={
            **client_options,
            "connect_timeout": f"{connect_timeout_s}s",
            "timeout": f"{timeout_s}s",
        },
        retry_config={
            "max_retries": retries,
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=max_backoff_s),
                "base": 2,
            },
            "retry_timeout": timedelta(seconds=retry_timeout_s),
        },
        **kwargs,
    )


def make_stores(location: S3Location, settings: tuple, checksum: str | None) -> tuple:
    """``(store, probe)`` for ``location`` with the ``settings`` of
    `s3_settings.store_config`, PUTs carrying a ``checksum`` (None: none)."""
    # A few quick retries of each request in the copy's store; longer outages are the
    # engine's (backoff with a visible "retrying in N s"). The probe answers fast.
    store = s3_store(
        location,
        settings,
        timeout_s=120,
        retries=4,
        max_backoff_s=15,
        retry_timeout_s=15,
        checksum=checksum,
    )
    probe = s3_store(
        location,
        settings,
        timeout_s=20,
        retries=1,
        max_backoff_s=2,
        retry_timeout_s=5,
        connect_timeout_s=3,
        checksum=checksum,
    )
    return store, probe

"""What the server does with an upload's checksum, tried once at each copy's start, and the
upload digests that this allows (`S3Destination.acknowledged_digest`).

1. Every PUT carries the CRC64NVME of its bytes (`CHECKSUM`) unless the server refuses the
   header (`takes_checksum_header`: a small PUT with it). A server that refuses it gets
   uploads without it, said once: each is still guarded by the signed payload's SHA-256, but
   the server keeps no checksum of the content.
2. The BLAKE3 hashed as an upload's bytes are sent is the manifest's hash of that object only
   where the server checks the CRC64NVME against the bytes it received and refuses a wrong one
   (`checks_upload_checksums`: an empty PUT with the checksum of other bytes must be refused,
   ``BadDigest``, as AWS and SeaweedFS answer). Elsewhere, said once, the manifest holds the
   hashes of the bytes as sent, unchecked by the server.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from .base import STATE_DIR
from .s3_uploads import keys_of, signed_request

#: The checksum each PUT carries: CRC64NVME, AWS's default for new objects since 2025,
#: computed in Rust (GB/s) and kept whole-object even for multipart uploads.
CHECKSUM = "CRC64NVME"
#: A small object each copy's start PUTs with the checksum (`takes_checksum_header`).
PROBE = f"{STATE_DIR}/s3-checksum-probe"
#: What a server that does not know the checksum header answers (a PUT refused for it).
_REFUSED_HEADER = ("InvalidRequest", "InvalidArgument", "NotImplemented", "InvalidDigest")
#: What the manifest holds where the server checks no upload's checksum (`hashes`).
_UNCHECKED = "the manifest holds the hashes of the bytes as sent, unchecked by the server"
#: The CRC64NVME of one byte ``x``: a checksum the empty body of `refuses_wrong_checksum`'s
#: PUT does not have (the empty body's is all zeros).
_WRONG_CRC64NVME = "rzr3nGEtBMk="


def takes_checksum_header(probe, endpoint: str, fail: Callable[[Exception], Exception]) -> bool:
    """PUT `PROBE` through the store ``probe`` (which sends `CHECKSUM`): False where the server
    refused the header (said once); any other error raised as ``fail`` makes it."""
    import obstore

    from ..platform import degrade

    try:
        obstore.put(probe, PROBE, b"softcopy", use_multipart=False)
        return True
    except Exception as exc:
        text = str(exc)
        code = next((c for c in _REFUSED_HEADER if f"<Code>{c}</Code>" in text), None)
        if code is None:
            raise fail(exc) from None
    degrade(
        "server checksums",
        f"{endpoint} refused x-amz-checksum-{CHECKSUM.lower()} ({code}); uploads go "
        "without it (each is still checked by the signed payload's SHA-256)",
    )
    return False


def checks_upload_checksums(
    checksum: str | None, location, endpoint: str, config: Mapping[str, str], env=None
) -> bool:
    """Whether the manifest may take each upload's BLAKE3 hashed on its way: the uploads carry
    ``checksum`` and the server at ``location`` refuses a wrong one (else said once)."""
    from ..platform import degrade

    what = "hashing uploads for the manifest"
    if checksum is None:
        degrade(what, f"{endpoint} keeps no checksum; {_UNCHECKED}")
        return False
    checks, why = refuses_wrong_checksum(location, PROBE, config, env)
    if not checks:
        degrade(what, f"{endpoint}: {why}; {_UNCHECKED}")
    return checks


def refuses_wrong_checksum(
    location, key: str, config: Mapping[str, str], env=None
) -> tuple[bool, str]:
    """Whether the server checks an upload's CRC64NVME against the bytes it received: an
    empty PUT of ``key`` (below ``location``'s prefix) with the checksum of other bytes must
    be refused (``BadDigest``, as AWS and SeaweedFS answer). A server that takes the header
    without checking it stores the empty object and answers 200. ``(checks, why not)``."""
    import urllib.error

    keys = keys_of(config, os.environ if env is None else env)
    if keys is None:
        return False, "its keys come from a provider, not at hand for the check"
    endpoint, credentials, region = keys
    full = f"{location.prefix}/{key}" if location.prefix else key
    extra = {
        "x-amz-checksum-crc64nvme": _WRONG_CRC64NVME,
        "x-amz-sdk-checksum-algorithm": "CRC64NVME",
    }
    try:
        signed_request("PUT", endpoint, location.bucket, full, {}, credentials, region, extra=extra)
    except urllib.error.HTTPError as exc:
        body = exc.read()[:2000]
        if b"<Code>BadDigest</Code>" in body or b"<Code>InvalidDigest</Code>" in body:
            return True, ""
        return False, f"a PUT with a wrong checksum got {exc.code} (not BadDigest)"
    except Exception as exc:  # (no answer: it is not known to check)
        return False, f"the check failed ({str(exc)[:120]})"
    return False, "it stored an upload whose CRC64NVME was wrong"

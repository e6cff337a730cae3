"""Multipart uploads left unfinished below a prefix (a copier killed while it sent a large
file): listed and aborted at the next start, so their parts stop costing storage.

obstore aborts the uploads it gives up itself, but has no call to list the uploads a killed
process left behind: ``ListMultipartUploads`` and ``AbortMultipartUpload`` are made here as
plain HTTPS/HTTP requests, signed with AWS Signature Version 4 (path-style URLs, as every
S3-compatible server takes them). Where the keys come from a provider (SSO, roles through
boto3) they are not at hand here, and nothing is aborted (said once, `platform.degrade`).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import os
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping

log = logging.getLogger(__name__)

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def signed_request(
    method: str,
    endpoint: str,
    bucket: str,
    key: str,
    query: Mapping[str, str],
    credentials: Mapping[str, str],
    region: str,
    timeout: float = 10.0,
    extra: Mapping[str, str] | None = None,
    response_headers: dict[str, str] | None = None,
) -> bytes:
    """Send one signed S3 request with an empty body (and the headers ``extra``, signed too);
    the response body (HTTPError on a status other than 2xx), its headers into
    ``response_headers`` (lower-case names) where given."""
    url = urllib.parse.urlsplit(endpoint)
    path = "/" + _quote(bucket) + ("/" + "/".join(_quote(p) for p in key.split("/")) if key else "")
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {
        "host": url.netloc,
        "x-amz-content-sha256": _EMPTY_SHA256,
        "x-amz-date": amz_date,
    }
    if credentials.get("token"):
        headers["x-amz-security-token"] = credentials["token"]
    headers.update({k.lower(): v for k, v in (extra or {}).items()})
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            path,
            canonical_query,
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            _EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key_bytes = ("AWS4" + credentials["secret"]).encode()
    for part in (day, region, "s3", "aws4_request"):
        key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials['key']}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    full = f"{url.scheme}://{url.netloc}{path}" + (f"?{canonical_query}" if query else "")
    request = urllib.request.Request(full, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response_headers is not None:
            response_headers.update((k.lower(), v) for k, v in response.getheaders())
        return response.read()


def unfinished_uploads(
    endpoint: str, bucket: str, prefix: str, credentials: Mapping[str, str], region: str
) -> list[tuple[str, str]]:
    """``(key, upload id)`` of every multipart upload in progress below ``prefix``."""
    found: list[tuple[str, str]] = []
    query = {"uploads": "", "prefix": prefix}
    while True:
        body = signed_request("GET", endpoint, bucket, "", query, credentials, region)
        root = ET.fromstring(body)
        for upload in root.iter(f"{_NS}Upload"):
            key, upload_id = upload.findtext(f"{_NS}Key"), upload.findtext(f"{_NS}UploadId")
            if key and upload_id:
                found.append((key, upload_id))
        if root.findtext(f"{_NS}IsTruncated") != "true":
            return found
        query = {
            "uploads": "",
            "prefix": prefix,
            "key-marker": root.findtext(f"{_NS}NextKeyMarker") or "",
            "upload-id-marker": root.findtext(f"{_NS}NextUploadIdMarker") or "",
        }


def abort_unfinished_uploads(
    endpoint: str, bucket: str, prefix: str, credentials: Mapping[str, str], region: str
) -> int:
    """Abort every multipart upload in progress below ``prefix``; how many there were."""
    uploads = unfinished_uploads(endpoint, bucket, prefix, credentials, region)
    for key, upload_id in uploads:
        signed_request(
            "DELETE", endpoint, bucket, key, {"uploadId": upload_id}, credentials, region
        )
    return len(uploads)


def keys_of(config: Mapping[str, str], env: Mapping[str, str]) -> tuple[str, dict, str] | None:
    """``(endpoint URL, credentials, region)`` from the store's ``config`` or ``env``; None
    where the keys come from a provider (SSO, roles) and are not at hand here."""
    key = config.get("aws_access_key_id") or env.get("AWS_ACCESS_KEY_ID")
    secret = config.get("aws_secret_access_key") or env.get("AWS_SECRET_ACCESS_KEY")
    token = config.get("aws_session_token") or env.get("AWS_SESSION_TOKEN") or ""
    region = (
        config.get("aws_region")
        or env.get("AWS_REGION")
        or env.get("AWS_DEFAULT_REGION", "us-east-1")
    )
    endpoint = config.get("aws_endpoint") or f"https://s3.{region}.amazonaws.com"
    if not (key and secret):
        return None
    return endpoint, {"key": key, "secret": secret, "token": token}, region


def abort_left_behind(
    location, name: str, endpoint_label: str, config: Mapping[str, str], env=None
) -> None:
    """Abort what a killed copy left below ``location`` (an `s3_settings.S3Location`), with
    the keys of the store's ``config`` or the environment ``env``. Best effort: a server
    without the calls, or keys from a provider, leave the copy going (said once)."""
    from ..platform import degrade

    keys = keys_of(config, os.environ if env is None else env)
    what = "aborting unfinished multipart uploads"
    if keys is None:
        degrade(what, f"the keys for {name} come from a provider, not at hand here")
        return
    endpoint, credentials, region = keys
    prefix = f"{location.prefix}/" if location.prefix else ""
    try:
        n = abort_unfinished_uploads(endpoint, location.bucket, prefix, credentials, region)
    except Exception as exc:  # (a server without these calls: the copy goes on)
        degrade(what, f"{endpoint_label} refused it ({str(exc)[:120]})")
        return
    if n:
        log.info("aborted %d unfinished multipart upload(s) below %s", n, name)


def top_names(location, config: Mapping[str, str], env=None) -> list[str] | None:
    """The names at the top of ``location``'s prefix (one signed ListObjectsV2 with a
    delimiter per 1,000 names, in this process: no thread is started, so a process may fork
    after it), napari-softcopy's own folder left out. None where the keys come from a provider
    or the request failed: the caller asks obstore, whose errors it describes."""
    from .base import STATE_DIR

    keys = keys_of(config, os.environ if env is None else env)
    if keys is None:
        return None
    endpoint, credentials, region = keys
    prefix = f"{location.prefix}/" if location.prefix else ""
    query = {"list-type": "2", "prefix": prefix, "delimiter": "/"}
    names: list[str] = []
    try:
        while True:
            # (a server that does not answer is then asked again by the child: briefly here)
            body = signed_request(
                "GET", endpoint, location.bucket, "", query, credentials, region, timeout=5.0
            )
            root = ET.fromstring(body)
            names += [k.text or "" for k in root.iterfind(f"{_NS}Contents/{_NS}Key")]
            found = root.iterfind(f"{_NS}CommonPrefixes/{_NS}Prefix")
            names += [(p.text or "").rstrip("/") for p in found]
            token = root.findtext(f"{_NS}NextContinuationToken")
            if root.findtext(f"{_NS}IsTruncated") != "true" or not token:
                break
            query["continuation-token"] = token
    except Exception:  # (the caller's obstore listing says what is wrong, as it always did)
        return None
    top = {name[len(prefix) :] for name in names if name.startswith(prefix)}
    return sorted(top - {"", STATE_DIR})

"""Where an ``s3://bucket/prefix`` destination is and who may write there: the URL, the
endpoint, the region and the credentials, from the standard AWS chain.

obstore (Rust ``object_store``) reads the environment itself: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, container and instance credentials, web identity tokens. It does not
read the shared files (``~/.aws/credentials``, ``~/.aws/config``, ``AWS_PROFILE``), which is
where most users keep their keys: `store_config` fills that gap for static keys (and a
profile's ``region`` and ``endpoint_url``); a profile that gets its keys another way (SSO,
``credential_process``, ``role_arn``) goes through boto3 where it is installed, and is
otherwise refused with a one-line error naming the profile.

Nothing secret leaves this module except into the store's configuration: messages name the
endpoint, the bucket and the profile, never a key.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

S3_SCHEME = "s3://"

# S3's bucket naming rules (3-63 characters, lower case, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class S3SettingsError(ValueError):
    """An ``s3://`` destination that cannot be used as given (one line: what, and the fix)."""


def is_s3_url(target: str | os.PathLike) -> bool:
    """Whether ``target`` names an S3 destination (``s3://bucket/prefix``)."""
    return isinstance(target, str) and target.startswith(S3_SCHEME)


class S3Url(str):
    """An ``s3://`` URL that joins as a path does (``url / rel``): a destination's ``path``
    is joined with file names in messages and in the manifest's place."""

    __slots__ = ()

    def __truediv__(self, rel: str) -> S3Url:
        return S3Url(f"{self.rstrip('/')}/{rel}")


@dataclass(frozen=True, slots=True)
class S3Location:
    """An ``s3://bucket/prefix`` URL taken apart."""

    bucket: str
    prefix: str  # no leading or trailing "/"; "" for the whole bucket

    @property
    def url(self) -> S3Url:
        url = f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else S3_SCHEME + self.bucket
        return S3Url(url)


def parse_s3_url(url: str) -> S3Location:
    """Take ``s3://bucket/prefix`` apart; `S3SettingsError` for a malformed one."""
    if not is_s3_url(url):
        raise S3SettingsError(f"{url} is not an s3:// URL; write s3://bucket/prefix")
    bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket):
        raise S3SettingsError(
            f"{url}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, "
            "dots or hyphens); write s3://bucket/prefix"
        )
    parts = prefix.split("/") if prefix else []
    if any(part in ("", ".", "..") for part in parts):
        raise S3SettingsError(
            f"{url}: the prefix has an empty, '.' or '..' part; write s3://bucket/folder/name"
        )
    return S3Location(bucket, prefix)


def _profile_sections(env: Mapping[str, str]) -> tuple[str, dict[str, str], dict[str, str]]:
    """The profile's name and its sections of the shared credentials and config files."""
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path(env.get("HOME") or Path.home())
    creds_file = env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"
    config_file = env.get("AWS_CONFIG_FILE") or home / ".aws" / "config"
    sections = []
    for path, name in ((creds_file, profile), (config_file, f"profile {profile}")):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise S3SettingsError(f"{path} cannot be read ({exc}); fix or move it") from None
        # In the config file the default profile's section is [default], the others
        # [profile NAME]; in the credentials file always [NAME].
        if profile == "default" and name.startswith("profile "):
            name = "default"
        sections.append(dict(parser[name]) if parser.has_section(name) else {})
    return profile, sections[0], sections[1]


def store_config(env: Mapping[str, str] | None = None) -> tuple[dict, dict, object | None]:
    """The obstore ``S3Store`` settings that the environment and the shared AWS files give.

    Returns
    -------
    (config, client_options, credential_provider)
        What obstore does not read itself (a profile's keys, region and endpoint), whether
        plain http is allowed (an ``http://`` endpoint: a local server), and a boto3
        credential provider for a profile with keys that are not static (None otherwise).
    """
    env = os.environ if env is None else env
    config: dict[str, str] = {}
    provider = None
    has_env_keys = bool(env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"))
    profile, creds, conf = _profile_sections(env)
    if has_env_keys:  # (said here too: ``env`` need not be the process's environment)
        config["aws_access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        config["aws_secret_access_key"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            config["aws_session_token"] = env["AWS_SESSION_TOKEN"]
    else:
        merged = {**conf, **creds}  # (the credentials file wins, as in the AWS CLI)
        if merged.get("aws_access_key_id") and merged.get("aws_secret_access_key"):
            config["aws_access_key_id"] = merged["aws_access_key_id"]
            config["aws_secret_access_key"] = merged["aws_secret_access_key"]
            if merged.get("aws_session_token"):
                config["aws_session_token"] = merged["aws_session_token"]
        elif any(
            k in merged for k in ("sso_session", "sso_start_url", "credential_process", "role_arn")
        ):
            provider = _boto3_provider(profile)
    if not (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")) and conf.get("region"):
        config["aws_region"] = conf["region"]
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not endpoint and conf.get("endpoint_url"):
        endpoint = config["aws_endpoint"] = conf["endpoint_url"]
    elif endpoint:
        config["aws_endpoint"] = endpoint
    if not (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "aws_region" in config):
        # object_store's default, said here so that a non-AWS server's signature matches.
        config["aws_region"] = "us-east-1"
    client_options = {"allow_http": bool(endpoint and endpoint.startswith("http://"))}
    return config, client_options, provider


def endpoint_of(env: Mapping[str, str] | None = None) -> str:
    """The endpoint the destination talks to, for messages (never a secret)."""
    config, _, _ = store_config(env)
    return config.get("aws_endpoint", "AWS S3")


def _boto3_provider(profile: str):
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise S3SettingsError(
            f"AWS profile {profile!r} gets its keys through SSO, a credential process or a "
            "role, which needs boto3: pip install boto3, or set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY"
        ) from None
    return Boto3CredentialProvider(boto3.Session(profile_name=profile))


def describe_error(exc: BaseException, location: S3Location, endpoint: str) -> str:
    """One line saying what went wrong talking to the server, and the fix (no secret)."""
    text = str(exc)
    where = f"{location.url} at {endpoint}"
    # With no keys in the environment or the shared files, object_store asks the cloud
    # instance's metadata service for them; off a cloud instance that request is refused or
    # unanswered, which is not the server's fault, nor wrong keys: no keys at all.
    if any(path in text for path in _METADATA_PATHS):
        return (
            f"{where}: no credentials found (none in the environment or ~/.aws, and no cloud "
            "instance role answered); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "AWS_PROFILE with ~/.aws/credentials"
        )
    if "NoSuchBucket" in text:
        return f"bucket {location.bucket} does not exist at {endpoint}; create it first"
    if any(code in text for code in ("SignatureDoesNotMatch", "InvalidAccessKeyId")):
        return (
            f"{where}: the server refused the credentials; check AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY or the AWS_PROFILE in use"
        )
    if "AccessDenied" in text or "status code: 403" in text:  # (not "403" in a time)
        return f"{where}: access denied; these credentials may not write to this bucket"
    if ("Missing" in text and "credential" in text.lower()) or "NoCredentials" in text:
        return (
            f"{where}: no credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"
        )
    # (before the words below: obstore's text of any retried request says "retry_timeout")
    if (status := _server_error(text)) is not None:
        return (
            f"the server at {endpoint} failed a request for {location.url} ({status}): it may "
            "be starting or overloaded"
        )
    # A request sent but not answered in time (reqwest's Timeout, not a connect error): the
    # server is there but stuck. SeaweedFS does that to every PUT once its disk is nearly
    # full, while it still lists; "cannot reach" would send the user to the wrong place.
    if "kind: Timeout" in text and "Connect" not in text:
        return (
            f"the server at {endpoint} did not answer a request for {location.url} in time: "
            "it may be overloaded, or its disk full"
        )
    if any(word in text for word in ("connect", "Connection", "dns error", "timed out", "timeout")):
        return (
            f"cannot reach {endpoint} for {location.url}; check AWS_ENDPOINT_URL and that "
            "the server is running"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{where}: {first[:300]}"


#: The paths of the instance metadata service (EC2's IMDS token and role requests), whose
#: failure means no credentials were found (`describe_error`).
_METADATA_PATHS = ("/latest/api/token", "/latest/meta-data/iam/")

#: S3 error codes that say the server failed, not the request: retried later, as AWS's own
#: SDKs do (a SeaweedFS restarting answers 500 "volume not found" for a few seconds while its
#: volumes register, though it already lists objects).
_SERVER_CODES = ("InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout")
_STATUS = re.compile(r"status code: (5\d\d)")


def _server_error(text: str) -> str | None:
    """The server-side failure ``text`` reports (``"500 InternalError"``), None for another."""
    status = _STATUS.search(text)
    code = next((c for c in _SERVER_CODES if f"<Code>{c}</Code>" in text), None)
    if status is None and code is None:
        return None
    return " ".join(x for x in (status.group(1) if status else None, code) if x)


def is_transient(message: str) -> bool:
    """Whether a `describe_error` message says the server may answer later (unreachable or
    failing on its side), rather than a setting the user must fix."""
    return message.startswith(("cannot reach ", "the server at "))

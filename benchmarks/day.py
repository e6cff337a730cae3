"""Day mode: a day of acquisition compressed in time, with the copier following it live.

``python -m benchmarks.day [--geometry manyfiles|lightsheet] [--timepoints N] [--rate R]``

A real tensorstore writer (`napari_softcopy.simulate`, ``lockfile`` locking) writes the
archive timepoint by timepoint in a process of its own, as fast as ``--rate`` allows, and
reports when each timepoint is written; ``napari-softcopy copy SRC DST --wait-for-source``
follows it from the start. Every second the harness samples the copier's process tree (RSS,
CPU), its status file (files copied and pending, lag, folders watched) and the size of its
log. At the end: the drain (copier's exit after the marker), the writer's time per timepoint
(first tenth against last tenth), CPU per file, and a byte-for-byte comparison of the trees.
Everything goes into a JSON file and a plot beside it.

Geometries (issue 22): ``manyfiles`` is 2,000 chunk files of about 4.5 KiB per timepoint in
221 folders (Zarr v2, ``/`` keys ``t/z/y/x``); 500 timepoints make 1,000,000 files in
110,000 folders. ``lightsheet`` is 256 chunks of about 70 KiB per timepoint in 37 folders
(Zarr v3, ``c/t/z/y/x``); 2,000 timepoints make 512,000 files in 74,000 folders (35 GB).
``lightsheet-small`` has the same files and folders with a quarter of the bytes (chunks of
16 x 32 x 32 over 64 x 256 x 256 a timepoint, about 18 KiB each: 9 GB at 2,000 timepoints),
for a machine whose disk cannot hold 35 GB twice.

``--watch-limit N`` runs the copier in a user namespace of its own whose inotify watch limit
(``/proc/sys/user/max_inotify_watches``) is N, so an archive with more folders than watches
is measured without lowering the machine's limit for anyone else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from .common import REPO, child_result, compare_trees, dump, python

GEOMETRIES = {
    # name: (preset, shape, chunks (None: the preset's), separator, files, folders a timepoint)
    "manyfiles": ("manyfiles", (20, 640, 640), None, "/", 2000, 221),
    "lightsheet": ("lightsheet", (64, 512, 512), None, "/", 256, 37),
    "lightsheet-small": ("lightsheet", (64, 256, 256), (1, 16, 32, 32), "/", 256, 37),
}
SAMPLE_S = 1.0


# ---------------------------------------------------------------------------- the writer
def write(src: str, geometry: str, timepoints: int, rate: float | None) -> int:
    """The writer process: write the archive, one JSON line per timepoint, then the marker."""
    from napari_softcopy.simulate import simulate
    from napari_softcopy.simulate.presets import PRESETS

    from .writer import write_marker

    preset_name, shape, chunks, separator, _, _ = GEOMETRIES[geometry]
    preset = dataclasses.replace(
        PRESETS[preset_name],
        shape=(timepoints, *shape),
        chunks=chunks or PRESETS[preset_name].chunks,
        separator=separator,
    )

    def done(t: int) -> None:
        sys.stdout.write(json.dumps({"t": t, "at": time.time()}) + "\n")
        sys.stdout.flush()

    sys.stdout.write(json.dumps({"started_at": time.time()}) + "\n")
    sys.stdout.flush()
    report = simulate(src, preset, rate=rate, marker=None, on_timepoint=done)
    marker_at = write_marker(src)
    sys.stdout.write(
        json.dumps({"marker_at": marker_at, "files": report.files + 1, "bytes": report.bytes})
        + "\n"
    )
    return 0


class WriterReader(threading.Thread):
    """Reads the writer's lines: when each timepoint was written, and the marker."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__(name="day-writer-reader", daemon=True)
        self.proc = proc
        self.started_at: float | None = None
        self.timepoints: list[float] = []
        self.end: dict = {}

    def run(self) -> None:
        for line in self.proc.stdout:
            item = json.loads(line)
            if "started_at" in item:
                self.started_at = item["started_at"]
            elif "t" in item:
                self.timepoints.append(item["at"])
            else:
                self.end = item


# ---------------------------------------------------------------------------- sampling
class Sampler(threading.Thread):
    """Every `SAMPLE_S`: the copier tree's RSS and CPU, its status, its log's size."""

    def __init__(self, pid: int, status_file: Path, log_file: Path, writer: WriterReader):
        super().__init__(name="day-sampler", daemon=True)
        self.proc = psutil.Process(pid)
        self.status_file = status_file
        self.log_file = log_file
        self.writer = writer
        self.samples: list[dict] = []
        self.peak_rss = 0
        self._cpu: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.time()
        while not self._halt.is_set():
            self.samples.append(self._sample(t0))
            self._halt.wait(SAMPLE_S)

    def _sample(self, t0: float) -> dict:
        rss = 0
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                with p.oneshot():
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                self._cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        try:
            status = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            status = {}
        try:
            log_bytes = self.log_file.stat().st_size
        except OSError:
            log_bytes = 0
        return {
            "t": round(time.time() - t0, 2),
            "rss_mib": round(rss / 2**20, 1),
            "cpu_s": round(sum(self._cpu.values()), 2),
            "timepoints_written": len(self.writer.timepoints),
            "files_copied": status.get("files_copied", 0),
            "files_pending": status.get("files_pending", 0),
            "lag_s": status.get("lag_s", 0.0),
            "state": status.get("state"),
            "folders_watched": status.get("folders_watched"),
            "folders_unwatched": status.get("folders_unwatched"),
            "scans": status.get("scans", 0),
            "event_overflows": status.get("event_overflows", 0),
            "log_bytes": log_bytes,
        }

    def stop(self) -> None:
        self._halt.set()
        self.join()


# ---------------------------------------------------------------------------- one run
#: The copier with its own watch cap lowered (``--max-watches``): `watches.MAX_WATCHES` set
#: before the engine's `Tuning` takes it as its default (or as the ceiling of the default
#: drawn from the kernel's limit, `watches.default_max_watches`), so that both codes of
#: ``--turns`` (and any older one) honour it. Unlike ``--watch-limit`` (the kernel's), the
#: copier then takes watches as usual and finished folders give theirs back past the cap, as
#: at 1,000,000 files with the 16,384 of before: most proven folders unwatched at the finish.
#: ``--max-proofs`` likewise sets `proofs.MAX_PROOFS` before the engine's
#: `Tuning` reads it: the proofs kept stop growing there (the oldest are dropped, their
#: folders walked at the finish), so the copier's memory shows its plateau past both caps.
_CAPPED_COPIER = (
    "import sys; import napari_softcopy.watches as w; import napari_softcopy.proofs as p; "
    "w.MAX_WATCHES = int(sys.argv.pop(1)) or w.MAX_WATCHES; "
    "p.MAX_PROOFS = int(sys.argv.pop(1)) or p.MAX_PROOFS; "
    "from napari_softcopy.cli import console_main; sys.exit(console_main())"
)


def run(
    workdir: Path,
    geometry: str = "manyfiles",
    timepoints: int = 500,
    rate: float | None = 1.0,
    watch_limit: int | None = None,
    compare: bool = True,
    keep: bool = False,
    src_code: Path | None = None,
    max_watches: int | None = None,
    max_proofs: int | None = None,
) -> dict:
    """One day run in ``workdir`` (created; removed at the end unless ``keep``); the copier
    runs the package in ``src_code`` (default: this checkout's ``src``), with its own watch
    cap ``max_watches`` where given (`watches.MAX_WATCHES`, the default of
    `Tuning.max_watches`), and its proofs' cap ``max_proofs`` (`proofs.MAX_PROOFS`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    src, dst = workdir / "acquisition.zarr", workdir / "copy.zarr"
    status_file, log_file = workdir / "status.json", workdir / "copier.log"
    env = dict(os.environ, NAPARI_SOFTCOPY_STATE_DIR=str(workdir / "state"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    copier_env = dict(env, PYTHONPATH=str(src_code or REPO / "src"))
    copier = [python(), "-m", "napari_softcopy.cli", "copy", str(src), str(dst)]
    if max_watches is not None or max_proofs is not None:
        caps = [str(int(max_watches or 0)), str(int(max_proofs or 0))]  # (0: left as it is)
        copier[1:3] = ["-c", _CAPPED_COPIER, *caps]
    copier += ["--wait-for-source", "--status-file", str(status_file)]
    if watch_limit is not None:
        limit = "/proc/sys/user/max_inotify_watches"
        shell = f'echo {int(watch_limit)} > {limit} && exec "$@"'
        copier = ["unshare", "-U", "-r", "sh", "-c", shell, "sh", *copier]
    os.sync()  # (earlier runs' dirty pages are not this run's to write back)
    with open(log_file, "wb") as log:
        child = subprocess.Popen(
            copier, stdout=log, stderr=subprocess.STDOUT, env=copier_env, start_new_session=True
        )
    argv = [python(), "-m", "benchmarks.day", "--writer", str(src), "--geometry", geometry]
    argv += ["--timepoints", str(timepoints)]
    if rate is not None:
        argv += ["--rate", str(rate)]
    writer = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    reader = WriterReader(writer)
    reader.start()
    sampler = Sampler(child.pid, status_file, log_file, reader)
    sampler.start()
    writer.wait()
    reader.join()
    try:
        code = child.wait(timeout=3600)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, 9)
        code = child.wait()
    ended_at = time.time()
    sampler.stop()
    result = summarize(geometry, reader, sampler, code, ended_at, watch_limit)
    result["max_watches"] = max_watches
    result["max_proofs"] = max_proofs
    try:  # what the finish walked and vouched for (`Status.verification`)
        final = json.loads(status_file.read_text())
    except (OSError, ValueError):
        final = {}
    result["verification"] = final.get("verification")
    result["marker_to_verified_s"] = final.get("marker_to_verified_s")
    if compare and code == 0:
        result["correctness"] = compare_trees(src, dst)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def summarize(geometry, reader, sampler, code, ended_at, watch_limit) -> dict:
    """The run's figures from the writer's report and the samples."""
    *_, per_tp, _ = GEOMETRIES[geometry]
    marker_at = reader.end.get("marker_at")
    done = reader.timepoints
    starts = [reader.started_at or done[0], *done[:-1]]
    per_timepoint = [round(b - a, 4) for a, b in zip(starts, done, strict=True)]
    tenth = max(1, len(per_timepoint) // 10)
    # The first timepoint also creates the arrays and warms tensorstore up: left out.
    first = per_timepoint[1 : tenth + 1] or per_timepoint[:1]
    last = per_timepoint[-tenth:]
    samples = sampler.samples
    t_marker = marker_at - (ended_at - samples[-1]["t"]) if marker_at and samples else None
    live = [s for s in samples if t_marker is None or s["t"] <= t_marker]
    at_marker = live[-1] if live else {}
    status_end = samples[-1] if samples else {}
    for s in samples:
        s["backlog_files"] = max(0, s["timepoints_written"] * per_tp - s["files_copied"])
    return {
        "geometry": geometry,
        "timepoints": len(done),
        "files": reader.end.get("files"),
        "bytes": reader.end.get("bytes"),
        "watch_limit": watch_limit,
        "exit_code": code,
        "drain_s": round(ended_at - marker_at, 3) if marker_at else None,
        "acquisition_s": round(done[-1] - (reader.started_at or done[0]), 2) if done else None,
        "writer_s_per_timepoint_first_tenth": round(sum(first) / len(first), 4),
        "writer_s_per_timepoint_last_tenth": round(sum(last) / len(last), 4),
        "writer_last_over_first": round((sum(last) / len(last)) / (sum(first) / len(first)), 3),
        "peak_rss_mib": round(sampler.peak_rss / 2**20, 1),
        "rss_mib_first_tenth_max": max(
            (s["rss_mib"] for s in live[: len(live) // 10 + 1]), default=0
        ),
        "rss_mib_last_tenth_max": max(
            (s["rss_mib"] for s in live[-(len(live) // 10 + 1) :]), default=0
        ),
        "max_lag_s": max((s["lag_s"] for s in live), default=0.0),
        "max_backlog_files": max((s["backlog_files"] for s in live), default=0),
        "cpu_ms_per_file_live": round(
            1000 * at_marker.get("cpu_s", 0) / max(1, at_marker.get("files_copied", 0)), 4
        ),
        # (above 1: files copied more than once, rewritten by the writer or copied again; the
        # backlog and the CPU a file count copies, so they read better than they are then)
        "copies_per_file": round(
            status_end.get("files_copied", 0) / max(1, (reader.end.get("files") or 1) - 1), 4
        ),
        "cpu_s_total": status_end.get("cpu_s"),
        "log_bytes": status_end.get("log_bytes"),
        "scans": status_end.get("scans"),
        "event_overflows": status_end.get("event_overflows"),
        "folders_watched_end": status_end.get("folders_watched"),
        "folders_unwatched_end": status_end.get("folders_unwatched"),
        "per_timepoint_s": per_timepoint,
        "samples": samples,
        "t_marker": t_marker,
    }


def plot(result: dict, path: Path) -> None:
    """RSS, lag and backlog, the writer's time per timepoint and CPU per file, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["samples"]
    t = [x["t"] for x in s]
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=False)
    axes[0].plot(t, [x["rss_mib"] for x in s])
    axes[0].set_ylabel("copier RSS (MiB)")
    axes[1].plot(t, [x["lag_s"] for x in s], label="lag (s)")
    ax = axes[1].twinx()
    ax.plot(t, [x["backlog_files"] for x in s], color="tab:orange", label="backlog (files)")
    axes[1].set_ylabel("lag (s)")
    ax.set_ylabel("backlog (files)")
    axes[2].plot(result["per_timepoint_s"])
    axes[2].set_xlabel("timepoint")
    axes[2].set_ylabel("writer s / timepoint")
    cpf = [1000 * x["cpu_s"] / x["files_copied"] if x["files_copied"] else 0 for x in s]
    axes[3].plot(t, cpf)
    settled = cpf[len(cpf) // 10 :]  # (the first files carry the start-up's CPU)
    if settled and max(settled) > 0:
        axes[3].set_ylim(0, 1.5 * max(settled))
    axes[3].set_ylabel("copier CPU ms / file")
    axes[3].set_xlabel("s since start")
    for a in (axes[0], axes[1], axes[3]):
        if result.get("t_marker"):
            a.axvline(result["t_marker"], color="grey", linestyle=":")
    fig.suptitle(
        f"day run: {result['geometry']}, {result['timepoints']} timepoints, "
        f"{result['files']} files"
        + (f", watch limit {result['watch_limit']}" if result["watch_limit"] else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


#: The day runs of `run_all` (timepoints per geometry), and their quick versions.
DAY_RUNS = {"manyfiles": 500, "lightsheet": 2000}
QUICK_RUNS = {"manyfiles": 20, "lightsheet": 20}


def run_all(workdir, *, quick: bool, images: Path, log=print) -> dict:
    """The day runs (``python -m benchmarks.run --modes day``): each geometry once, at one
    timepoint a second, its plot in ``images``. ``workdir`` is a `common.Workdir`."""
    out = {}
    for geometry, timepoints in (QUICK_RUNS if quick else DAY_RUNS).items():
        log(f"day run: {geometry}, {timepoints} timepoints")
        result = run(workdir.fresh(f"day-{geometry}"), geometry, timepoints)
        images.mkdir(parents=True, exist_ok=True)
        plot(result, images / f"day-{geometry}.png")
        out[geometry] = result
    return out


def main(argv: list[str] | None = None) -> int:
    """Run one day run; print its summary; write the JSON and the plot."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.day", description=__doc__.split("\n")[0])
    p.add_argument("--geometry", choices=sorted(GEOMETRIES), default="manyfiles")
    p.add_argument("--timepoints", type=int, default=500)
    p.add_argument("--rate", type=float, default=1.0, help="timepoints per second (default 1)")
    p.add_argument("--watch-limit", type=int, default=None, help="the kernel's, for the copier")
    p.add_argument(
        "--max-watches",
        type=int,
        default=None,
        help="the copier's own watch cap (default: 3/4 of the kernel's limit, at most "
        "131,072): lower, most folders give their watch back, as at 1,000,000 files before",
    )
    p.add_argument(
        "--max-proofs",
        type=int,
        default=None,
        help="the copier's cap of folder proofs (default 131,072): lower, the oldest are "
        "dropped and walked at the finish, and the copier's memory shows its plateau",
    )
    p.add_argument("--workdir", type=Path, default=None, help="default: a new folder in /tmp")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--no-compare", action="store_true", help="skip the byte comparison")
    p.add_argument("--keep", action="store_true", help="keep the archive and its copy")
    p.add_argument(
        "--src", type=Path, default=None, help="the copier's package sources (another checkout)"
    )
    p.add_argument("--name", default=None, help="name of the JSON and plot (default: derived)")
    p.add_argument(
        "--turns",
        type=int,
        default=0,
        help="with $BENCH_BASELINE_SRC: that many runs of each, interleaved (baseline, this)",
    )
    p.add_argument(
        "--drain-only",
        action="store_true",
        help="with --turns: time only the drain after the marker of an archive copied already",
    )
    p.add_argument("--writer", metavar="SRC", help=argparse.SUPPRESS)
    p.add_argument("--drain-child", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.writer:
        return write(args.writer, args.geometry, args.timepoints, args.rate)
    if args.drain_child:
        return drain_child(*args.drain_child)
    if args.turns and args.drain_only:
        return drain_turns(args)
    if args.turns:
        return in_turns(args)
    import tempfile

    made = None if args.workdir else Path(tempfile.mkdtemp(prefix="softcopy-day-"))
    workdir = args.workdir or made / "run"
    result = run(
        workdir,
        args.geometry,
        args.timepoints,
        args.rate,
        watch_limit=args.watch_limit,
        compare=not args.no_compare,
        keep=args.keep,
        src_code=args.src,
        max_watches=args.max_watches,
        max_proofs=args.max_proofs,
    )
    if made is not None and not args.keep:
        shutil.rmtree(made, ignore_errors=True)
    name = args.name or f"day-{args.geometry}-{args.timepoints}" + (
        f"-limit{args.watch_limit}" if args.watch_limit else ""
    )
    dump(args.out / f"{name}.json", result)
    plot(result, args.out / f"{name}.png")
    brief = {k: v for k, v in result.items() if k not in ("samples", "per_timepoint_s")}
    print(json.dumps(brief, indent=1))
    return 0 if result["exit_code"] == 0 else 1


def drain_child(src: str, dst: str) -> int:
    """``--drain-child``: copy ``src`` (no marker yet) into ``dst`` with the code on the
    path, wait until it has caught up (nothing pending, a scan after the last copy, the hash
    journal idle; where the code proves folders, every folder proven), write the marker, and
    print
    the drain: from the marker to verified, as the engine and the wall clock see it."""
    from napari_softcopy.engine import CopyEngine, CopyOptions, Tuning

    cap = os.environ.get("BENCH_MAX_WATCHES")  # (``--max-watches``, from `drain_turns`)
    tuning = Tuning(max_watches=int(cap)) if cap else None
    e = CopyEngine(src, dst, CopyOptions(low_priority=False, rescan_interval=3600), tuning)
    e.start()
    started = time.monotonic()
    deadline = started + 1800

    def caught_up() -> bool:
        s = e.status()
        if s.scans < 1 or s.files_pending or s.state != "copying":
            return False
        # (the manifest's hash journal caught up too: both codes' manifests then hash alike)
        hashes = e._hashes
        if hashes is not None and not hashes._queue.empty():
            return False
        proofs = getattr(e, "_proofs", None)  # (the code before it has none)
        return proofs is None or proofs.counts[1] == 0

    while not caught_up():
        if time.monotonic() > deadline or e.state in ("failed", "stopped"):
            print(json.dumps({"error": e.status().message}))
            return 1
        time.sleep(0.2)
    marker = Path(src) / "complete"
    marker.write_text("")
    t0 = time.monotonic()
    ok = e.wait(1800)
    wall = time.monotonic() - t0
    s = e.status()
    marker.unlink()
    print(
        json.dumps(
            {
                "ok": ok,
                "drain_wall_s": round(wall, 3),
                "marker_to_verified_s": s.marker_to_verified_s,
                "verification": s.verification,
                "waited_before_marker_s": round(t0 - started, 3),
            }
        )
    )
    return 0 if ok else 1


def drain_turns(args) -> int:
    """``--turns N --drain-only``: the drain after the marker when the copy has caught up,
    the baseline (``$BENCH_BASELINE_SRC``) and this code in turns on one archive, written
    once (no marker). Each run copies it into a new destination (so its hash journal holds
    what it copied, as in a live run), waits until caught up, and writes the marker."""
    import statistics
    import tempfile

    baseline = os.environ.get("BENCH_BASELINE_SRC")
    if not baseline:
        sys.exit("--turns needs $BENCH_BASELINE_SRC (another checkout's src, e.g. git archive)")
    work = Path(tempfile.mkdtemp(prefix="softcopy-drain-"))
    src, dst = work / "acquisition.zarr", work / "copy.zarr"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    argv = [python(), "-m", "benchmarks.day", "--writer", str(src), "--geometry", args.geometry]
    subprocess.run([*argv, "--timepoints", str(args.timepoints)], cwd=REPO, env=env, check=True)
    (src / "complete").unlink()
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    try:
        for turn in range(args.turns):
            for label, code in (("baseline", Path(baseline)), ("this", args.src or REPO / "src")):
                shutil.rmtree(dst, ignore_errors=True)
                argv = [python(), "-m", "benchmarks.day", "--drain-child", str(src), str(dst)]
                maximum = str(args.max_watches or "")
                result = child_result(argv, code, check=False, BENCH_MAX_WATCHES=maximum)
                runs[label].append(result)
                print(f"turn {turn}: {label}: {json.dumps(result)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        label: {
            "drain_wall_s": [r.get("drain_wall_s") for r in rs],
            "drain_wall_s_median": statistics.median(r.get("drain_wall_s") or 0 for r in rs),
        }
        for label, rs in runs.items()
    }
    name = args.name or f"drain-{args.geometry}-{args.timepoints}-turns"
    dump(args.out / f"{name}.json", {"summary": summary, "runs": runs})
    print(json.dumps(summary, indent=1))
    return 0 if all(r.get("ok") for rs in runs.values() for r in rs) else 1


def in_turns(args) -> int:
    """``--turns N``: the baseline (``$BENCH_BASELINE_SRC``) and this code in turns, on the
    same machine in one invocation (the load changes over minutes); the drains side by side."""
    import statistics
    import tempfile

    baseline = os.environ.get("BENCH_BASELINE_SRC")
    if not baseline:
        sys.exit("--turns needs $BENCH_BASELINE_SRC (another checkout's src, e.g. git archive)")
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    for turn in range(args.turns):
        for label, code in (("baseline", Path(baseline)), ("this", args.src)):
            made = Path(tempfile.mkdtemp(prefix="softcopy-day-"))
            load = os.getloadavg()[0]
            result = run(
                made / "run",
                args.geometry,
                args.timepoints,
                args.rate,
                watch_limit=args.watch_limit,
                compare=not args.no_compare,
                src_code=code,
                max_watches=args.max_watches,
                max_proofs=args.max_proofs,
            )
            shutil.rmtree(made, ignore_errors=True)
            brief = {k: v for k, v in result.items() if k not in ("samples", "per_timepoint_s")}
            brief["load_1min_before"] = round(load, 2)
            runs[label].append(brief)
            print(
                f"turn {turn}: {label}: drain {result['drain_s']} s, marker to verified "
                f"{result['marker_to_verified_s']} s, exit {result['exit_code']}, "
                f"verification {result['verification']}, load {load:.1f}",
                flush=True,
            )
    summary = {
        label: {
            "drain_s": [r["drain_s"] for r in rs],
            "drain_s_median": statistics.median(r["drain_s"] or 0 for r in rs),
            "marker_to_verified_s": [r["marker_to_verified_s"] for r in rs],
        }
        for label, rs in runs.items()
    }
    name = args.name or f"day-{args.geometry}-{args.timepoints}-turns"
    dump(args.out / f"{name}.json", {"summary": summary, "runs": runs})
    print(json.dumps(summary, indent=1))
    ok = all(r["exit_code"] == 0 for rs in runs.values() for r in rs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

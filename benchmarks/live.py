"""Live mode: an acquisition written at its real rate while one copier follows it.

One run: the writer process starts; as soon as the archive's root metadata exists (``t0``)
the copier starts (``cp`` only when the marker appears). A sampler thread measures the
backlog (bytes at the source not yet at the destination) every 100 ms, and looks for the
first byte at the destination every 10 ms until it is there, until the marker is there and
the backlog is zero. The run ends when the copier exits; then the trees are compared byte for
byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .common import REPO, Measured, compare_trees, python, time_find
from .copiers import Copier
from .probe import TreeProbe


@dataclass(frozen=True)
class Workload:
    """A live workload: a simulate preset, shortened when quick."""

    name: str
    preset: str
    timepoints: int | None = None  # None: the preset's


WORKLOADS = {
    "lightsheet": Workload("lightsheet", "lightsheet"),
    "manyfiles": Workload("manyfiles", "manyfiles"),
    "sharded": Workload("sharded", "sharded"),
}
QUICK_TIMEPOINTS = {"lightsheet": 4, "manyfiles": 4, "sharded": 2}


class Sampler(threading.Thread):
    """Backlog every ``interval`` s, or less often when a sample costs more than a fifth of
    that in CPU (listing a 50,000-file folder twice takes ~60 ms): the sampler shares two
    cores with the writer and the copier. First byte every 10 ms until seen. Once the marker
    is there and the backlog is zero the sampler rests until `stop`: the copier then only
    verifies, and a sample of a 50,000-file archive (0.1 s of CPU) would compete with it."""

    def __init__(self, src: Path, dst: Path, t0: float, interval: float = 0.1) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.probe = TreeProbe(str(src), str(dst))
        self.marker = src / "complete"
        self.t0 = t0
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (t - t0, backlog, source bytes)
        self.first_byte_at: float | None = None
        self.cpu_s = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        cpu0 = time.thread_time()
        next_sample = time.time()
        while not self._stop_event.is_set():
            now = time.time()
            if self.first_byte_at is None and self.probe.first_byte():
                self.first_byte_at = now
            if now >= next_sample:
                cpu = time.thread_time()
                self._sample(now)
                cost = time.thread_time() - cpu
                next_sample = max(next_sample + self.interval, now + 5 * cost)
                if self.samples[-1][1] == 0 and self.marker.exists():
                    if self.first_byte_at is None and self.probe.first_byte():
                        self.first_byte_at = now  # (it came within this last interval)
                    break
            wait = 0.01 if self.first_byte_at is None else max(0.0, next_sample - time.time())
            self._stop_event.wait(wait)
        self._stop_event.wait()
        self._sample(time.time())
        self.cpu_s = time.thread_time() - cpu0

    def _sample(self, now: float) -> None:
        s = self.probe.sample()
        self.samples.append((round(now - self.t0, 3), s["backlog_bytes"], s["source_bytes"]))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _wait_for(predicate, timeout: float, poll: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def final_walk_alone(src: Path, dst: Path) -> dict:
    """After napari-softcopy's run: its final walk alone over the finished trees (what its
    drain cannot go below, whatever the copy's lag at the marker), and `find` stat-ing both
    trees (the same listing and stats in one C process, without the source stamps)."""
    try:
        out = subprocess.run(
            [python(), "-m", "benchmarks.walk_alone", str(src), str(dst)],
            cwd=REPO,
            capture_output=True,
            text=True,
            start_new_session=True,  # (its own scheduling group, lowered as the engine's is)
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        return {"walk_alone_error": "no result within 600 s"}
    if out.returncode:
        return {"walk_alone_error": out.stderr.strip().splitlines()[-1:]}
    return {
        "walk_alone_s": json.loads(out.stdout)["walk_s"],
        "find_stat_both_s": round(time_find(src, dst, stat=True), 3),
    }


def run_once(
    workload: Workload,
    copier: Copier | None,
    run_dir: Path,
    *,
    timepoints: int | None = None,
    timeout_after_marker: float = 120.0,
    trash=None,
) -> dict:
    """One live run (``copier`` None: the writer alone) in the new, empty ``run_dir``;
    ``trash(run_dir)`` is called at the end. Returns the run's measurements."""
    src, dst = run_dir / "acquisition.zarr", run_dir / "copy.zarr"
    env = dict(os.environ, NAPARI_SOFTCOPY_STATE_DIR=str(run_dir / "state"))
    argv = [python(), "-m", "benchmarks.writer", str(src), "--preset", workload.preset]
    tp = timepoints or workload.timepoints
    if tp:
        argv += ["--timepoints", str(tp)]
    # Earlier runs' dirty pages are not this run's to write: without this, the kernel's
    # writeback of the previous run's 300 MB (30 s after it was written) lands in this one.
    os.sync()
    writer = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, env=env)
    if not _wait_for(lambda: (src / "zarr.json").exists() or (src / ".zarray").exists(), 120):
        writer.kill()
        raise RuntimeError(f"the writer never created {src}")
    t0 = time.time()
    sampler = Sampler(src, dst, t0)
    sampler.start()
    child = None
    name = copier.name if copier else "writer-alone"
    if copier is not None and not copier.start_at_marker:
        child = Measured(copier.argv("live", str(src), str(dst)), run_dir / f"{name}.log", env)
    if copier is not None and copier.start_at_marker:
        _wait_for(lambda: (src / "complete").exists() or writer.poll() is not None, 3600, 0.01)
        child = Measured(copier.argv("live", str(src), str(dst)), run_dir / f"{name}.log", env)
    out, _ = writer.communicate()
    report = json.loads(out.decode().strip().splitlines()[-1])
    marker_at = report["marker_at"]
    outcome = child.result(timeout=timeout_after_marker) if child is not None else None
    sampler.stop()
    result: dict = {
        "workload": workload.name,
        "copier": name,
        "timepoints": report["timepoints"],
        "files": report["files"],
        "bytes": report["bytes"],
        "write_busy_s": round(report["write_busy_s"], 4),
        "writer_cpu_s": report.get("cpu_s"),
        "writer_runqueue_wait_s": report.get("runqueue_wait_s"),
        "acquisition_s": round(marker_at - t0, 3),
        "sampler_cpu_s": round(sampler.cpu_s, 3),
        "sample_interval_s": round(
            (sampler.samples[-1][0] - sampler.samples[0][0]) / max(1, len(sampler.samples) - 1),
            3,
        )
        if len(sampler.samples) > 1
        else None,
    }
    if outcome is not None:
        during = [b for t, b, _ in sampler.samples if t <= marker_at - t0]
        result.update(
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            drain_s=None if outcome.ended_at is None else round(outcome.ended_at - marker_at, 3),
            first_byte_s=(
                None if sampler.first_byte_at is None else round(sampler.first_byte_at - t0, 3)
            ),
            max_backlog_bytes=max(during, default=0),
            cpu_s=round(outcome.cpu_s, 3),
            peak_rss_bytes=outcome.peak_rss,
            max_rss_one_bytes=outcome.max_rss_one,
            processes=outcome.processes,
            correctness=compare_trees(src, dst),
            backlog=[(t, b) for t, b, _ in sampler.samples],
        )
        if name == "ours" and outcome.exit_code == 0:
            result.update(final_walk_alone(src, dst))
    if trash is not None:
        trash(run_dir)
    return result

"""Scale mode: an archive of a million small files, written directly (not live).

The layout is a real Zarr v3 one: ``zarr.json`` at the root and chunk files ``c/t/z/y/x`` of
a uint16 array (250, 64, 2048, 2048) in chunks (1, 16, 64, 64), 32 files per leaf directory.
Chunk files hold a few hundred bytes each (random bytes: nothing here decodes them).

Measured: ``find`` over the source (warm, the second of two runs); a full copy with
napari-softcopy (wall, CPU, peak RSS of its process tree); then a run over the fully copied
destination, whose scans (read from the status file) are the resume scan (a first scan
longer than 0.25 s shares its walk with a helper process: `scan_walk`).

With ``$BENCH_BASELINE_SRC`` (another checkout's ``src``), the baseline copies the same source
to a destination of its own, and the two resume scans are measured in turns (ours, baseline,
ours, baseline), so the before/after comparison shares one machine state.
"""

from __future__ import annotations

import json
import os
import random
import time

from .common import Measured, compare_trees, time_find
from .copiers import BASELINE_SRC, ours_executable

FULL_GRID = (250, 4, 32, 32)  # 1,048,576 chunk files
QUICK_GRID = (5, 4, 32, 32)  # 20,480
CHUNK = (1, 16, 64, 64)


def generate(root, grid: tuple[int, int, int, int], seed: int = 0) -> int:
    """Write the archive; return the number of files."""
    rng = random.Random(seed)
    shape = [g * c for g, c in zip(grid, CHUNK, strict=True)]
    root.mkdir(parents=True)
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": "uint16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNK)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
        ],
        "dimension_names": ["t", "z", "y", "x"],
    }
    (root / "zarr.json").write_text(json.dumps(meta, indent=2))
    pool = os.urandom(1 << 16)
    n = 1
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for t in range(grid[0]):
        for z in range(grid[1]):
            for y in range(grid[2]):
                leaf = root / "c" / str(t) / str(z) / str(y)
                leaf.mkdir(parents=True)
                dfd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    for x in range(grid[3]):
                        size = rng.randrange(200, 700)
                        start = rng.randrange(0, len(pool) - size)
                        fd = os.open(str(x), flags, 0o644, dir_fd=dfd)
                        os.write(fd, pool[start : start + size])
                        os.close(fd)
                        n += 1
                finally:
                    os.close(dfd)
    with open(root / "complete", "w") as f:
        f.write("complete\n")
    return n + 1


def _ours(src, dst, run_dir, name: str, status_file, pythonpath: str = ""):
    env = dict(os.environ, NAPARI_SOFTCOPY_STATE_DIR=str(run_dir / "state"))
    if pythonpath:  # (the baseline: another checkout's code under the same script)
        env["PYTHONPATH"] = pythonpath
    argv = [ours_executable(), "copy", str(src), str(dst), "--status-file", str(status_file)]
    return Measured(argv, run_dir / f"{name}.log", env)


def _scans(child: Measured, status_file) -> list[float]:
    """Poll the status file while ``child`` runs: every scan's duration, in order."""
    seen: dict[int, float] = {}

    def look() -> None:
        try:
            s = json.loads(status_file.read_text())
        except (OSError, ValueError):
            return
        if s.get("scans"):
            seen.setdefault(s["scans"], s["last_scan_s"])

    while child.running():
        look()
        time.sleep(0.05)
    look()  # the last status, written as the engine ended
    return [seen[k] for k in sorted(seen)]


def run(workdir, *, quick: bool = False, check: bool = True, log=print) -> dict:
    """Generate, copy, resume; return the measurements."""
    grid = QUICK_GRID if quick else FULL_GRID
    run_dir = workdir.fresh("scale")
    src, dst = run_dir / "acquisition.zarr", run_dir / "copy.zarr"
    t = time.perf_counter()
    files = generate(src, grid)
    os.sync()
    log(f"  generated {files:,} files in {time.perf_counter() - t:.0f} s")
    find_s = time_find(src)
    status = run_dir / "copy-status.json"
    child = _ours(src, dst, run_dir, "copy", status)
    copy = child.result(timeout=7200)
    log(
        f"  full copy: {copy.wall_s or float('nan'):.1f} s, "
        f"peak RSS {copy.peak_rss / 2**20:.0f} MiB"
    )
    correct = compare_trees(src, dst) if check else None
    os.sync()
    time_find(src)  # the same warm cache for the resume as for find
    status2 = run_dir / "resume-status.json"
    child = _ours(src, dst, run_dir, "resume", status2)
    scans = _scans(child, status2)
    resume = child.result(timeout=3600)
    find_s = min(find_s, time_find(src))
    find_stat_s = time_find(src, stat=True)
    find_stat_both_s = time_find(src, dst, stat=True)
    out = {
        "files": files,
        "find_s": round(find_s, 3),
        "find_stat_s": round(find_stat_s, 3),
        "find_stat_both_s": round(find_stat_both_s, 3),
        "copy_wall_s": None if copy.wall_s is None else round(copy.wall_s, 2),
        "copy_cpu_s": round(copy.cpu_s, 2),
        "copy_peak_rss_bytes": copy.peak_rss,
        "copy_exit_code": copy.exit_code,
        "correctness": correct,
        "resume_scans_s": scans,
        "resume_scan_s": scans[0] if scans else None,
        # (the goal of issue 22: at most 7x `find` over the source)
        "resume_scan_over_find": round(scans[0] / find_s, 2) if scans and find_s else None,
        "resume_wall_s": None if resume.wall_s is None else round(resume.wall_s, 2),
        "resume_peak_rss_bytes": resume.peak_rss,
        "resume_exit_code": resume.exit_code,
    }
    if BASELINE_SRC:
        out["baseline"] = _baseline(src, run_dir, log)
        out["ours_resume_scans_in_turn_s"] = out["baseline"].pop("ours_scans")
    workdir.trash(run_dir)
    return out


def _baseline(src, run_dir, log) -> dict:
    """The baseline's full copy, then its resume scans in turn with ours (two rounds)."""
    dst = run_dir / "copy-baseline.zarr"
    copy = _ours(src, dst, run_dir, "baseline-copy", run_dir / "b.json", BASELINE_SRC).result(
        timeout=7200
    )
    log(f"  baseline full copy: {copy.wall_s or float('nan'):.1f} s")
    ours_scans, base_scans, walls = [], [], []
    for round_ in range(2):
        for who, target, path in (
            ("ours", run_dir / "copy.zarr", ""),
            ("baseline", dst, BASELINE_SRC),
        ):
            time_find(src)  # the same warm cache for both
            status = run_dir / f"{who}-resume-{round_}.json"
            child = _ours(src, target, run_dir, f"{who}-resume-{round_}", status, path)
            scans = _scans(child, status)
            result = child.result(timeout=3600)
            first = scans[0] if scans else None
            (ours_scans if who == "ours" else base_scans).append(first)
            if who == "baseline":
                walls.append(None if result.wall_s is None else round(result.wall_s, 2))
            log(f"  resume scan, {who}, round {round_ + 1}: {first} s")
    return {
        "copy_wall_s": None if copy.wall_s is None else round(copy.wall_s, 2),
        "copy_cpu_s": round(copy.cpu_s, 2),
        "copy_peak_rss_bytes": copy.peak_rss,
        "copy_exit_code": copy.exit_code,
        "resume_scans_s": base_scans,
        "resume_wall_s": walls,
        "ours_scans": ours_scans,
    }

"""The two-tree walks alone, two versions of the package side by side in one invocation.

``python -m benchmarks.walks SRC_DIR_BEFORE SRC_DIR_AFTER [--workdir DIR] [--repeat 5]``

Each ``SRC_DIR`` is a ``src`` folder holding a ``napari_softcopy`` package (say, one from
``git archive``). Over two finished trees of about 50,000 files and their exact copies (with
the source stamps the engine records), one nested as a light-sheet archive (32 files a
folder) and one flat (50,000 files in one folder), it times, warm, in a fresh process each:

- ``verify``: `verify.verify_tree` with the stamps, in one process and split in two;
- ``chunkmap``: `chunkmap.compute_chunk_map` of the array;
- ``scan``: the engine's resume scan over the finished copy.

Each figure is the fastest (and the median) of ``--repeat`` runs, alternating the two
versions, wall and CPU time (a split walk's helper included); its memory is the peak of the
Python heap during one more run (``tracemalloc``: the walk's allocations and its imports) and
the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from .scale import generate as generate_nested

NESTED_GRID = (49, 1, 32, 32)  # 50,176 chunk files in 1,568 folders
FLAT_GRID = (25, 20, 10, 10)  # 50,000 chunk files in one folder (the manyfiles preset)
CHUNK = (1, 1, 64, 64)
WHAT = ("verify", "verify-2", "chunkmap", "scan")


def generate_flat(root: Path) -> int:
    """A Zarr v2 array with ``.`` keys: every chunk file in the root folder."""
    root.mkdir(parents=True)
    meta = {
        "zarr_format": 2,
        "shape": [g * c for g, c in zip(FLAT_GRID, CHUNK, strict=True)],
        "chunks": list(CHUNK),
        "dtype": "<u2",
        "compressor": None,
        "fill_value": 0,
        "order": "C",
        "filters": None,
        "dimension_separator": ".",
    }
    (root / ".zarray").write_text(json.dumps(meta))
    pool = os.urandom(1 << 16)
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    n = 0
    try:
        for t in range(FLAT_GRID[0]):
            for z in range(FLAT_GRID[1]):
                for y in range(FLAT_GRID[2]):
                    for x in range(FLAT_GRID[3]):
                        fd = os.open(f"{t}.{z}.{y}.{x}", os.O_WRONLY | os.O_CREAT, dir_fd=dfd)
                        os.write(fd, pool[n % 4096 : n % 4096 + 300 + n % 400])
                        os.close(fd)
                        n += 1
    finally:
        os.close(dfd)
    return n + 1


def copy_with_stamps(src: Path, dst: Path) -> None:
    """An exact copy, as the engine leaves it: mtimes kept, the source stamp recorded."""
    for folder, _dirs, files in os.walk(src):
        out = dst / os.path.relpath(folder, src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            s, d = os.path.join(folder, name), out / name
            shutil.copyfile(s, d)
            st = os.lstat(s)
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.setxattr(d, "user.softcopy.source", f"{st.st_ino}:{st.st_ctime_ns}".encode())


def _walk(what: str, src: str, dst: str) -> int:
    """One walk of the package on ``sys.path``; returns the files it saw."""
    if what.startswith("verify"):
        from napari_softcopy.verify import verify_tree

        processes = 2 if what == "verify-2" else 1
        report = verify_tree(src, dst, stamps=True, processes=processes)
        assert report.ok, report.summary()
        return report.files_checked
    if what == "chunkmap":
        from napari_softcopy.chunkmap import COPIED, compute_chunk_map

        cmap = compute_chunk_map(src, dst, finished=True)
        assert set(cmap.counts) == {COPIED}, cmap.counts
        return cmap.counts[COPIED]
    from napari_softcopy import CopyEngine, CopyOptions
    from napari_softcopy.destinations import LocalDestination

    engine = CopyEngine(src, dst, CopyOptions())
    engine._dest = LocalDestination(dst, create=False)
    engine._src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    engine._scan(initial=True)
    status = engine.status()
    assert status.files_pending == 0, status
    return status.files_at_destination


def _cpu_s() -> float:
    """CPU time of this process and of its ended children (a split walk's helper)."""
    mine, theirs = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return mine.ru_utime + mine.ru_stime + theirs.ru_utime + theirs.ru_stime


def measure(what: str, src: str, dst: str, memory: bool) -> dict:
    """Time one walk (or, with ``memory``, its heap peak)."""
    if memory:
        tracemalloc.start()
    cpu, began = _cpu_s(), time.perf_counter()
    files = _walk(what, src, dst)
    took, cpu = time.perf_counter() - began, _cpu_s() - cpu
    out = {"files": files, "s": took, "cpu_s": cpu}
    if memory:
        out["heap_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    out["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _run(src_dir: str, what: str, tree: Path, memory: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src_dir))
    argv = [sys.executable, "-m", "benchmarks.walks", "--one", what]
    argv += [str(tree / "src"), str(tree / "dst")] + (["--memory"] if memory else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{what} with {src_dir}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.walks", description=__doc__)
    p.add_argument("versions", nargs="*", help="src folders: before, after")
    p.add_argument("--workdir", default="/var/tmp")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--what", default=",".join(WHAT))
    p.add_argument("--trees", default="nested,flat")
    p.add_argument(
        "--nested-grid",
        default=",".join(map(str, NESTED_GRID)),
        help="t,z,y,x chunk files of the nested tree (32 files a folder: x = 32)",
    )
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        src, dst = args.versions
        print(json.dumps(measure(args.one, src, dst, args.memory)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="walks-", dir=args.workdir))
    try:
        grid = tuple(int(g) for g in args.nested_grid.split(","))
        trees = {"nested": work / "nested", "flat": work / "flat"}
        trees = {k: v for k, v in trees.items() if k in args.trees.split(",")}
        if "nested" in trees:
            generate_nested(trees["nested"] / "src", grid)
        if "flat" in trees:
            generate_flat(trees["flat"] / "src")
        for tree in trees.values():
            copy_with_stamps(tree / "src", tree / "dst")
        rows = []
        for shape, tree in trees.items():
            for what in args.what.split(","):
                runs: dict[str, list[dict]] = {v: [] for v in args.versions}
                for _ in range(args.repeat):
                    for version in args.versions:
                        runs[version].append(_run(version, what, tree, memory=False))
                for version in args.versions:
                    mem = _run(version, what, tree, memory=True)
                    rs = runs[version]
                    row = {"tree": shape, "walk": what, "version": version, "files": rs[0]["files"]}
                    row |= {
                        "s": min(r["s"] for r in rs),
                        "s_median": statistics.median(r["s"] for r in rs),
                        "cpu_s": min(r["cpu_s"] for r in rs),
                        "max_rss_mib": max(r["max_rss_mib"] for r in rs),
                        "heap_peak_mib": mem["heap_peak_mib"],
                    }
                    rows.append(row)
                    print(
                        f"{shape:7} {what:9} {version:24.24} {row['files']:>7,} files  "
                        f"wall {row['s']:6.3f} s (median {row['s_median']:6.3f})  "
                        f"CPU {row['cpu_s']:6.3f} s  heap peak {row['heap_peak_mib']:5.1f} MiB  "
                        f"max RSS {row['max_rss_mib']:5.1f} MiB",
                        flush=True,
                    )
        print(json.dumps(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

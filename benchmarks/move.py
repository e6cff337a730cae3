"""Freeing the source (issue 21): the time from the acquisition's marker to "source freed",
and the manifest's cost relative to the copy, on the light-sheet archive.

``python -m benchmarks.move [--reps N] [--workdir DIR]``

Live: the light-sheet preset is written at its real rate (tensorstore) while an engine with
``move=True`` copies it; the status gives the marker to "verified" (which includes the
manifest) and to "freed"; the manifest's own time comes from its log line. Bulk: the
finished archive copied into a new folder (the copy's time), then its manifest built again
from the copy alone (every file read back with its cache dropped): the manifest's cost
relative to the copy. Results go to ``benchmarks/results/move.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.destinations import LocalDestination
from napari_softcopy.manifest import build_manifest
from napari_softcopy.options import DEFAULT_MARKER
from napari_softcopy.simulate import simulate

from .common import live_acquisition

RESULTS = Path(__file__).parent / "results" / "move.json"


def live_once(workdir: Path) -> dict:
    src, dst = workdir / "acq.zarr", workdir / "copy.zarr"
    with live_acquisition(src, "lightsheet") as manifest_log:
        engine = CopyEngine(src, dst, CopyOptions(move=True))
        t0 = time.monotonic()
        engine.start()
        assert engine.wait(600), "the copy did not end"
    manifest_s = manifest_log.search(r"hashed in ([0-9.]+) s")
    status = engine.status()
    freed = status.freed or {}
    assert status.state == "verified" and freed.get("refused") is None, status.message
    assert os.listdir(src) == [], "the source is not empty"
    return {
        "elapsed_s": round(time.monotonic() - t0, 2),
        "bytes": freed["bytes_freed"],
        "files": freed["files_freed"],
        "marker_to_verified_s": status.marker_to_verified_s,
        "manifest_s": float(manifest_s.group(1)) if manifest_s else None,
        "marker_to_freed_s": freed["marker_to_freed_s"],
        "freeing_s": freed["seconds"],
        "freeing_check_s": freed.get("check_s"),
    }


def bulk_once(workdir: Path) -> dict:
    src, dst = workdir / "acq.zarr", workdir / "copy.zarr"
    simulate(src, "lightsheet", rate=float("inf"))
    os.sync()
    t0 = time.monotonic()
    engine = CopyEngine(src, dst, CopyOptions(finish_when_idle=0.5))
    engine.start()
    assert engine.wait(600) and engine.status().state == "verified"
    copy_s = time.monotonic() - t0
    os.sync()
    dest = LocalDestination(dst, create=False)
    try:
        t0 = time.monotonic()
        manifest = build_manifest(dest, source=str(src), marker=DEFAULT_MARKER)
        manifest_s = time.monotonic() - t0
    finally:
        dest.close()
    return {
        "copy_s": round(copy_s, 3),
        "manifest_s": round(manifest_s, 3),
        "manifest_of_copy": round(manifest_s / copy_s, 3),
        "files": len(manifest.entries),
        "bytes": manifest.bytes,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    results: dict = {"live": [], "bulk": [], "loadavg": os.getloadavg(), "cpus": os.cpu_count()}
    for kind, run in (("live", live_once), ("bulk", bulk_once)):
        for _ in range(args.reps):
            workdir = Path(tempfile.mkdtemp(prefix=f"softcopy-move-{kind}-", dir=args.workdir))
            try:
                results[kind].append(run(workdir))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            print(kind, json.dumps(results[kind][-1]), flush=True)
    for kind in ("live", "bulk"):
        keys = [k for k, v in results[kind][0].items() if isinstance(v, (int, float))]
        results[f"{kind}_median"] = {
            k: statistics.median(r[k] for r in results[kind] if r[k] is not None) for k in keys
        }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results[k] for k in ("live_median", "bulk_median")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

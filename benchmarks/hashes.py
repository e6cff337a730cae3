"""The manifest's hashes during the copy (issue 21 follow-up): the acquisition's marker to
"verified" on the light-sheet archive with the hash journal (`Tuning.hash_during_copy`)
against without it (every file read back and hashed at the finish), in one invocation,
alternating, so that both see the same machine.

``python -m benchmarks.hashes [--reps N] [--workdir DIR]``

``python -m benchmarks.hashes --finish-parts FILES [--reps N]``: the finish's two parts after
the marker on a finished copy of about FILES small chunk files (the many-files geometry of
`benchmarks.scale`), every hash already in the journal: the verification walk (split in two
processes, as the engine's at this size), then the manifest, made from a second walk of the
destination (as before 0.4) or from the verification's own listing, in turns.

Each run: the light-sheet preset written at its real rate (tensorstore) while an engine at
its default idle priority copies it; the status gives the marker to "verified", the
manifest's log line its own time and how many files it hashed. The engine's process CPU time
per run is reported too (the hasher's cost during the copy). Results go to
``benchmarks/results/hashes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.engine import Tuning

from .common import live_acquisition

RESULTS = Path(__file__).parent / "results" / "hashes.json"
_LINE = re.compile(
    r"manifest of (\d+) files.*: (\d+) hashes from the copy's journal, (\d+) files .* "
    r"hashed in ([0-9.]+) s"
)


def once(workdir: Path, journal: bool) -> dict:
    src, dst = workdir / "acq.zarr", workdir / "copy.zarr"
    with live_acquisition(src, "lightsheet") as manifest_log:
        engine = CopyEngine(src, dst, CopyOptions(), Tuning(hash_during_copy=journal))
        cpu0 = time.process_time()
        engine.start()
        assert engine.wait(600), "the copy did not end"
    status = engine.status()
    assert status.state == "verified", status.message
    line = manifest_log.search(_LINE)
    assert line is not None, manifest_log.lines
    files, from_journal, hashed, seconds = line.groups()
    return {
        "journal": journal,
        "marker_to_verified_s": status.marker_to_verified_s,
        "manifest_s": float(seconds),
        "files": int(files),
        "from_journal": int(from_journal),
        "hashed_at_finish": int(hashed),
        "process_cpu_s": round(time.process_time() - cpu0, 2),
        "loadavg_1m": os.getloadavg()[0],
    }


def finish_parts(workdir: Path, files: int, reps: int) -> dict:
    """The verification and the manifest of a finished copy of ``files`` files, with the
    manifest walking the destination again or taking the verification's listing, in turns."""
    import subprocess

    from napari_softcopy.assembly import assemble
    from napari_softcopy.destinations import LocalDestination
    from napari_softcopy.hashes import HashJournal
    from napari_softcopy.verify import start_helpers, verify_tree

    from .scale import generate

    src, dst = workdir / "acq.zarr", workdir / "copy.zarr"
    n = generate(src, (max(1, files // 4096), 4, 32, 32))
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    dest = LocalDestination(dst)
    journal = HashJournal(dest, low_priority=False)  # (every file's hash, as after a copy)
    for root, _dirs, names in os.walk(dst):
        for name in names:
            path = Path(root, name)
            st = path.stat()
            journal._hash(path.relative_to(dst).as_posix(), st.st_size, st.st_mtime_ns, 1)
    journal._flush_locked()
    runs = []
    for _ in range(reps):
        for mode in ("walk", "listing"):
            helpers = start_helpers(1)
            t0 = time.monotonic()
            report = verify_tree(src, dst, stamps=True, helpers=helpers, listing=mode == "listing")
            t1 = time.monotonic()
            done = assemble(
                dest, source=str(src), marker=None, journal=journal, listing=report.listing
            )
            t2 = time.monotonic()
            assert report.ok and done.files == n and done.hashed == 0, (report.summary(), done)
            if report.listing is not None:
                report.listing.discard()
            runs.append(
                {
                    "manifest_from": mode,
                    "verify_s": round(t1 - t0, 3),
                    "manifest_s": round(t2 - t1, 3),
                    "total_s": round(t2 - t0, 3),
                    "loadavg_1m": os.getloadavg()[0],
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    journal.discard()
    dest.close()
    out: dict = {"files": n, "runs": runs}
    for mode in ("walk", "listing"):
        mine = [r for r in runs if r["manifest_from"] == mode]
        out[f"median_{mode}"] = {
            k: statistics.median(r[k] for r in mine) for k in ("verify_s", "manifest_s", "total_s")
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--finish-parts", type=int, metavar="FILES", default=None)
    args = p.parse_args(argv)
    if args.finish_parts:
        workdir = Path(tempfile.mkdtemp(prefix="softcopy-finish-", dir=args.workdir))
        try:
            result = finish_parts(workdir, args.finish_parts, args.reps)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        path = RESULTS.with_name("finish-parts.json")
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
        return 0
    results: dict = {"runs": [], "cpus": os.cpu_count()}
    for _ in range(args.reps):
        for journal in (False, True):
            workdir = Path(tempfile.mkdtemp(prefix="softcopy-hashes-", dir=args.workdir))
            try:
                results["runs"].append(once(workdir, journal))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            print(json.dumps(results["runs"][-1]), flush=True)
    for journal in (False, True):
        runs = [r for r in results["runs"] if r["journal"] == journal]
        results["median_with" if journal else "median_without"] = {
            k: statistics.median(r[k] for r in runs)
            for k in ("marker_to_verified_s", "manifest_s", "hashed_at_finish", "process_cpu_s")
        }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results[k] for k in ("median_without", "median_with")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

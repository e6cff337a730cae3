"""The manifest's hashes during the copy (issue 21 follow-up): the acquisition's marker to
"verified" on the light-sheet archive with the hash journal (`Tuning.hash_during_copy`)
against without it (every file read back and hashed at the finish), in one invocation,
alternating, so that both see the same machine.

``python -m benchmarks.hashes [--reps N] [--workdir DIR]``

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
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

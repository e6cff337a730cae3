"""CPU of a copy counted in instructions, which the machine's load does not change.

    python -m benchmarks.instructions before=/tmp/old/src after=src --files 2000 6000

Each ``NAME=SRC`` is a version of the code (a ``src`` folder: ``git archive <commit> src``).
For each archive size (a finished many-files archive, 2,000 chunk files per timepoint), each
version copies it once with ``napari-softcopy copy SRC DST --normal-priority`` under
``valgrind --tool=callgrind --trace-children=yes``, the versions in turn; the instructions of
every process (the engine, its copy helper and walk helpers) are summed. With two sizes or
more, the instructions per file between the smallest and the largest are printed too: the
per-file cost without the fixed cost of the start (imports, the probe). Slow (valgrind runs
Python about 50 times slower): a few thousand files is enough. Wall times on a shared,
loaded machine are the scheduler's; instruction counts are not, but they are not fixed
either: the engine's timed loops (the status writer, the polls, the 0.25 s after which a
scan starts a helper) run many more times under valgrind, and which helper processes start
depends on timing, so the same code's per-file figure moved by 2x between two runs
(benchmarks/notes.md, item 46). Compare versions in one run, and read large gaps only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .common import REPO, python

_COPY = "from napari_softcopy.cli import console_main; console_main()"


def _archive(folder: Path, files: int) -> Path:
    """A finished many-files archive of about ``files`` chunk files (2,000 a timepoint)."""
    src = folder / f"src-{files}.zarr"
    code = (
        "import sys; from napari_softcopy.simulate import simulate; "
        "simulate(sys.argv[1], 'manyfiles', rate=1e9, timepoints=int(sys.argv[2]))"
    )
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    timepoints = str(max(1, files // 2000))
    subprocess.run([python(), "-c", code, str(src), timepoints], env=env, check=True)
    return src


def count(src: Path, code: str, work: Path) -> int:
    """Instructions of every process of one copy of ``src`` by the code in ``code``."""
    out = Path(tempfile.mkdtemp(prefix="callgrind-", dir=work))
    dst = work / "copy.zarr"
    shutil.rmtree(dst, ignore_errors=True)
    command = ["valgrind", "--tool=callgrind", "--trace-children=yes"]
    command += [f"--callgrind-out-file={out}/cg.%p", python(), "-c", _COPY]
    command += ["copy", str(src), str(dst), "--normal-priority"]
    env = os.environ | {"PYTHONPATH": code}
    subprocess.run(command, env=env, check=True, capture_output=True)
    total = 0
    for f in out.iterdir():
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("summary:"):
                total += int(line.split()[1])
                break
    shutil.rmtree(out)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="+", help="NAME=SRC folder of each version")
    parser.add_argument("--files", type=int, nargs="+", default=[2000, 6000])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    versions = dict(v.split("=", 1) for v in args.versions)
    work = Path(tempfile.mkdtemp(prefix="softcopy-instructions-", dir=args.workdir))
    results: dict[str, dict[int, int]] = {name: {} for name in versions}
    try:
        for files in sorted(args.files):
            src = _archive(work, files)
            n = sum(len(names) for _, _, names in os.walk(src))
            for name, code in versions.items():
                results[name][n] = count(src, str(Path(code).resolve()), work)
                print(f"{name:>10} {n:>8} files {results[name][n] / 1e9:8.2f} G", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, by_files in results.items():
        (small, a), (large, b) = min(by_files.items()), max(by_files.items())
        if large > small:
            print(f"{name:>10} {(b - a) / (large - small) / 1e3:8.0f} k instructions a file")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

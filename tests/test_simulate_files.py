"""`simulate` writes the same files, byte for byte, for every preset and both writers.

The expected digests in ``data/simulate_files.json`` were made once from the simulator as it
was before it became a package (one module of 1,090 lines), so a restructuring that changes a
single byte of metadata or chunk data fails here. Every preset runs with a small shape (odd y
and x, so the pyramid's edge repetition and the edge chunks are covered) and two timepoints;
one preset also grows its time axis as it goes (array metadata rewritten during the run).

Compressed bytes depend on the codec libraries' versions (and the data on numpy's), so the
digests hold only with the versions they were made with (recorded in the file); with others
the test is skipped, saying so. To record new digests after an *intended* change to what
`simulate` writes: ``python tests/test_simulate_files.py`` (then review the diff).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from napari_softcopy.simulate import PRESETS, simulate

EXPECTED = Path(__file__).parent / "data" / "simulate_files.json"
METADATA = {".zarray", ".zattrs", ".zgroup", "zarr.json"}
LIBRARIES = ("numpy", "numcodecs", "zarr", "tensorstore")
WRITERS = ("tensorstore", "zarr-python")


def _small_shape(ndim: int) -> tuple[int, ...]:
    return {3: (2, 45, 38), 4: (2, 8, 45, 38), 5: (2, 2, 8, 45, 38)}[ndim]


def _cases() -> list[tuple[str, str, str, bool]]:
    """``(case id, preset, writer, grow)`` of every run compared."""
    cases = [(f"{p}/{w}", p, w, False) for p in PRESETS for w in WRITERS]
    cases += [(f"sharded/{w}/grow", "sharded", w, True) for w in WRITERS]
    return cases


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def _write(root: Path, preset: str, writer: str, grow: bool) -> dict:
    """Run ``simulate`` and summarize the tree: each metadata file's digest, one for the chunks."""
    report = simulate(
        root,
        preset,
        writer=writer,
        shape=_small_shape(len(PRESETS[preset].shape)),
        rate=float("inf"),
        grow=grow,
        seed=7,
    )
    assert report.completed
    metadata: dict[str, str] = {}
    chunks = hashlib.sha256()
    n_chunks = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.name in METADATA or rel == "complete":
            metadata[rel] = _digest(path.read_bytes())
        else:
            chunks.update(f"{rel}\0{_digest(path.read_bytes())}\n".encode())
            n_chunks += 1
    return {"metadata": metadata, "chunk_files": n_chunks, "chunks": chunks.hexdigest()[:20]}


def _versions() -> dict[str, str]:
    return {name: version(name) for name in LIBRARIES}


def _expected() -> dict:
    return json.loads(EXPECTED.read_text())


@pytest.mark.parametrize(
    ("case", "preset", "writer", "grow"), _cases(), ids=[c[0] for c in _cases()]
)
def test_simulate_writes_the_same_files(
    tmp_path: Path, case: str, preset: str, writer: str, grow: bool
) -> None:
    expected = _expected()
    if expected["versions"] != _versions():
        pytest.skip(f"digests made with {expected['versions']}, running {_versions()}")
    got = _write(tmp_path / "acq.zarr", preset, writer, grow)
    want = expected["cases"][case]
    assert got["metadata"].keys() == want["metadata"].keys()
    changed = [rel for rel, digest in got["metadata"].items() if want["metadata"][rel] != digest]
    assert changed == [], f"metadata files differ: {changed}"
    assert got["chunk_files"] == want["chunk_files"]
    assert got["chunks"] == want["chunks"], "chunk files differ (names or bytes)"


def test_every_case_has_expected_digests() -> None:
    assert sorted(_expected()["cases"]) == sorted(c[0] for c in _cases())


if __name__ == "__main__":  # records the digests: only after an intended change of the files
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = {"versions": _versions(), "cases": {}}
        for case, preset, writer, grow in _cases():
            out["cases"][case] = _write(Path(tmp) / case.replace("/", "_"), preset, writer, grow)
    EXPECTED.parent.mkdir(exist_ok=True)
    EXPECTED.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {EXPECTED} ({os.path.getsize(EXPECTED)} bytes)", file=sys.stderr)

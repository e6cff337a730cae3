"""Reading an S3 copy for display: zarr-python's ``ObjectStore`` over obstore against
tensorstore's ``s3`` kvstore, the two readers `archive_store.S3Archive` can use, on the tests'
SeaweedFS (127.0.0.1, free ports, stopped at the end).

    python -m benchmarks.s3_read [--rounds 7] [--json FILE]

One array (uint16, 4 x 32 x 1024 x 1024, chunks 1 x 16 x 256 x 256 zstd: 2 MiB each, the
shape of a light-sheet archive's) is written once; then, interleaved (A B A B ...: the
machine is shared), each reader: opens the array (metadata only, what opening a layer
costs), reads one chunk, and reads one z plane (16 chunks, what napari shows). Medians of
the rounds and the ratio tensorstore / zarr-python are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import REPO
from .s3 import server_store

sys.path.insert(0, str(REPO / "tests"))
from s3_server import SeaweedS3

SHAPE = (4, 32, 1024, 1024)
CHUNKS = (1, 16, 256, 256)
READERS = ("zarr", "tensorstore")


def _write(server: SeaweedS3, prefix: str) -> None:
    import zarr
    from zarr.storage import ObjectStore

    store = server_store(server, prefix)
    z = zarr.create_array(
        ObjectStore(store), name="0", shape=SHAPE, chunks=CHUNKS, dtype="uint16", fill_value=0
    )
    rng = np.random.default_rng(0)
    for t in range(SHAPE[0]):  # camera-like: a smooth image plus noise
        base = rng.poisson(100, size=SHAPE[1:]).astype(np.uint16)
        z[t] = base


def _one(reader: str, url: str) -> dict[str, float]:
    from napari_softcopy import archive_store

    archive_store._s3_archive.cache_clear()  # (a new client: as the first opening pays)
    store = archive_store.open_store(url)
    opener = store._open_zarr if reader == "zarr" else store._open_tensorstore
    t0 = time.perf_counter()
    result = opener("0")
    array = result[0] if isinstance(result, tuple) else result
    t1 = time.perf_counter()
    chunk = array[1, 0:16, 0:256, 0:256]
    t2 = time.perf_counter()
    plane = array[2, 5, :, :]
    t3 = time.perf_counter()
    assert np.asarray(chunk).shape == (16, 256, 256) and np.asarray(plane).shape == SHAPE[2:]
    return {"open": t1 - t0, "chunk": t2 - t1, "plane": t3 - t2}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    raw = REPO / "benchmarks" / "results" / "raw"  # (not committed: .gitignore)
    raw.mkdir(parents=True, exist_ok=True)
    server = SeaweedS3(Path(tempfile.mkdtemp(prefix="s3read-", dir=raw)) / "seaweed")
    server.start()
    results: dict[str, list[dict]] = {r: [] for r in READERS}
    try:
        os.environ.update(server.env())
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(name, None)
        os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
        _write(server, "bench/read.zarr")
        url = "s3://softcopy/bench/read.zarr"
        for reader in READERS:  # (a first, unmeasured read of each: both start warm)
            _one(reader, url)
        for i in range(args.rounds):
            order = READERS if i % 2 == 0 else READERS[::-1]
            for reader in order:
                results[reader].append(_one(reader, url))
    finally:
        server.stop()
    summary = {
        reader: {k: statistics.median(r[k] for r in rows) for k in ("open", "chunk", "plane")}
        for reader, rows in results.items()
    }
    for key in ("open", "chunk", "plane"):
        z, t = summary["zarr"][key], summary["tensorstore"][key]
        print(
            f"{key:>5}: zarr-python+obstore {1000 * z:7.1f} ms, tensorstore s3 "
            f"{1000 * t:7.1f} ms, tensorstore/zarr {t / z:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps({"rounds": results, "median": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The simulated acquisition: real writers, real files, read back by two independent readers."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import zarr

from napari_softcopy.simulate import (
    PRESETS,
    Preset,
    array_paths,
    frame,
    level_shape,
    resolve_preset,
    simulate,
)
from napari_softcopy.simulate import data as simulate_data

FAST = float("inf")  # rate: no waiting between timepoints

# writer, locking
WRITERS = [
    pytest.param("tensorstore", "lockfile", id="ts-lockfile"),
    pytest.param("tensorstore", "os", id="ts-os"),
    pytest.param("tensorstore", "none", id="ts-none"),
    pytest.param("tensorstore", "non_atomic", id="ts-non_atomic"),
    pytest.param("zarr-python", "lockfile", id="zarr-python"),
]

TINY = dict(shape=(3, 8, 32, 32), chunks=(1, 4, 16, 16), interval_s=0.0)
LAYOUTS = {
    "v2-dot": Preset("v2-dot", "", zarr_format=2, separator=".", **TINY),
    "v2-slash": Preset("v2-slash", "", zarr_format=2, separator="/", **TINY),
    "v3": Preset("v3", "", zarr_format=3, **TINY),
    "v3-v2keys": Preset(
        "v3-v2keys", "", zarr_format=3, separator=".", v3_key_encoding="v2", **TINY
    ),
    "v3-sharded": Preset("v3-sharded", "", zarr_format=3, shards=(1, 8, 32, 32), slabs=2, **TINY),
}
# Where chunk (t=1, z=1, y=0, x=1) lives; for the sharded layout, shard (1, 0, 0, 0).
CHUNK_KEY = {
    "v2-dot": "1.1.0.1",
    "v2-slash": "1/1/0/1",
    "v3": "c/1/1/0/1",
    "v3-v2keys": "1.1.0.1",
    "v3-sharded": "c/1/0/0/0",
}
CHUNK_FILES = {  # chunk (or shard) files per array of the TINY shape
    "v2-dot": 3 * 2 * 2 * 2,
    "v2-slash": 3 * 2 * 2 * 2,
    "v3": 3 * 2 * 2 * 2,
    "v3-v2keys": 3 * 2 * 2 * 2,
    "v3-sharded": 3,
}
METADATA = {".zarray", ".zattrs", ".zgroup", "zarr.json"}


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in all_files(root) if p.name.endswith((".__lock", ".partial"))]


def chunk_files(root: Path) -> list[Path]:
    return [p for p in all_files(root) if p.name not in METADATA and p.name != "complete"]


def read_zarr(path: Path) -> np.ndarray:
    return zarr.open_array(str(path), mode="r")[...]


def read_tensorstore(path: Path, zarr_format: int) -> np.ndarray:
    driver = "zarr" if zarr_format == 2 else "zarr3"
    spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(path) + "/"}}
    return ts.open(spec, open=True, read=True).result().read().result()


def expected(spec: Preset, seed: int = 0, *, image: int = 0, level: int = 0) -> np.ndarray:
    return np.stack([frame(spec, t, seed, image=image, level=level) for t in range(spec.shape[0])])


def zarr_shape(path: Path) -> list[int]:
    meta = path / "zarr.json"
    if not meta.exists():
        meta = path / ".zarray"
    return json.loads(meta.read_text())["shape"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("writer", "locking"), WRITERS)
def test_roundtrip(tmp_path: Path, writer: str, locking: str, layout: str) -> None:
    dest = tmp_path / "acq.zarr"
    report = simulate(dest, LAYOUTS[layout], writer=writer, locking=locking, rate=FAST, seed=3)
    spec = report.spec
    assert spec is not None
    assert report.completed and report.timepoints == 3
    assert report.path == dest and report.writer == writer and report.seed == 3
    assert (dest / "complete").read_text() == "complete\n"
    assert temp_files(dest) == []

    want = expected(spec, seed=3)
    np.testing.assert_array_equal(read_zarr(dest), want)
    np.testing.assert_array_equal(read_tensorstore(dest, spec.zarr_format), want)

    assert (dest / CHUNK_KEY[layout]).is_file()
    assert len(chunk_files(dest)) == CHUNK_FILES[layout]
    files = all_files(dest)
    assert report.files == len(files)
    assert report.bytes == sum(p.stat().st_size for p in files)
    assert 0 < report.write_busy_s <= report.duration_s


@pytest.mark.parametrize(("writer", "locking"), [WRITERS[0], WRITERS[-1]])
@pytest.mark.parametrize("layout", ["v2-dot", "v3-sharded"])
def test_grow_rewrites_the_metadata_as_it_goes(
    tmp_path: Path, writer: str, locking: str, layout: str
) -> None:
    dest = tmp_path / "acq.zarr"
    seen: list[int] = []

    def on_timepoint(t: int) -> None:
        seen.append(zarr_shape(dest)[0])

    report = simulate(
        dest,
        LAYOUTS[layout],
        writer=writer,
        locking=locking,
        rate=FAST,
        grow=True,
        on_timepoint=on_timepoint,
    )
    assert seen == [1, 2, 3]
    assert zarr_shape(dest) == [3, 8, 32, 32]
    assert report.spec is not None
    np.testing.assert_array_equal(read_zarr(dest), expected(report.spec))
    assert temp_files(dest) == []


def check_multiscales(attrs: dict, version: str, levels: int, interval: float) -> None:
    if version == "0.5":
        assert attrs["ome"]["version"] == "0.5"
        (ms,) = attrs["ome"]["multiscales"]
    else:
        (ms,) = attrs["multiscales"]
        assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["t", "c", "z", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["time", "channel", "space", "space", "space"]
    assert ms["axes"][0]["unit"] == "second"
    assert {a["unit"] for a in ms["axes"][2:]} == {"micrometer"}
    assert [d["path"] for d in ms["datasets"]] == [str(k) for k in range(levels)]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert all(d["coordinateTransformations"][0]["type"] == "scale" for d in ms["datasets"])
    for k, scale in enumerate(scales):
        assert len(scale) == 5
        assert scale[0] == pytest.approx(interval)
        assert scale[1:3] == scales[0][1:3]  # c and z are not downsampled
        assert scale[3] == pytest.approx(scales[0][3] * 2**k)
        assert scale[4] == pytest.approx(scales[0][4] * 2**k)


@pytest.mark.parametrize("writer", ["tensorstore", "zarr-python"])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_multiscale(tmp_path: Path, writer: str, zarr_format: int) -> None:
    preset = dataclasses.replace(PRESETS["multiscale"], zarr_format=zarr_format)
    dest = tmp_path / "image.zarr"
    report = simulate(dest, preset, writer=writer, shape=(2, 2, 4, 40, 36), rate=20.0)
    spec = report.spec
    assert spec is not None and spec.levels == 3
    version = "0.5" if zarr_format == 3 else "0.4"
    if zarr_format == 3:
        root_meta = json.loads((dest / "zarr.json").read_text())
        assert root_meta["node_type"] == "group"
        attrs = root_meta["attributes"]
    else:
        assert json.loads((dest / ".zgroup").read_text()) == {"zarr_format": 2}
        attrs = json.loads((dest / ".zattrs").read_text())
    check_multiscales(attrs, version, levels=3, interval=1 / 20)
    # The same metadata through zarr-python's group API.
    assert dict(zarr.open_group(str(dest), mode="r").attrs) == attrs

    assert array_paths(spec) == {"0": (0, 0), "1": (0, 1), "2": (0, 2)}
    for level in range(3):
        path = dest / str(level)
        want = expected(spec, level=level)
        assert want.shape == level_shape(spec.shape, level)
        np.testing.assert_array_equal(read_zarr(path), want)
        np.testing.assert_array_equal(read_tensorstore(path, zarr_format), want)
    assert level_shape(spec.shape, 2) == (2, 2, 4, 10, 9)
    if zarr_format == 3:
        names = json.loads((dest / "0" / "zarr.json").read_text())["dimension_names"]
        assert names == ["t", "c", "z", "y", "x"]
    assert temp_files(dest) == []
    assert (dest / "complete").is_file()


@pytest.mark.parametrize("writer", ["tensorstore", "zarr-python"])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plate(tmp_path: Path, writer: str, zarr_format: int) -> None:
    preset = PRESETS["plate" if zarr_format == 3 else "plate-0.4"]
    assert preset.zarr_format == zarr_format
    dest = tmp_path / "plate.zarr"
    report = simulate(dest, preset, writer=writer, shape=(2, 1, 2, 24, 24), rate=FAST)
    spec = report.spec
    assert spec is not None

    def attrs(group: str) -> dict:
        node = dest / group if group else dest
        if zarr_format == 3:
            meta = json.loads((node / "zarr.json").read_text())
            assert meta["node_type"] == "group"
            return meta["attributes"].get("ome", meta["attributes"])
        assert (node / ".zgroup").is_file()
        return json.loads((node / ".zattrs").read_text())

    plate = attrs("")["plate"]
    assert [r["name"] for r in plate["rows"]] == ["A"]
    assert [c["name"] for c in plate["columns"]] == ["1", "2"]
    assert plate["wells"] == [
        {"path": "A/1", "rowIndex": 0, "columnIndex": 0},
        {"path": "A/2", "rowIndex": 0, "columnIndex": 1},
    ]
    if zarr_format == 2:
        assert plate["version"] == "0.4"
    else:
        assert json.loads((dest / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
    attrs("A")  # the row is a group
    for well in ("A/1", "A/2"):
        assert attrs(well)["well"]["images"] == [{"path": "0"}]
        field = attrs(f"{well}/0")
        wrapped = {"ome": {"version": "0.5", **field}} if zarr_format == 3 else field
        version = "0.5" if zarr_format == 3 else "0.4"
        check_multiscales(wrapped, version, 2, spec.interval_s or 1.0)  # rate inf: 0 s

    paths = array_paths(spec)
    assert list(paths) == ["A/1/0/0", "A/1/0/1", "A/2/0/0", "A/2/0/1"]
    for path, (image, level) in paths.items():
        want = expected(spec, image=image, level=level)
        np.testing.assert_array_equal(read_zarr(dest / path), want)
        np.testing.assert_array_equal(read_tensorstore(dest / path, zarr_format), want)
    # Every well holds its own data; chunks sit where iohub-written plates have them.
    assert not np.array_equal(expected(spec, image=0), expected(spec, image=1))
    key = "A/1/0/0/1/0/0/0/0" if zarr_format == 2 else "A/1/0/0/c/1/0/0/0/0"
    assert (dest / key).is_file()
    assert temp_files(dest) == []


@pytest.mark.parametrize("name", ["demo", "nested-v2", "manyfiles"])
def test_default_data_compress_like_microscopy_data(tmp_path: Path, name: str) -> None:
    preset = PRESETS[name]
    shape = (2, *preset.shape[1:]) if name != "manyfiles" else (2, 4, 256, 256)
    report = simulate(tmp_path / "a.zarr", name, shape=shape, rate=FAST)
    spec = report.spec
    assert spec is not None
    chunks = chunk_files(report.path)
    n_chunks = math.prod(math.ceil(n / c) for n, c in zip(spec.shape, spec.chunks, strict=True))
    assert len(chunks) == n_chunks  # no chunk was left out as equal to the fill value
    raw = math.prod(spec.shape) * 2
    ratio = sum(p.stat().st_size for p in chunks) / raw
    assert 0.3 < ratio < 0.7, ratio
    data = read_zarr(report.path)
    assert data.min() > 50  # the camera offset: no voxel near 0, let alone a whole chunk
    assert data.max() < 20_000
    assert data.std() > 50  # structure, not a constant


def test_frame_is_deterministic_and_cheap() -> None:
    spec = PRESETS["demo"]
    a = frame(spec, 4, seed=1)
    assert a.dtype == np.uint16 and a.shape == spec.shape[1:]
    np.testing.assert_array_equal(a, frame("demo", 4, seed=1))
    assert not np.array_equal(a, frame(spec, 5, seed=1))
    assert not np.array_equal(a, frame(spec, 4, seed=2))
    # Timepoints differ a little (drift, noise) but share their structure.
    b = frame(spec, 5, seed=1).astype(float)
    assert np.corrcoef(a.astype(float).ravel(), b.ravel())[0, 1] > 0.8

    light = PRESETS["lightsheet"]
    try:
        frame(light, 0)  # the smooth structure is computed once
        t0 = time.perf_counter()
        big = frame(light, 1)
        elapsed = time.perf_counter() - t0
        assert big.shape == (64, 512, 512)
        assert elapsed < 0.5, f"one lightsheet timepoint took {elapsed:.2f} s"
    finally:
        simulate_data.structure.cache_clear()
        simulate_data.noise_bank.cache_clear()


def test_stop_from_on_timepoint_ends_early_without_marker(tmp_path: Path) -> None:
    stop = threading.Event()

    def on_timepoint(t: int) -> None:
        if t == 1:
            stop.set()

    dest = tmp_path / "acq.zarr"
    report = simulate(
        dest, LAYOUTS["v3"], timepoints=6, rate=FAST, stop=stop, on_timepoint=on_timepoint
    )
    assert report.timepoints == 2 and not report.completed
    assert not (dest / "complete").exists()
    assert {p.relative_to(dest).parts[1] for p in chunk_files(dest)} == {"0", "1"}


def test_stop_from_another_thread_interrupts_the_wait(tmp_path: Path) -> None:
    first = threading.Event()
    stop = threading.Event()

    def stopper() -> None:
        first.wait(30)
        stop.set()

    thread = threading.Thread(target=stopper)
    thread.start()
    t0 = time.monotonic()
    report = simulate(
        tmp_path / "acq.zarr",
        LAYOUTS["v2-dot"],
        writer="zarr-python",
        rate=0.2,  # 5 s between timepoints: only a prompt stop ends this quickly
        stop=stop,
        on_timepoint=lambda t: first.set(),
    )
    elapsed = time.monotonic() - t0
    thread.join()
    assert report.timepoints == 1 and not report.completed
    assert elapsed < 3.0
    assert not (report.path / "complete").exists()


def test_rate_paces_the_acquisition(tmp_path: Path) -> None:
    stamps: list[float] = []
    t0 = time.monotonic()
    report = simulate(
        tmp_path / "a.zarr",
        LAYOUTS["v3"],
        rate=25.0,
        on_timepoint=lambda t: stamps.append(time.monotonic()),
    )
    assert report.completed and len(stamps) == 3
    # timepoint k starts no earlier than k intervals after the start, however slow the writes
    assert stamps[-1] - t0 >= 2 / 25
    assert report.spec is not None and report.spec.interval_s == pytest.approx(0.04)


def test_marker_name_and_none(tmp_path: Path) -> None:
    r = simulate(tmp_path / "a.zarr", LAYOUTS["v3"], rate=FAST, marker="DONE")
    assert (r.path / "DONE").read_text() == "complete\n"
    r = simulate(tmp_path / "b.zarr", LAYOUTS["v3"], rate=FAST, marker=None)
    assert r.completed and not (r.path / "complete").exists()


def test_existing_destination(tmp_path: Path) -> None:
    dest = tmp_path / "a.zarr"
    dest.mkdir()
    (dest / "old").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        simulate(dest, LAYOUTS["v3"], rate=FAST)
    assert (dest / "old").exists()
    report = simulate(dest, LAYOUTS["v3"], rate=FAST, overwrite=True)
    assert report.completed and not (dest / "old").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "nope"}, "unknown preset"),
        ({"writer": "h5py"}, "unknown writer"),
        ({"locking": "flock"}, "unknown locking"),
        ({"rate": 0.0}, "rate"),
        ({"shape": (3, 32, 32)}, "dimensions"),
        ({"marker": "a/b"}, "marker"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    kwargs = {"preset": LAYOUTS["v3"], "rate": FAST, **kwargs}
    with pytest.raises(ValueError, match=message):
        simulate(tmp_path / "a.zarr", **kwargs)
    assert not (tmp_path / "a.zarr").exists()


def test_presets() -> None:
    expected_names = {"demo", "lightsheet", "manyfiles", "sharded", "nested-v2", "multiscale"}
    assert expected_names | {"plate"} <= set(PRESETS)
    for name, preset in PRESETS.items():
        assert preset.name == name
        assert resolve_preset(preset) == preset  # presets are consistent as they stand

    def n_chunk_files(p: Preset) -> int:
        grid = p.shards or p.chunks
        return math.prod(math.ceil(n / c) for n, c in zip(p.shape, grid, strict=True))

    assert n_chunk_files(PRESETS["lightsheet"]) == 4096
    assert n_chunk_files(PRESETS["manyfiles"]) == 50_000
    assert PRESETS["manyfiles"].separator == "." and PRESETS["manyfiles"].zarr_format == 2
    assert n_chunk_files(PRESETS["sharded"]) == 32 and PRESETS["sharded"].slabs == 4
    assert PRESETS["nested-v2"].separator == "/" and PRESETS["nested-v2"].zarr_format == 2
    demo = PRESETS["demo"]
    assert demo.timepoints * demo.interval_s <= 2.5


def test_resolve_preset_fits_chunks_and_shards() -> None:
    p = resolve_preset("sharded", shape=(2, 24, 100, 40))
    assert p.chunks == (1, 16, 64, 40)
    assert p.shards == (1, 32, 128, 40)
    assert all(s % c == 0 for s, c in zip(p.shards, p.chunks, strict=True))
    assert resolve_preset("demo", timepoints=4).shape == (4, 16, 256, 256)
    bad = Preset("bad", "", zarr_format=2, shape=(2, 4, 4, 4), chunks=(1, 2, 2, 2), shards=(1,) * 4)
    with pytest.raises(ValueError, match="sharding"):
        resolve_preset(bad)


def test_no_marker_temp_file_is_left(tmp_path: Path) -> None:
    dest = tmp_path / "a.zarr"
    simulate(dest, LAYOUTS["v2-dot"], writer="zarr-python", rate=FAST)
    assert sorted(n for n in os.listdir(dest) if "complete" in n) == ["complete"]

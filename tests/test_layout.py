import json

import numpy as np
import pytest
import zarr

from napari_softcopy.layout import (
    LayoutError,
    array_at,
    find_arrays,
    is_metadata_name,
    is_temp_name,
    read_json,
)


@pytest.mark.parametrize(
    "name",
    [
        "0.0.0.__lock",
        "zarr.json.__lock",
        "c_0f3a9b.__lock",
        "0.0.0123456789abcdef0123456789abcdef.partial",
        ".0.1.ab12cd34.softcopy-tmp",
    ],
)
def test_writers_temp_names_are_recognised(name):
    assert is_temp_name(name)


@pytest.mark.parametrize("name", ["0.0.0", "0", "zarr.json", ".zarray", "complete", "x.partial"])
def test_final_names_are_not_temp(name):
    assert not is_temp_name(name)


def test_metadata_names():
    assert is_metadata_name("zarr.json") and is_metadata_name(".zattrs")
    assert not is_metadata_name("0.0")


@pytest.mark.parametrize(
    ("zarr_format", "separator", "shards", "expected_key"),
    [
        (3, None, None, "c/1/0/2"),
        (3, None, (2, 4, 8), "c/0/0/1"),
        (2, ".", None, "1.0.2"),
        (2, "/", None, "1/0/2"),
    ],
)
def test_layout_matches_zarr_python(tmp_path, zarr_format, separator, shards, expected_key):
    kwargs = {}
    if zarr_format == 2:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": separator}
    arr = zarr.create_array(
        tmp_path / "a.zarr",
        shape=(4, 4, 16),
        chunks=(1, 4, 4),
        shards=shards,
        dtype="uint16",
        zarr_format=zarr_format,
        **kwargs,
    )
    arr[:] = np.arange(4 * 4 * 16, dtype="uint16").reshape(4, 4, 16) + 1
    (layout,) = find_arrays(tmp_path / "a.zarr")
    files = {
        p.relative_to(tmp_path / "a.zarr").as_posix()
        for p in (tmp_path / "a.zarr").rglob("*")
        if p.is_file() and not is_metadata_name(p.name)
    }
    assert set(layout.chunk_keys()) == files
    assert layout.n_chunks == len(files)
    index = layout.chunk_index(expected_key)
    assert index is not None and layout.chunk_key(index) == expected_key


def test_v3_v2_key_encoding(tmp_path):
    arr = zarr.create_array(
        tmp_path / "a.zarr",
        shape=(2, 8),
        chunks=(1, 4),
        dtype="uint8",
        chunk_key_encoding={"name": "v2", "separator": "."},
    )
    arr[:] = 1
    (layout,) = find_arrays(tmp_path / "a.zarr")
    assert sorted(layout.chunk_keys()) == ["0.0", "0.1", "1.0", "1.1"]
    assert all((tmp_path / "a.zarr" / k).is_file() for k in layout.chunk_keys())


def test_hierarchy_arrays_found_without_walking_chunks(tmp_path):
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    for level in range(3):
        a = root.create_array(str(level), shape=(8, 8), chunks=(2, 2), dtype="uint8")
        a[:] = 1
    plate = root.create_group("A").create_group("1").create_group("0")
    plate.create_array("0", shape=(4,), chunks=(2,), dtype="uint8")[:] = 3
    arrays = find_arrays(tmp_path / "g.zarr")
    assert sorted(a.path for a in arrays) == ["0", "1", "2", "A/1/0/0"]
    assert array_at(arrays, "A/1/0/0/c/1").path == "A/1/0/0"
    assert array_at(arrays, "zarr.json") is None


def test_corrupt_metadata_names_the_file(tmp_path):
    root = tmp_path / "bad.zarr"
    root.mkdir()
    (root / "zarr.json").write_text('{"node_type": "array", ')
    with pytest.raises(LayoutError, match=r"bad.zarr/zarr.json"):
        find_arrays(root)
    assert find_arrays(root, strict=False) == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"node_type": "array", ', r"Expecting property name"),
        (b"[1, 2]", "not a JSON object"),
        (b"", "not a JSON object"),  # (a file truncated to nothing)
    ],
)
def test_corrupt_metadata_is_one_line_naming_the_file_and_the_fix(tmp_path, content, why):
    path = tmp_path / "bad.zarr" / "zarr.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(LayoutError) as info:
        read_json(path)
    message = str(info.value)
    assert message.startswith(f"corrupt Zarr metadata in {path}: ")
    assert why in message and message.endswith("; fix or restore this file")
    assert "\n" not in message


def test_missing_fields_are_corrupt(tmp_path):
    root = tmp_path / "bad.zarr"
    root.mkdir()
    (root / "zarr.json").write_text(json.dumps({"node_type": "array", "shape": [3]}))
    with pytest.raises(LayoutError, match=r"zarr\.json"):
        find_arrays(root)

"""`Tuning`: the engine's numeric trade-offs are passed in, documented, and nowhere else."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import pkgutil
from pathlib import Path

import pytest

import napari_softcopy.engine as engine_package
from napari_softcopy.engine import CopyEngine, Tuning, verify_processes
from napari_softcopy.platform import available_cores


def engine_modules():
    for info in pkgutil.iter_modules(engine_package.__path__):
        yield importlib.import_module(f"{engine_package.__name__}.{info.name}")


def test_the_engine_has_no_module_level_tuning_globals():
    """Every number the engine tunes by is a `Tuning` field: a module-level constant would be
    patched by tests again, and could not differ between two engines in one process."""
    found = []
    for module in [engine_package, *engine_modules()]:
        tree = ast.parse(Path(module.__file__).read_text())
        for node in tree.body:
            value = getattr(node, "value", None)
            if (
                isinstance(node, ast.Assign | ast.AnnAssign)
                and isinstance(value, ast.Constant)
                and type(value.value) in (int, float)
            ):
                found.append(f"{module.__name__}:{node.lineno}")
    assert found == []


def test_every_field_is_documented_and_the_tuning_is_frozen():
    doc = Tuning.__doc__ or ""
    for f in dataclasses.fields(Tuning):
        assert f"\n    {f.name} : " in doc, f"Tuning.{f.name} has no docstring entry"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Tuning().settle_s = 1.0  # type: ignore[misc]


def test_an_engine_uses_the_tuning_it_is_given(tmp_path):
    tuning = Tuning(copy_helper_files=10, settle_s=0.05)
    e = CopyEngine(tmp_path / "acq.zarr", tmp_path / "copy.zarr", tuning=tuning)
    assert e.tuning is tuning
    assert CopyEngine(tmp_path / "a.zarr", tmp_path / "b.zarr").tuning == Tuning()


@pytest.mark.skipif(available_cores() < 2, reason="a split walk needs two cores")
def test_the_verification_split_follows_the_tuning():
    assert verify_processes(Tuning().parallel_verify_files) == 2
    assert verify_processes(Tuning().parallel_verify_files - 1) == 1
    assert verify_processes(5, Tuning(parallel_verify_files=5)) == 2

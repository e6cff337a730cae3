"""A realistic simulated acquisition: a Zarr archive written the way a microscope writes it.

The simulator writes a time series, one timepoint after another at the acquisition rate of a
:class:`Preset`, through a real Zarr writer (tensorstore or zarr-python), and a marker file
once everything is written. Its ideas live in one module each:

- `presets`: :class:`Preset`, :data:`PRESETS` and the archive's layout (:func:`array_paths`,
  :func:`level_shape`);
- `data`: the synthetic fluorescence data, recomputable bit for bit (:func:`frame`);
- `writers`: tensorstore and zarr-python, behind one small surface; the OME-NGFF group
  metadata (from `napari_softcopy.ome`);
- `acquisition`: the real-time loop, :func:`simulate`, and its :class:`SimulationReport`.

Everything public is importable from here. This package imports neither Qt nor napari.
"""

from __future__ import annotations

from .acquisition import SimulationReport, simulate
from .data import frame
from .presets import PRESETS, Preset, array_paths, level_shape, resolve_preset
from .writers import LOCKING_MODES, WRITERS

__all__ = [
    "LOCKING_MODES",
    "PRESETS",
    "WRITERS",
    "Preset",
    "SimulationReport",
    "array_paths",
    "frame",
    "level_shape",
    "resolve_preset",
    "simulate",
]

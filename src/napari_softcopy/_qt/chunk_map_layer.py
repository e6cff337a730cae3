"""The chunk map in the viewer: a read-only labels layer over the copy's image, recomputed
off the Qt thread every two seconds while the copy runs and once more when it ends.

The map itself (what each chunk file's state is) is `napari_softcopy.chunkmap`'s, Qt-free;
this module places it over the image and keeps it current.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QObject, QTimer

from ..chunkmap import ABSENT, COPIED, LEGEND, MISMATCHED, PENDING, compute_chunk_map
from ..layer_data import napari_units
from ..open_zarr import OpenError, read_image_spec
from .compare import arrange_side_by_side, side_by_side_offset
from .layers import displayed_point, run_in_thread, truth_of

#: Milliseconds between updates of a chunk map while its copy runs.
CHUNK_MAP_MS = 2000
#: Milliseconds between a chunk map's checks whether its copy ended (a cheap call), so the
#: final map is computed at once rather than up to a refresh interval (seconds) later.
CHUNK_MAP_END_CHECK_MS = 200

#: Opacity per chunk state: problems stand out, copied chunks only tint the image.
CHUNK_ALPHA = {COPIED: 0.35, PENDING: 0.85, ABSENT: 0.6, MISMATCHED: 1.0}


def chunk_colormap():
    """napari colormap of the chunk map values (0 is transparent)."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    for value, (_name, _meaning, color) in LEGEND.items():
        rgb = tuple(int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))
        colors[value] = (*rgb, CHUNK_ALPHA[value])
    return DirectLabelColormap(color_dict=colors)


def compute_for_image(source: str, destination: str, image: str, finished: bool) -> dict:
    """Off-thread part of a chunk map update: the map and where it goes over the image."""
    spec = None
    for root in (destination, source):
        try:
            spec = read_image_spec(root, image)
            break
        except OpenError:
            continue
    if spec is None or not spec.datasets:
        raise OpenError(f"no image {image or '(root)'} in {source} or {destination} yet")
    array_path = spec.datasets[0]
    cmap = compute_chunk_map(
        source, destination, array_path, finished=finished, fold_axis=spec.channel_axis
    )
    ca = spec.channel_axis
    scale = [s for i, s in enumerate(spec.scale) if i != ca]
    translate = [t for i, t in enumerate(spec.translate) if i != ca]
    out_scale, out_translate = cmap.layer_transform(scale, translate)
    labels = [a for i, a in enumerate(spec.axes) if i != ca]
    result = {
        "map": cmap,
        "scale": out_scale,
        "translate": out_translate,
        "axis_labels": labels,
    }
    units = napari_units([u for i, u in enumerate(spec.units) if i != ca])
    if units:  # the same units as the image layers, or napari ignores everyone's units
        result["units"] = units
    return result


class ChunkMapFollower(QObject):
    """A chunk map labels layer for one copy and one image, updated every two seconds.

    ``finished()`` says whether the copy has ended (then differences are mismatches); it is
    asked every `CHUNK_MAP_END_CHECK_MS`, and the map is recomputed as soon as it turns true
    (a map computed before the end and delivered after it is not shown: it would show
    chunks pending next to a panel that says verified). The updates stop when the layer is
    removed from the viewer, or after the copy ended and one last map was drawn. The layer
    is read-only: painting it would only hide the state it shows.
    """

    def __init__(
        self,
        viewer,
        source: str,
        destination: str,
        image: str,
        finished: Callable[[], bool],
        name: str,
        on_summary: Callable[[str], None] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.source, self.destination, self.image = source, destination, image
        self._finished = finished
        self._name = name
        self._on_summary = on_summary
        self.layer = None
        self.updates = 0
        self.last_map = None
        self._busy = False
        self._done = False
        self._started_at = 0.0
        self._next_at = 0.0  # monotonic time of the next periodic update
        self._asked_final = False  # the last map asked for was computed as final
        self._timer = QTimer(self)
        self._timer.setInterval(CHUNK_MAP_END_CHECK_MS)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        """Draw now (again, if the user removed the layer), then every two seconds while the
        copy runs, and once more as soon as it ends."""
        self._done = False
        if self.layer is not None and self.layer not in self.viewer.layers:
            self.layer = None
        self.update_now()
        self._timer.start()

    def _tick(self) -> None:
        if time.monotonic() >= self._next_at or (
            not self._asked_final and truth_of(self._finished)
        ):
            self.update_now()

    def stop(self) -> None:
        self._timer.stop()
        self._done = True

    @property
    def active(self) -> bool:
        return not self._done

    def update_now(self) -> None:
        """Compute a new map off the Qt thread (skipped while one is being computed)."""
        if self._busy or self._done:
            return
        if self.layer is not None and self.layer not in self.viewer.layers:
            self.stop()  # the user removed it
            return
        finished = truth_of(self._finished)
        self._asked_final = finished
        self._busy = True
        self._started_at = time.monotonic()
        run_in_thread(
            compute_for_image,
            self.source,
            self.destination,
            self.image,
            finished,
            on_done=lambda result: self._apply(result, finished),
            on_error=self._failed,
        )

    def _failed(self, exc: BaseException) -> None:
        self._busy = False
        self._next_at = time.monotonic() + CHUNK_MAP_MS / 1000  # not at every end check
        if self._on_summary is not None:
            self._on_summary(f"chunk map: {exc}")

    def _apply(self, result: dict, finished: bool) -> None:
        self._busy = False
        # A big archive takes a while to list: list it at most 1/10 of the time, so the
        # scan (Python, holding the GIL in stretches) leaves napari's thread alone.
        took = time.monotonic() - self._started_at
        self._next_at = time.monotonic() + max(CHUNK_MAP_MS / 1000, 10 * took)
        if self._done:
            return
        if not finished and truth_of(self._finished):
            self.update_now()  # listed before the copy ended: the final map replaces it
            return
        cmap = result["map"]
        self.last_map = cmap
        self.updates += 1
        values = cmap.values
        if self.layer is None or self.layer not in self.viewer.layers:
            meta = {
                "softcopy": {
                    "root": self.destination,
                    "image": self.image,
                    "role": "chunkmap",
                    "other_root": self.source,
                }
            }
            extra = {"units": result["units"]} if "units" in result else {}
            self.layer = self.viewer.add_labels(
                values,
                name=self._name,
                scale=result["scale"],
                translate=result["translate"],
                axis_labels=result["axis_labels"],
                **extra,
                colormap=chunk_colormap(),
                opacity=0.8,
                blending="translucent",
                metadata=meta,
            )
            self.layer.editable = False
            # napari makes a labels layer editable again whenever its data is replaced
            # (`_reset_editable`); put it back each time.
            self.layer.events.editable.connect(self._keep_read_only)
            arrange_side_by_side(self.viewer, self.destination, self.source)
        else:
            self._update_layer(values, result)
        if self._on_summary is not None:
            self._on_summary(f"chunk map: {cmap.summary()}")
        if finished:
            # The last map after the copy ended; `update_now` still redraws on request.
            self._timer.stop()

    def _keep_read_only(self, _event=None) -> None:
        if self.layer is not None and self.layer.editable:
            self.layer.editable = False

    def _update_layer(self, values: np.ndarray, result: dict) -> None:
        layer = self.layer
        if list(layer.scale) != result["scale"]:
            layer.scale = result["scale"]
            translate = list(result["translate"])
            translate[-1] += side_by_side_offset(layer)  # still over its image
            layer.translate = translate
        if layer.data.shape != values.shape:
            layer.data = values
            return
        # In place and without a redraw, unless the displayed slice changed: napari slices
        # the updated array when the user moves to another timepoint.
        try:
            key = tuple(
                slice(None) if i is None else i for i in displayed_point(self.viewer, layer)
            )
            visible_change = not np.array_equal(layer.data[key], values[key])
        except Exception:
            visible_change = True
        np.copyto(layer.data, values)
        if visible_change:
            layer.refresh()

    def deleteLater(self) -> None:
        self.stop()
        with contextlib.suppress(RuntimeError):
            super().deleteLater()

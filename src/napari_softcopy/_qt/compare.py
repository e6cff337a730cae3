"""The comparison of a copy in the viewer: its images side by side, whatever else is open.

Qt-free in itself (napari layers and the viewer only); the job panel arranges the layers
each time it adds some, and the chunk map's follower when it adds its layer.
"""

from __future__ import annotations

from ..archive_store import root_name
from ..layer_data import LayerSource


def viewer_grid(viewer):
    """The viewer's grid settings (``viewer.canvas.grid`` from napari 0.9 on)."""
    canvas = getattr(viewer, "canvas", None)
    return getattr(canvas, "grid", None) or viewer.grid


#: Left to right: the copy, its source, their difference (those that are open).
COMPARED_ROLES = ("destination", "source", "difference")
#: Space between two compared images, as a fraction of the widest one's width.
SIDE_BY_SIDE_GAP = 0.05


def _compared_layers(viewer, destination: str, source: str) -> dict[str, dict[str, list]]:
    """``{image: {role: [layers]}}`` of one copy's layers in ``viewer``.

    Roles: ``destination``, ``source``, ``difference`` and ``chunkmap``; layers of other
    archives, and layers opened by the reader, are not part of the comparison.
    """
    dst, src = root_name(destination), root_name(source)
    roots = {  # role -> (root, other root)
        "destination": (dst, None),
        "source": (src, None),
        "difference": (dst, src),
        "chunkmap": (dst, src),
    }
    out: dict[str, dict[str, list]] = {}
    for layer in viewer.layers:
        meta = LayerSource.from_metadata(getattr(layer, "metadata", None))
        if meta is None or meta.role not in roots:
            continue
        other = root_name(meta.other_root) if meta.other_root else None
        if roots[meta.role] == (root_name(meta.root), other):
            out.setdefault(meta.image, {}).setdefault(meta.role, []).append(layer)
    return out


def arrange_side_by_side(viewer, destination: str, source: str) -> bool:
    """Put the compared images of one copy side by side along the last (x) axis.

    The copy stays where its metadata puts it; the source goes right of it and the
    difference right of that (a gap of `SIDE_BY_SIDE_GAP` between them). All channels of an
    image move together and the chunk map stays over the first image (the copy it
    describes). Layers that are not part of this comparison are left alone.

    Translations rather than napari's grid: the grid puts layers into cells by their index in
    the layer list, with one stride for all, so any other layer (or a chunk map, one layer
    where an image has several channels) shifts every later image into the wrong cell. The
    grid is switched off here for the same reason.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layers are.
    destination, source : str
        The copy's roots, as in the layers' metadata (`LayerSource`).

    Returns
    -------
    bool
        True when a layer moved (the caller may reset the view).
    """
    moved = False
    for by_role in _compared_layers(viewer, destination, source).values():
        images = [role for role in COMPARED_ROLES if role in by_role]
        if not images:
            continue
        widths = [_width(layer) for role in images for layer in by_role[role]]
        step = max(widths) * (1.0 + SIDE_BY_SIDE_GAP)
        for rank, role in enumerate(images):
            overlays = by_role.get("chunkmap", []) if rank == 0 else []
            for layer in by_role[role] + overlays:
                moved |= _set_offset(layer, rank * step)
        if len(images) > 1:
            viewer_grid(viewer).enabled = False
    return moved


def side_by_side_offset(layer) -> float:
    """How far `arrange_side_by_side` moved ``layer`` along x (0.0: not moved)."""
    return float(layer.metadata.get("softcopy", {}).get("offset_x", 0.0))


def _width(layer) -> float:
    """World width of ``layer``'s full-resolution data along its last axis."""
    shape = layer.level_shapes[0] if hasattr(layer, "level_shapes") else layer.data.shape
    return float(shape[-1]) * float(layer.scale[-1])


def _set_offset(layer, offset: float) -> bool:
    old = side_by_side_offset(layer)
    if old == offset:
        return False
    translate = list(layer.translate)
    translate[-1] += offset - old
    layer.translate = translate
    layer.metadata["softcopy"]["offset_x"] = offset
    return True

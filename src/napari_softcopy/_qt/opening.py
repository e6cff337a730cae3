"""What a copy panel opens in the viewer: the archive's images, side by side, linked.

Functions run in worker threads (`layers.run_in_thread`) except `link_channels`. A root is
a folder or an ``s3://bucket/prefix`` (read with the copy's S3 settings:
`napari_softcopy.archive_store`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..archive_store import open_store
from ..layer_data import open_layers
from ..open_zarr import ArchiveInfo, OpenError, inspect_archive


def archive_name(path: str) -> str:
    """The archive's folder name without `.zarr` (the whole path when it has no name)."""
    return Path(path).name.removesuffix(".zarr") or path


def inspect_either(source: str, destination: str) -> ArchiveInfo:
    """What the archive holds, read from the source, or from the copy when the source is
    gone or not yet readable (``kind == "missing"`` when neither is)."""
    info = ArchiveInfo("missing")
    for root in (source, destination):
        try:
            store = open_store(root)
            if not store.exists():
                continue
            info = inspect_archive(store)
        except OpenError:
            continue
        if info.kind != "missing":
            return info
    return info


def open_image(root: str, image: str, role: str) -> list:
    """Layer data for ``image`` of the archive at ``root``, named after its ``role``."""
    from ..layer_data import image_layers
    from ..open_zarr import read_image_spec

    store = open_store(root)
    if not store.exists():  # (an S3 server that refuses says so here, in one line)
        raise OpenError(f"{store.root} does not exist yet")
    if image == "" and inspect_archive(store).kind not in ("array", "multiscale"):
        return open_layers(store, role=role, name=_label(root, role))
    return image_layers(
        read_image_spec(store, image),
        role=role,
        name=_label(root, role) + (f"/{image}" if image else ""),
    )


def _label(root: str, role: str) -> str:
    return f"{role} {archive_name(root)}"


def link_channels(viewer, destination: str, source: str) -> None:
    """Link contrast and gamma of each destination channel with the same source channel."""
    from napari.experimental import link_layers

    from .layers import source_of

    by_key: dict[tuple, dict[str, object]] = {}
    for layer in viewer.layers:
        src = source_of(layer)
        if src is None or src.role not in ("destination", "source"):
            continue
        root = {destination: "destination", source: "source"}.get(src.root)
        if root is None:
            continue
        by_key.setdefault((src.image, src.channel), {})[root] = layer
    for pair in by_key.values():
        if len(pair) == 2:
            with contextlib.suppress(Exception):  # already linked
                link_layers(list(pair.values()), ("contrast_limits", "gamma"))

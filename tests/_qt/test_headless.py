"""A real napari viewer renders under Xvfb (OpenGL through Mesa), not a blank canvas."""

from __future__ import annotations

import os

import numpy as np


def test_canvas_renders_an_image(make_napari_viewer):
    # show=True: a hidden viewer's canvas is never drawn, and its screenshot is all black.
    viewer = make_napari_viewer(show=True)
    data = np.zeros((64, 64), dtype=np.uint8)
    data[16:48, 16:48] = 255  # a white square in the middle of a black image
    viewer.add_image(data, colormap="gray", contrast_limits=(0, 255))
    assert len(viewer.layers) == 1

    shot = viewer.screenshot(canvas_only=True, flash=False)

    assert shot.ndim == 3 and shot.shape[2] == 4, shot.shape
    height, width = shot.shape[:2]
    assert height > 10 and width > 10, shot.shape
    rgb = shot[..., :3].astype(int)
    hint = (
        f"the canvas did not render (QT_QPA_PLATFORM={os.environ.get('QT_QPA_PLATFORM')!r}, "
        f"DISPLAY={os.environ.get('DISPLAY')!r}): napari needs OpenGL, i.e. Xvfb + Mesa "
        "with the xcb platform, not 'offscreen'"
    )
    assert rgb.max() - rgb.min() > 200, hint
    assert rgb[height // 2, width // 2].min() > 200, f"the middle should be white; {hint}"
    for y, x in ((0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1)):
        assert rgb[y, x].max() < 50, f"the corner ({y}, {x}) should be black; {hint}"

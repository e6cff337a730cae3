"""The widget's destination field takes an ``s3://`` URL (a real napari viewer under Xvfb,
a real SeaweedFS): checked like the CLI checks it, the endpoint shown, bad buckets refused
with the CLI's one-line message."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # (tests/: the S3 server)

from test_widget import asked, dock, engines, state_dir  # noqa: F401 (fixtures)

from napari_softcopy import jobs
from napari_softcopy.simulate import simulate

pytest_plugins = ("s3_server",)  # (its fixtures: s3_server, s3_env)


def test_an_s3_destination_is_checked_with_its_endpoint_shown(
    make_napari_viewer,
    engines,  # noqa: F811 (the fixture imported above)
    tmp_path,
    qtbot,
    s3_env,
):
    viewer = make_napari_viewer()
    widget = dock(viewer, engines)
    src = simulate(tmp_path / "src.zarr", "demo", rate=float("inf"), timepoints=1).path
    widget.source_edit.setText(os.fspath(src))
    widget.destination_edit.setText("s3://softcopy/widget/acq.zarr")
    qtbot.waitUntil(lambda: widget.last_validation.startswith("Ready"), timeout=20_000)
    assert widget.last_validation == f"Ready: src.zarr → acq.zarr at {s3_env.endpoint}"
    widget.destination_edit.setText("s3://no-such-bucket/acq.zarr")
    expected = f"bucket no-such-bucket does not exist at {s3_env.endpoint}; create it first"
    qtbot.waitUntil(lambda: widget.last_validation == expected, timeout=20_000)
    assert widget.panels == {} and jobs.list_jobs(alive_only=False) == []

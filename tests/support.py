"""Helpers shared by the tests: tree comparison, polling, engines with test defaults, a run in
a user namespace of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from napari_softcopy import CopyEngine, CopyOptions
from napari_softcopy.destinations import STATE_DIR, open_destination
from napari_softcopy.engine import Tuning
from napari_softcopy.layout import is_own_temp_name, is_temp_name
from napari_softcopy.manifest import build_manifest, read_manifest


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> object:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)


def tree_bytes(root: str | os.PathLike, *, skip_temp: bool = True) -> dict[str, bytes]:
    """Every regular file below ``root`` as ``{relative path: content}``."""
    root = Path(root)
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if skip_temp and is_temp_name(name):
                continue
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def assert_identical(source: str | os.PathLike, destination: str | os.PathLike) -> int:
    """Assert byte-identical trees (writers' temp files excluded) with equal mtimes, and no
    temporary file of ours at the destination. Returns the number of files compared."""
    src, dst = tree_bytes(source), tree_bytes(destination, skip_temp=False)
    # (the destination's own records, `destinations.STATE_DIR` such as the manifest, are not
    # part of the copy)
    dst = {rel: data for rel, data in dst.items() if not rel.startswith(f"{STATE_DIR}/")}
    own = [p for p in dst if is_own_temp_name(p.rpartition("/")[2])]
    assert not own, f"temporary files left at the destination: {own[:5]}"
    assert sorted(src) == sorted(dst), (
        f"missing {sorted(set(src) - set(dst))[:5]}, extra {sorted(set(dst) - set(src))[:5]}"
    )
    different = [p for p in src if src[p] != dst[p]]
    assert not different, f"content differs: {different[:5]}"
    for rel in src:
        s, d = os.stat(Path(source) / rel), os.stat(Path(destination) / rel)
        assert s.st_mtime_ns == d.st_mtime_ns, f"mtime differs: {rel}"
    return len(src)


def engine(source, destination, *, tuning: Tuning | None = None, **options) -> CopyEngine:
    """A started engine with test-friendly defaults (normal priority, quick rescans)."""
    options.setdefault("low_priority", False)
    options.setdefault("rescan_interval", 2.0)
    e = CopyEngine(source, destination, CopyOptions(**options), tuning)
    e.start()
    return e


def run_in_namespace(script: str, *args: object, timeout: float = 240) -> dict:
    """Run ``script`` with ``args`` in a new user namespace (mapped to root); its last line
    of output, as JSON. Skips where user namespaces are not permitted."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare (util-linux) to make a user namespace")
    probe = subprocess.run([unshare, "-U", "-r", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not permitted here: {probe.stderr.strip()}")
    result = subprocess.run(
        [unshare, "-U", "-r", sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_manifest_is_fresh(target: str | Path) -> dict:
    """The manifest of the copy at ``target`` (a folder or an ``s3://`` URL) equals one
    computed now by reading every file back; its entries."""
    dest = open_destination(str(target), create=False)  # (a check: it must be there)
    try:
        written = read_manifest(dest)
        scratch = build_manifest(dest, source=written.source, marker=written.marker)
    finally:
        dest.close()
    assert written.entries == scratch.entries
    return written.entries

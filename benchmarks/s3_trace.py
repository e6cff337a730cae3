"""Timestamps of an S3 copy's finish, taken inside the copy's process (``benchmarks.s3
--trace``): each upload's answer, and the start and end of the finish's steps (the drain,
the walk, the flush, the manifest, the marker), with the process's CPU at each.

Installed by a ``sitecustomize`` that `sitecustomize_dir` writes (Python imports it at the
start of every process whose path holds it: the copy's CLI, from whichever sources its
``PYTHONPATH`` names, ours or ``--before``'s); what is not there in those sources is left
out. The events go to ``$SOFTCOPY_TRACE.<pid>.json`` when the process exits; each span's CPU is
its thread's. ``SOFTCOPY_TRACE_PROFILE=name,...`` also profiles those spans (cProfile).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import threading
import time
from pathlib import Path

#: (module, class or None, function): the spans recorded, where they exist.
SPANS = (
    ("napari_softcopy.engine.finish", "Finish", "_finish"),
    ("napari_softcopy.engine.finish", "Finish", "_drain"),
    ("napari_softcopy.engine.finish", "Finish", "_until_identical"),
    ("napari_softcopy.engine.finish", "Finish", "_mark_verified"),
    ("napari_softcopy.engine.finish", "Finish", "_write_marker"),
    ("napari_softcopy.engine.finish", None, "manifest_for_copy"),
    ("napari_softcopy.engine.walks", "Walks", "_first_walk"),
    ("napari_softcopy.engine.walks", "Walks", "_proven_walk"),
    ("napari_softcopy.engine.walks", "Walks", "_walk_and_compare"),
    ("napari_softcopy.engine.walks", "Walks", "_pause_proving"),
    ("napari_softcopy.engine.walks", None, "walk_unproven"),
    ("napari_softcopy.hashes", "HashJournal", "_flush_locked"),
    ("napari_softcopy.hashes", "HashJournal", "discard"),
    ("napari_softcopy.destinations.s3", "S3Destination", "flush"),
    ("napari_softcopy.destinations.s3", "S3Destination", "check"),
    ("napari_softcopy.destinations.s3", "S3Destination", "write_file"),
    ("napari_softcopy.destinations.s3_tree", "ObjectTree", "write_index"),
)


def sitecustomize_dir(folder: Path, repo: Path) -> Path:
    """Write ``folder/sitecustomize.py``, which installs the trace where ``SOFTCOPY_TRACE``
    is set; ``folder`` goes first on the copy's ``PYTHONPATH``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if os.environ.get('SOFTCOPY_TRACE'):\n"
        f"    sys.path.append({str(repo)!r})\n"
        "    from benchmarks.s3_trace import install\n"
        "    install(os.environ['SOFTCOPY_TRACE'])\n"
    )
    return folder


def install(out: str) -> None:
    """Wrap the `SPANS` and `S3Destination.publish`; dump at exit."""
    import importlib

    events: list[tuple] = []
    marker = os.environ.get("SOFTCOPY_TRACE_MARKER", "complete")  # (not an upload of a file)
    # (cProfile of these spans, to ``$SOFTCOPY_TRACE.<pid>.<name>.prof``)
    profiled = set(filter(None, os.environ.get("SOFTCOPY_TRACE_PROFILE", "").split(",")))
    uploads: list[float] = []
    lock = threading.Lock()

    def span(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0, c0 = time.time(), time.thread_time()
            profile = None
            if name in profiled:
                import cProfile

                profile = cProfile.Profile()
                profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                if profile is not None:
                    profile.disable()
                    profile.dump_stats(f"{out}.{os.getpid()}.{name}.prof")
                with lock:
                    events.append((name, t0, time.time(), c0, time.thread_time()))

        return wrapper

    for module, cls, name in SPANS:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        owner = getattr(mod, cls, None) if cls else mod
        fn = (
            None if owner is None else owner.__dict__.get(name) if cls else getattr(mod, name, None)
        )
        if fn is not None:
            setattr(owner, name, span(f"{cls}.{name}" if cls else name, fn))
    try:
        s3 = importlib.import_module("napari_softcopy.destinations.s3")
    except ImportError:
        s3 = None
    if s3 is not None:
        publish = s3.S3Destination.publish

        def traced_publish(self, temp, **kwargs):
            publish(self, temp, **kwargs)
            if not temp.rel.startswith(".softcopy/") and temp.rel != marker:
                uploads.append(time.time())

        s3.S3Destination.publish = traced_publish

    def dump() -> None:
        data = {"events": sorted(events, key=lambda e: e[1]), "uploads": uploads}
        data["exit"] = time.time()
        data["cpu"] = time.process_time()
        Path(f"{out}.{os.getpid()}.json").write_text(json.dumps(data))

    atexit.register(dump)


def summary(trace: dict, marker: float) -> dict:
    """The finish's steps from a trace, in seconds after the source's ``marker`` (its
    mtime), and the last upload's."""
    uploads = sorted(trace["uploads"])
    last = uploads[-1] if uploads else marker
    out = {
        "uploads_after_marker": sum(1 for t in uploads if t > marker),
        "last_upload": round(last - marker, 3),
        "exit": round(trace["exit"] - marker, 3),
        "finish_after_last_upload": round(trace["exit"] - last, 3),
    }
    steps = []
    for name, t0, t1, c0, c1 in trace["events"]:
        if t1 < marker or (name == "ObjectTree.write_index" and t1 < last):
            continue
        steps.append([name, round(t0 - marker, 3), round(t1 - marker, 3), round(c1 - c0, 3)])
    out["steps"] = steps
    return out

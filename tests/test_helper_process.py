"""The one helper-process protocol (`helper_process`), with real child processes: answers in
order, large ones whole, a child that dies mid-answer or writes garbage is a failure said
once (never a message), an interrupt cuts an answer short, a stop ends a wait."""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time

import pytest

from napari_softcopy.helper_process import HelperProcess
from support import wait_for

#: A child that answers each request by `answer` below, run through `serve`.
SERVE = """
import os, signal, sys
from napari_softcopy.helper_process import serve, setup_argument
setup = setup_argument()

def answer(request, stop):
    kind, value = request
    if kind == "echo":
        return value
    if kind == "size":
        return len(value)
    if kind == "print":  # (a stray print must not reach the frames)
        print("chatter from a library", flush=True)
        return value
    if kind == "stderr":  # (more than a pipe holds, before the answer)
        sys.stderr.write("e" * value + "\\nlast words\\n")
        sys.stderr.flush()
        return "written"
    if kind == "until stopped":
        open(setup["started"], "w").close()
        stopped = stop.wait(60)
        return "stopped early" if stopped else "not stopped"
    if kind == "spin until stopped":  # (in and out of the stop's wait, as a bandwidth cap)
        open(setup["started"], "w").close()
        while not stop.wait(0):
            pass
        return "stopped early"
    if kind == "exit":
        os._exit(value)

serve(answer, parent_death=signal.SIGTERM)
"""


@pytest.fixture
def helpers():
    started: list[HelperProcess] = []

    def start(main: str = SERVE, **setup) -> HelperProcess:
        process = HelperProcess(main, name="test helper", fallback="done here", setup=setup)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def test_answers_come_in_order_and_large_ones_whole(helpers):
    helper = helpers()
    big = os.urandom(24 * 2**20)  # (hundreds of pipe buffers each way)
    assert helper.send(("echo", [("a", True), ("b", False)]))
    assert helper.send(("echo", {"n": 1}))
    assert helper.receive() == (True, [("a", True), ("b", False)])
    assert helper.receive() == (True, {"n": 1})
    assert helper.send(("size", big)) and helper.receive() == (True, len(big))
    assert helper.send(("echo", big)) and helper.receive() == (True, big)
    assert helper.send(("print", "clean")) and helper.receive() == (True, "clean")
    assert helper.running


def test_a_child_writing_much_to_stderr_is_not_blocked_and_its_last_line_is_kept(helpers):
    helper = helpers()
    assert helper.send(("stderr", 4 * 2**20))
    assert helper.receive() == (True, "written")
    assert helper.close() == "last words"


def test_a_child_that_dies_mid_answer_is_a_failure_said_once(helpers, caplog):
    main = (
        "import os, sys\n"
        "from napari_softcopy.helper_process import encode, read_message\n"
        "read_message(0)\n"
        "frame = encode(b'x' * 100_000)\n"
        "os.write(1, frame[:5000])\n"
        "sys.stderr.write('dying\\n'); sys.stderr.flush()\n"
        "os._exit(3)\n"
    )
    helper = helpers(main)
    assert helper.send(("echo", "anything"))
    assert helper.receive() == (False, None)
    assert not helper.running and not helper.send(("echo", 1))
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 1, failures
    assert "test helper failed (it ended after 4988 of" in failures[0]
    assert failures[0].endswith("dying): done here")


@pytest.mark.parametrize(
    ("main", "why"),
    [
        (
            "import sys; sys.stdin.buffer.read(1); print('not a frame at all', flush=True)",
            "unreadable answer",
        ),
        ("import sys; sys.exit('no package here')", "no package here"),
        # (it reads the request first: one that ended before could make the send fail
        # instead, "cannot be reached", as the child above may)
        ("import os, sys; sys.stdin.buffer.read(1); os._exit(0)", "it ended"),
    ],
)
def test_garbage_or_no_answer_is_a_failure_never_a_message(helpers, caplog, main, why):
    helper = helpers(main)
    helper.send(("echo", 1))  # (may find the pipe closed already: a failure too)
    assert helper.receive() == (False, None)
    assert why in caplog.text and "test helper failed" in caplog.text


def test_an_interrupt_cuts_the_answer_in_work_short_and_ends_an_idle_child(helpers, tmp_path):
    started = tmp_path / "started"
    helper = helpers(started=str(started))
    assert helper.send(("until stopped", None))
    wait_for(started.exists, what="the child at work")
    helper.interrupt()
    assert helper.receive() == (True, "stopped early")
    assert helper.wait(10) == 0  # (then idle: the loop ends)

    idle = helpers()
    assert idle.send(("echo", 1)) and idle.receive() == (True, 1)
    idle.interrupt()
    assert idle.wait(10) == 0


def test_a_burst_of_sigterms_on_a_helper_waiting_on_its_stop_cuts_the_answer_short(
    helpers, tmp_path
):
    """A SIGTERM handler runs between two steps of the main thread; had it to take a lock
    that thread holds (`threading.Event.set` inside the thread's ``stop.wait``), the helper
    would wait for itself forever (`platform.StopFlag`)."""
    for attempt in range(5):
        started = tmp_path / f"started{attempt}"
        helper = helpers(started=str(started))
        assert helper.send(("spin until stopped", None))
        wait_for(started.exists, what="the child at work")
        for _ in range(200):
            os.kill(helper.pid, signal.SIGTERM)
        give_up = threading.Event()
        timer = threading.Timer(20, give_up.set)
        timer.start()
        try:
            assert helper.receive(give_up) == (True, "stopped early")
        finally:
            timer.cancel()
        assert helper.wait(10) == 0


def test_an_interrupted_helper_that_ends_unanswered_is_not_a_failure(helpers, caplog):
    helper = helpers()
    helper.interrupt()  # (before it reads its request: it exits unanswered)
    helper.wait(10)
    helper.send(("echo", 1))
    assert helper.receive() == (False, None)
    assert "test helper failed" not in caplog.text


def test_a_stop_ends_the_wait_for_an_answer_that_never_comes(helpers, caplog):
    helper = helpers("import time; time.sleep(120)")
    pid = helper.pid
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    assert helper.receive(stop) == (False, None)
    assert time.monotonic() - began < 5
    assert not helper.running and not os.path.exists(f"/proc/{pid}")  # ended and reaped
    assert "test helper failed" not in caplog.text  # (a stop is no failure)


def test_a_wait_with_a_stop_works_for_descriptors_above_1024(helpers):
    """select() cannot watch a descriptor above 1024; a long-running engine may hold that
    many (folders, files being copied) when it starts a verification's helper."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(soft, hard) < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, max(hard, 1200)))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1030)]
    try:
        helper = helpers()
        assert helper.send(("echo", "far")) and helper.receive(threading.Event()) == (True, "far")
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_helper_that_cannot_start_is_a_failure_said_once(caplog, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python"))
    helper = HelperProcess("pass", name="test helper", fallback="done here")
    assert not helper.running and not helper.send(1) and helper.receive() == (False, None)
    assert caplog.text.count("test helper failed (cannot start") == 1


#: A child whose answers come in parts (`serve` with ``stream``): a part per number, more
#: than the pipe holds in all, then the answer.
STREAM = """
import signal
from napari_softcopy.helper_process import serve

def answer(count, stop, send):
    for i in range(count):
        send((i, b"x" * 1000))
    return "done"

serve(answer, parent_death=signal.SIGTERM, stream=True)
"""


def test_a_streamed_answer_comes_in_parts_held_back_by_the_pipe_until_read(helpers):
    """Parts come in order, then the answer; `ready` says when one waits to be read; a child
    with more to send than the pipe holds waits for the parent (it neither fails nor
    drops a part)."""
    helper = helpers(STREAM)
    assert not helper.ready()  # (nothing asked yet)
    assert helper.send(200)  # (200 KiB: three times what a pipe holds)
    wait_for(helper.ready, what="the first part")
    got = [helper.receive() for _ in range(200)]
    assert [ok for ok, _ in got] == [True] * 200
    assert [part[0] for _, part in got] == list(range(200))
    assert helper.receive() == (True, "done")
    assert helper.send(0) and helper.receive() == (True, "done")  # (the next request)


#: Modules a copy or scan helper never needs, with what each costs its RSS (Python 3.11,
#: x86-64, alone in a fresh interpreter): the parent's side of the protocol (`subprocess`,
#: `tempfile` and what they bring: 2.4 MiB each), the engine and the verification's walk
#: (a helper imports its own modules only), S3's settings (`configparser`, 1.2 MiB) and
#: OpenSSL (`hashlib`, 4 MiB).
NOT_IN_A_HELPER = (
    "subprocess",
    "tempfile",
    "shutil",
    "bz2",
    "lzma",
    "random",
    "configparser",
    "hashlib",
    "napari_softcopy.engine",
    "napari_softcopy.verify",
    "napari_softcopy.checks",
    "napari_softcopy.destinations.s3_settings",
)


def _imported(pid: int) -> set[str]:
    """The modules a child started with ``PYTHONPROFILEIMPORTTIME`` imported: its stderr
    (a file it holds open: `HelperProcess`) has one line a module."""
    with open(f"/proc/{pid}/fd/2") as err:
        lines = err.read().splitlines()
    return {
        line.rsplit("|", 1)[1].strip()
        for line in lines
        if line.startswith("import time:") and "|" in line
    }


def test_the_copy_and_scan_helpers_import_only_what_they_run(tmp_path, monkeypatch):
    """Each helper is one more interpreter on the copying machine: its floor is what it
    imports. Real helpers do real work (a file copied, a folder scanned); then what they
    imported is read from their own import log, which must hold none of `NOT_IN_A_HELPER`."""
    from napari_softcopy.copy_helper import COPIED, CopyHelper
    from napari_softcopy.destinations import LocalDestination
    from napari_softcopy.scan_walk import EFFECTS, ScanHandler, ScanHelper

    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # (the children inherit it)
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a").mkdir(parents=True)
    dst.mkdir()
    (src / "a" / "f").write_bytes(b"x" * 100)
    os.utime(src / "a" / "f", (1, 1))  # (settled)
    src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    dest = LocalDestination(dst)
    copier = CopyHelper(src_fd, dest, settle_s=0.0, fsync=False, uncache=False)
    scanner = ScanHelper(src, dest, ".done", initial=True)
    try:
        assert copier.submit([("a/f", False)])
        assert [o.kind for o in copier.outcomes(1)] == [COPIED]
        effects = []

        class Recorded(ScanHandler):
            def __getattribute__(self, name):
                if name in EFFECTS:
                    return lambda *args: effects.append((name, *args))
                return super().__getattribute__(name)

        handler = Recorded(dest, ".done", initial=True, deep=False)
        assert scanner.send("a")
        while not (done := scanner.receive(handler)):
            assert done is not None, "the scan helper failed"
        assert effects == []  # (its copy is current)
        for helper in (copier.process, scanner.process):
            imported = _imported(helper.pid)
            assert "napari_softcopy.helper_process" in imported  # (the log is there)
            assert sorted(imported.intersection(NOT_IN_A_HELPER)) == [], helper.name
    finally:
        copier.close()
        scanner.close()
        os.close(src_fd)
        dest.close()

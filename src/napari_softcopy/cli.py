"""The ``napari-softcopy`` command line: copy, verify, simulate and demo (those two: `cli_demo`).

Exit codes: 0 verified complete / identical; 1 not verified (errors, differences); 2 bad
input (nothing written); 3 / 4 ``--move``: verified, but a copy read back differently
(nothing deleted) / the source not freed whole (`move_step`); 130 / 143 stopped by SIGINT /
SIGTERM (resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from .checks import InputError, check_folder, check_not_url
from .cli_demo import add_demo_commands
from .destinations.s3_settings import is_s3_url
from .engine import CopyEngine
from .exit_codes import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
)
from .jobs import default_status_file, register_job, unregister_job
from .move_step import exit_code as move_exit_code
from .move_step import resuming
from .option_flags import add_copy_arguments, option_args, options_from_args
from .options import CopyOptions
from .platform import (
    autogroup_scheduling,
    available_cores,
    end_with_parent,
    lower_session_priority,
    noting_handler,
)
from .progress import Progress, mib, stdout_to_devnull
from .status import JobState
from .targets import read_targets_with_options
from .verify import verify_tree


def _copy_in_own_session() -> int | None:
    """Go on in a child process that leads a session of its own, when the kernel shares the
    CPU between sessions (`platform.lower_session_priority`): there the copy's low priority
    counts against the acquisition's processes, not only against this terminal's.

    Returns None in the child, and in the parent the child's exit code. The parent only
    waits and passes Ctrl-C, SIGTERM, SIGUSR1 and SIGUSR2 on (the terminal sends them to the
    parent's process group, which the child has left); closing the terminal stops the
    copy (SIGTERM, resumable), and so does the parent's end, however it ends.
    """
    if not sys.platform.startswith("linux") or os.getsid(0) == os.getpid():
        return None
    if not autogroup_scheduling():
        return None
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    # Held back from the fork until the waiter passes them on (a blocked signal stays
    # pending through exec); the child takes them at once.
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    child = os.fork()  # no thread runs yet: nothing is copied but this one thread
    if child == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        os.setsid()
        end_with_parent(signal.SIGTERM)
        if os.getppid() != parent:  # the parent ended before the line above
            os._exit(EXIT_SIGTERM)
        return None
    # The parent only waits, as a bare interpreter: this one's modules and heap (about 20
    # MiB, a fifth of a day's copy's memory) would stay in it for the whole copy, a private
    # copy of each page the child writes.
    argv = [sys.executable, "-I", "-S", "-c", _WAITER + _WAITER_MAIN, str(child)]
    try:
        os.execv(sys.executable, argv + [str(int(sig)) for sig in _FORWARDED])
    except OSError:  # (no interpreter to start: wait in this one)
        waiter: dict = {}
        exec(_WAITER, waiter)
        return waiter["wait_for"](child, _FORWARDED)
    return None  # (not reached)


#: How soon the copy's main loop acts on a signal its handler noted.
_SIGNAL_TICK_S = 0.1


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
# What the parent of `_copy_in_own_session` runs once it has forked, standing alone: pass the
# signals on to the child (a terminal's hang-up as SIGTERM) until it ends; its exit code
# (killed by signal N: 128 + N, as a shell says).
_WAITER = """
import contextlib, os, signal, sys

def wait_for(child, forwarded):
    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM if signum == signal.SIGHUP else signum)

    for sig in forwarded:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
    _, status = os.waitpid(child, 0)  # (retried after each forwarded signal)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code
"""
_WAITER_MAIN = "sys.exit(wait_for(int(sys.argv[1]), [int(n) for n in sys.argv[2:]]))\n"


def _run_engines(
    pairs: list[tuple[str, str]],
    options: CopyOptions,
    args: argparse.Namespace,
    own: list[dict] | None = None,
) -> int:
    engines = []
    records = []
    # Each pair's options: the command line's, with what its targets.yaml entry sets.
    per_pair = [replace(options, **(own[i] if own else {})) for i in range(len(pairs))]
    # Validate every pair before creating any engine (an engine creates its lock and status
    # file in the state directory), so bad input writes nothing anywhere.
    from .checks import check_pair

    for (source, destination), pair_options in zip(pairs, per_pair, strict=True):
        if pair_options.move and resuming(source, destination):
            continue  # (a killed --move: the source may be half deleted; the copy is verified)
        check_pair(
            source, destination, force=options.force, wait_for_source=options.wait_for_source
        )
    if options.low_priority:
        if args.own_session and (code := _copy_in_own_session()) is not None:
            return code  # (the parent: the copy ran in the child, which reported everything)
        lower_session_priority()
    for (source, destination), pair_options in zip(pairs, per_pair, strict=True):
        status_file = options.status_file if len(pairs) == 1 else None
        if status_file is None:
            status_file = default_status_file(destination)
        engines.append(
            CopyEngine(source, destination, replace(pair_options, status_file=status_file))
        )
    # A handler only notes its signal (`platform.noting_handler`); the loop below acts on it.
    received: list[int] = []
    stop_signal: list[int] = []
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    finish_signals = tuple(getattr(signal, n) for n in ("SIGUSR1", "SIGUSR2") if hasattr(signal, n))
    note = noting_handler(received)
    previous = {sig: signal.signal(sig, note) for sig in stop_signals + finish_signals}

    def act_on_signals() -> None:
        # The signals noted so far, each acted on once, in the order they first came: a
        # burst of one signal is one request. One batch a call: the handler appends while
        # this runs (in this thread, at the end of the list), and a loop until the list is
        # empty would never end under a flood (42 s seen before a stop was acted on).
        batch = received[:]
        del received[: len(batch)]
        for signum in dict.fromkeys(batch):
            if signum in stop_signals:
                stop_signal.append(signum)
                for engine in engines:
                    engine.stop()
            else:
                # SIGUSR1: finish once the source is quiet; SIGUSR2: finish now, even if the
                # acquisition may still be writing (a change before the marker still cancels).
                force = signum == getattr(signal, "SIGUSR2", None)
                for engine in engines:
                    engine.finish("request", force=force)

    started: list[CopyEngine] = []
    try:
        for engine in engines:
            engine.start()
            started.append(engine)
            records.append(
                register_job(engine.source, engine.destination, engine.options.status_file)
            )
        mode = "json" if args.json else ("bar" if sys.stderr.isatty() else "plain")
        progress = Progress(engines, mode)
        period = 1.0 if mode == "json" else 0.25
        shown = 0.0
        while alive := [e._control for e in engines if e._control.is_alive()]:
            act_on_signals()
            if time.monotonic() - shown >= period:
                progress.update()
                shown = time.monotonic()
            alive[0].join(_SIGNAL_TICK_S)  # back as soon as a copy ends
        act_on_signals()
        for engine in engines:
            engine.wait()
        progress.update(final=True)
        progress.close()
    except InputError:
        for engine in started:
            engine.stop()
            engine.wait()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for record in records:
            unregister_job(record)
    code = EXIT_OK
    for engine in engines:
        s = engine.status()
        # The engine's own resume hint names the two paths only: the command printed below
        # resumes with every option too (a --bandwidth left out could flood the network).
        message = s.message.partition(" Resume with: ")[0]
        print(f"{engine.destination}: {s.state}. {message}", file=sys.stderr)
        for err in s.errors[-5:]:
            print(f"  error: {err['path'] or '-'}: {err['message']}", file=sys.stderr)
        if s.state != JobState.VERIFIED:
            code = EXIT_FAILED
        elif (freed_code := move_exit_code(s.freed)) is not None and code == EXIT_OK:
            code = freed_code  # (verified, but the source not freed whole: docs/move.md)
    if stop_signal:
        print(f"Resume with: {resume_command(args, options)}", file=sys.stderr)
        return EXIT_SIGINT if stop_signal[0] == signal.SIGINT else EXIT_SIGTERM
    return code


def resume_command(args: argparse.Namespace, options: CopyOptions) -> str:
    """The command line that resumes the copy ``args`` describe, with ``options``: every
    option that is not its default (`option_args`), the paths absolute (the resume may be
    typed in another folder), quoted for a shell."""
    words = ["napari-softcopy", "copy"]
    if args.targets is not None:
        words += ["--targets", os.path.abspath(args.targets)]
    else:
        words += [os.path.abspath(args.source), os.path.abspath(args.destination)]
    if options.status_file is not None:
        options = replace(options, status_file=os.path.abspath(options.status_file))
    words += option_args(options)
    if args.json:
        words.append("--json")
    return shlex.join(words)


def cmd_copy(args: argparse.Namespace) -> int:
    # The options first: a rule between two of them (finish_quiet above finish_quiet_max)
    # is bad input like a path, refused before anything is looked at or written.
    options = options_from_args(args)
    if args.targets is not None:
        if args.source or args.destination:
            raise InputError("give either SOURCE DEST or --targets FILE, not both")
        targets = read_targets_with_options(args.targets)
        pairs = [(source, destination) for source, destination, _ in targets]
        own = [entry for _, _, entry in targets]
    else:
        if not (args.source and args.destination):
            raise InputError("copy needs SOURCE and DEST (or --targets FILE)")
        pairs, own = [(args.source, args.destination)], None
    return _run_engines(pairs, options, args, own)


def cmd_verify(args: argparse.Namespace) -> int:
    if args.destination is None:  # `verify DEST`: the copy against its own manifest
        from .manifest import verify_against_manifest

        return EXIT_OK if verify_against_manifest(args.source, json_out=args.json) else EXIT_FAILED
    check_not_url(args.source, "source")
    check_not_url(args.destination, "destination")
    src, dst = Path(args.source), Path(args.destination)
    remote = is_s3_url(args.destination)  # (checked by opening it, below)
    for path, what in ((src, "source"), *(() if remote else ((dst, "destination"),))):
        check_folder(path, what)
    if remote:
        dst = args.destination
        from .checks import check_s3_destination

        check_s3_destination(src, dst, force=True)  # (bucket, keys, server: one line)
    report = verify_tree(
        src,
        dst,
        checksum=args.checksum,
        marker=args.marker,
        processes=min(2, available_cores()),
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            print(line)
        kind = "content hashes" if args.checksum else "size, mtime and metadata content"
        verdict = "identical" if report.ok else "DIFFERENT"
        print(
            f"{verdict}: {report.files_checked} files, {mib(report.bytes_checked)} "
            f"compared by {kind}; {report.n_missing} missing, {report.n_mismatched} "
            f"mismatched, {report.n_extra} extra, {report.n_unreadable} unreadable"
        )
    return EXIT_OK if report.ok else EXIT_FAILED


class _DeprecatedAlias(argparse.Action):
    """An option's old name: stores its value like the new one and says which to use."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, metavar="NAME", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        new = next(a.option_strings[0] for a in parser._actions if a.dest == self.dest)
        print(
            f"{parser.prog}: warning: {option_string} is deprecated; use {new} {values}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    parser = argparse.ArgumentParser(
        prog="napari-softcopy",
        description="Copy a Zarr archive while a microscope is still writing it, then verify.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "copy",
        help="copy SOURCE to DEST live, then verify",
        description="Copy SOURCE to DEST while it is written; finish when the "
        "marker appears (or SIGUSR1 once the source is quiet, SIGUSR2 at once, or "
        "--finish-when-idle), verify, and write the marker at DEST. Ctrl-C stops; run the "
        "same command to resume.",
    )
    p.add_argument("source", nargs="?", help="the Zarr archive being acquired")
    p.add_argument("destination", nargs="?", help="where the copy goes")
    p.add_argument("--targets", type=Path, help="a targets.yaml listing several pairs")
    add_copy_arguments(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON status line per second instead of a progress bar",
    )
    p.set_defaults(func=cmd_copy, parser=p)

    p = sub.add_parser(
        "verify",
        help="compare DEST with SOURCE, or DEST alone with its manifest",
        description="Compare DEST with SOURCE: every source file must be at DEST with the "
        "same size and mtime, Zarr metadata with the same content (--checksum: every file's "
        "content). With DEST alone: check the copy against the manifest written with it "
        "(every file there, of its size and BLAKE3 hash, no other file; docs/move.md). "
        "Lists each difference; exit 0 identical, 1 different, 2 bad input.",
    )
    p.add_argument("source", metavar="SOURCE_OR_DEST")
    p.add_argument("destination", nargs="?", metavar="DEST")
    p.add_argument("--checksum", action="store_true", help="compare the content of every file")
    p.add_argument(
        "--marker",
        metavar="NAME",
        default=None,
        help="leave the finish marker NAME out of the comparison (copy's --marker)",
    )
    # The old name of --marker, kept so that scripts written for it go on working.
    p.add_argument(
        "--ignore-marker", dest="marker", action=_DeprecatedAlias, help=argparse.SUPPRESS
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify, parser=p)

    add_demo_commands(sub)
    return parser


def main(argv: list[str] | None = None, *, own_session: bool = False) -> int:
    """Run the command line ``argv``; with ``own_session`` a copy may fork to lead a session
    of its own (`_copy_in_own_session`), which only the ``napari-softcopy`` process does."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # (the subcommand's usage and name, not the top level's)
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.own_session = own_session
    try:
        return args.func(args)
    except InputError as exc:
        print(f"napari-softcopy: error: {exc}", file=sys.stderr)
        return EXIT_INPUT


def console_main() -> int:
    """Entry point of ``napari-softcopy`` (and of ``python -m napari_softcopy.cli``)."""
    try:
        code = main(own_session=True)
        # Flushed here, not at the interpreter's exit: output still buffered when the reader
        # has gone would fail there, with a traceback-like message and exit code 120.
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # (`verify ... | head`): end quietly, as a shell's tools do
        stdout_to_devnull()
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(console_main())

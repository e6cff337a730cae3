"""The command line's exit codes, declared once (``--move``'s own 3 and 4: `move_step`)."""

from __future__ import annotations

EXIT_OK = 0  # verified complete / identical
EXIT_FAILED = 1  # not verified (errors, differences)
EXIT_INPUT = 2  # bad input; nothing was written
EXIT_SIGINT = 130  # stopped by Ctrl-C (resumable)
EXIT_BROKEN_PIPE = 141  # (128 + SIGPIPE: what a shell reports for a tool whose reader left)
EXIT_SIGTERM = 143  # stopped by SIGTERM (resumable)

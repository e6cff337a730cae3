"""The copy options on a command line, derived from their one declaration (`options`).

The ``copy`` command's flags (`add_copy_arguments`, each checked by its field's rule through
`option_type`), the `CopyOptions` they give (`options_from_args`), and back: the arguments
that give a set of options (`option_args`: the widget's engine processes, the CLI's "Resume
with:" line).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .options import Choice, CopyOptions, arg_text, help_text, schema


def option_type(name: str, convert: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse ``type`` for the `CopyOptions` field ``name``, by that field's own rule
    (`CopyOptions.problem`): argparse's usual "argument --workers: must be ..." and exit 2."""

    def parse(text: str) -> object:
        value = convert(text)  # (a ValueError: argparse's "invalid int value: 'x'")
        problem = CopyOptions.problem(name, value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = convert.__name__
    return parse


def add_copy_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every `CopyOptions` field to ``parser`` (the ``copy`` command).

    The value lands under the field's own name (``args.bandwidth_mb_s``), ready for
    `options_from_args`.
    """
    for name, default, option in schema():
        kwargs: dict[str, Any] = {"dest": name, "default": default}
        kwargs["help"] = argparse.SUPPRESS if option.hidden else help_text(name)
        if option.parse is None:  # an on/off flag: it sets the field to its default's opposite
            kwargs["action"] = "store_false" if default else "store_true"
        elif isinstance(option.rule, Choice):
            kwargs["choices"] = list(option.rule.values)  # (argparse's "invalid choice" line)
        elif option.rule is None:
            kwargs["type"] = option.parse
        else:
            kwargs["type"] = option_type(name, option.parse)
        if option.metavar is not None:
            kwargs["metavar"] = option.metavar
        parser.add_argument(option.flag, **kwargs)


def options_from_args(args: argparse.Namespace, **changes: Any) -> CopyOptions:
    """The `CopyOptions` that ``args`` (parsed by a parser with `add_copy_arguments`) give,
    with ``changes`` on top.

    Raises
    ------
    InputError
        The options break a rule between two fields (``finish_quiet`` above
        ``finish_quiet_max``).
    """
    values = {name: getattr(args, name) for name, _default, _option in schema()}
    return CopyOptions(**(values | changes))


def option_args(options: CopyOptions) -> list[str]:
    """The ``copy`` command's arguments that give ``options``: a flag for every value that is
    not the default, in declaration order (``["--workers", "2", "--normal-priority"]``).

    Parsed back by the ``copy`` command (`options_from_args`), they give ``options`` again.

    Raises
    ------
    ValueError
        A value no flag can give (None for an option whose default is not None).
    """
    words: list[str] = []
    for name, default, option in schema():
        value = getattr(options, name)
        if value == default:
            continue
        if option.parse is None:  # an on/off flag: given means "not the default"
            words.append(option.flag)
        elif value is None:
            raise ValueError(f"option {name} cannot be None on the command line")
        else:
            words += [option.flag, arg_text(value)]
    return words

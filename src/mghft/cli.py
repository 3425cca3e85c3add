"""Command-line entry point: ``mghft <command> ...``.

Each area of the package registers its own subcommands through a ``register(subparsers)`` function in a
light module (argparse only; heavy imports happen inside the handlers), listed in ``_COMMAND_MODULES``.
A handler receives the parsed namespace and returns an exit code.

This is the one place where failures become what the user reads: a project error (:mod:`mghft.errors`) or a
file the system could not open ends in one ``error: …`` line, at most one ``hint: …`` line, and exit code 2
(a mistaken invocation) or 1 (a runtime failure). The traceback is printed only with ``-v`` or
``MGHFT_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from mghft.errors import MghftError, UsageError, did_you_mean

_COMMAND_MODULES: tuple[str, ...] = (
    "mghft.models.cli",
    "mghft.interpret.cli",
    "mghft.train.cli",
    "mghft.serve.cli",
    "mghft.demo.cli",
    "mghft.experiments.cli",
    "mghft.scale.cli",
)

DEBUG_ENV = "MGHFT_DEBUG"
_DEBUG_HELP = "on an error, also print the Python traceback (same as MGHFT_DEBUG=1)"


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, except where it says nothing (unset, off, empty) or is in the text."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or default == []
            or not action.option_strings
            or action.nargs == 0
        ):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose mistakes are :class:`UsageError`\\ s (one ``error:`` line, exit code 2) naming the
    subcommand's ``--help`` and, for a mistyped choice or option, the closest one."""

    _innermost: ArgumentParser | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ArgumentParser._innermost = self  # the last one entered is the subcommand's: its help is the one to name
        return super().parse_known_args(args, namespace)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ArgumentParser._innermost = self
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            ArgumentParser._innermost.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        raise UsageError(
            f"{self.prog}: {message}{self._guess(message)}", hint=f"'{self.prog} --help' lists the arguments"
        )

    def _guess(self, message: str) -> str:
        """ " (did you mean …?)" for a mistyped choice or option, from argparse's own message."""
        choice = re.search(r"argument (\S+): invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if choice:
            flag, word, listed = choice.groups()
            guess = did_you_mean(word, re.findall(r"'([^']*)'", listed) or listed.split(", "))
            return guess.replace("did you mean '", f"did you mean '{flag} " if flag.startswith("-") else "'", 1)
        unknown = re.match(r"unrecognized arguments: (.*)$", message)
        if unknown:
            options = [o for o in self._option_string_actions if o.startswith("--")]
            for word in unknown.group(1).split():
                if word.startswith("-"):
                    guess = did_you_mean(word.split("=")[0], options)
                    if guess:
                        return guess
        return ""


def build_parser() -> ArgumentParser:
    """The full parser with every registered subcommand."""
    from mghft import __version__

    parser = ArgumentParser(
        prog="mghft", description="Sticker emotion recognition with MGHFT: describe, train, evaluate, predict, serve."
    )
    parser.add_argument("--version", action="version", version=f"mghft {__version__}")
    parser.add_argument("-v", "--verbose", dest="debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in _all_parsers(parser)[1:]:
        if "-v" not in command._option_string_actions:
            command.add_argument("-v", "--verbose", dest="debug", action="store_true", default=argparse.SUPPRESS,
                                 help=_DEBUG_HELP)  # fmt: skip
    return parser


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-parser below it, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _all_parsers(child)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (callable from tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on") or any(
        a in ("-v", "--verbose") for a in argv
    )
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help, --version
            return done.code if isinstance(done.code, int) else 0
        debug = debug or bool(getattr(args, "debug", False) or getattr(args, "verbose", False))
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        from mghft.console import lines_above_bars

        with lines_above_bars():
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place that turns failures into messages; bugs say how to see more
        return report_error(exc, debug=debug)


def report_error(exc: BaseException, *, debug: bool = False, file: Any = None) -> int:
    """Print ``exc`` as one ``error:`` line (continuation lines indented) and a ``hint:`` line; the exit code.

    Project errors (:class:`MghftError`) carry their own hint and exit code; a file the system could not open
    names the file (exit 1); anything else is unexpected and points at ``-v`` for the traceback.
    """
    file = file or sys.stderr
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=file)
    message, hint, code = _describe(exc)
    lines = message.strip().splitlines() or [type(exc).__name__]
    print(f"error: {lines[0]}", file=file)
    for line in lines[1:]:
        print(f"  {line.rstrip()}" if not line.startswith(" ") else line.rstrip(), file=file)
    if hint:
        print(f"hint: {hint}", file=file)
    elif not debug and code == 1 and not isinstance(exc, (MghftError, OSError)):
        print(f"hint: rerun with -v (or {DEBUG_ENV}=1) for the traceback", file=file)
    return code


def _describe(exc: BaseException) -> tuple[str, str | None, int]:
    if isinstance(exc, MghftError):
        return str(exc), exc.hint, exc.exit_code
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or str(exc)
        return f"{exc.filename}: {reason}", None, 1
    if isinstance(exc, OSError):
        return str(exc), None, 1
    return f"unexpected {type(exc).__name__}: {exc}", None, 1


if __name__ == "__main__":
    raise SystemExit(main())

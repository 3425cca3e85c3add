"""Command-line entry point: ``mghft <command> ...``.

Each area of the package registers its own subcommands through a ``register(subparsers)`` function in a
light module (argparse only; heavy imports happen inside the handlers), listed in ``_COMMAND_MODULES``.
A handler receives the parsed namespace and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_COMMAND_MODULES: tuple[str, ...] = (
    "mghft.models.cli",
    "mghft.interpret.cli",
    "mghft.train.cli",
    "mghft.serve.cli",
    "mghft.demo.cli",
    "mghft.experiments.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every registered subcommand."""
    from mghft import __version__

    parser = argparse.ArgumentParser(
        prog="mghft", description="Sticker emotion recognition with MGHFT: describe, train, evaluate, predict, serve."
    )
    parser.add_argument("--version", action="version", version=f"mghft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (callable from tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``compscale`` command: parses, calls the library, prints. A user mistake becomes one line on stderr
and exit status 2; the library itself never prints."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from compscale.errors import UserError

EXIT_USER_ERROR = 2

#: Each module defines ``register(subparsers)`` adding its commands; commands import their work lazily.
COMMAND_MODULES = [
    "compscale.commands.core",
    "compscale.commands.deploy",
    "compscale.commands.families",
    "compscale.commands.vision",
    "compscale.commands.train",
    "compscale.commands.table",
    "compscale.commands.search",
    "compscale.commands.study_vision",
    "compscale.commands.study",
]


def one_line(text: str) -> str:
    """``text`` with control and line-separator characters escaped (``\\n``, ``\\x1e``): a message that echoes
    what the user typed stays one line whatever they typed."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (no usage dump) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(one_line(f"{self.prog}: {message}"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="compscale", description="Compound model scaling of convolutional networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        # Commands that start worker processes repeat their own arguments.
        args._argv = list(sys.argv[1:] if argv is None else argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USER_ERROR
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"compscale: error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("compscale: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

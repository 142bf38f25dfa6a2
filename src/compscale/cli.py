"""The ``compscale`` command: parses, calls the library, prints. A user mistake becomes one line on stderr
and exit status 2; the library itself never prints."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Sequence

from compscale.errors import UserError, first_line, shorten

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


#: The longest error line printed: whatever the input echoed (a 5 MB YAML value, an alias bomb), one readable line.
MESSAGE_LIMIT = 1000

_WRAPPED_ERROR = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*: ")


def error_line(err: BaseException | str) -> str:
    """The one line printed for a user error: a message that carries a traceback (an error re-raised from a
    DataLoader worker embeds the worker's whole traceback) reduced to its last line, without the exception's
    type, then control characters escaped and the whole cut to :data:`MESSAGE_LIMIT` characters."""
    text = str(err)
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = _WRAPPED_ERROR.sub("", lines[-1], count=1) if lines else text
    return shorten(one_line(text), MESSAGE_LIMIT)


#: Where reading and parsing input happens: the parsers' modules, and compscale's functions that read files.
_READING_MODULES = tuple(f"{os.sep}{name}" for name in (f"yaml{os.sep}", f"json{os.sep}", f"encodings{os.sep}",
                                                         f"PIL{os.sep}", "codecs.py", "reprlib.py"))
_READING_FUNCTIONS = frozenset({"load_config", "config_from_mapping", "read_spec_file", "spec_from_dict",
                                "spec_from_json", "read_metadata", "load_checkpoint", "load_image"})


def _reading_error(err: BaseException) -> str | None:
    """One line for a RecursionError, UnicodeDecodeError or MemoryError raised while reading or parsing input
    (YAML, JSON, text decoding, Pillow), else None: the same errors raised anywhere else are bugs."""
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in _READING_FUNCTIONS or any(part in code.co_filename for part in _READING_MODULES):
            break
        tb = tb.tb_next
    else:
        return None
    if isinstance(err, UnicodeDecodeError):
        return f"an input file is not valid UTF-8 text ({first_line(err)})"
    if isinstance(err, RecursionError):
        return "an input file is nested too deeply to read"
    return "an input file is too large to read into memory"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (no usage dump) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # main prints "compscale: error: "; the command's name follows it once ("latency: ..."), not the program's.
        where = self.prog.split(maxsplit=1)[1] if " " in self.prog else ""
        raise UserError(one_line(f"{where}: {message}" if where else message))


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
        print(f"compscale: error: {error_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (RecursionError, UnicodeDecodeError, MemoryError) as err:
        # Last resort: the readers turn these into UserErrors naming the file; raised elsewhere, they are bugs.
        line = _reading_error(err)
        if line is None:
            raise
        print(f"compscale: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        # An Interrupted run saved a checkpoint first and says how to resume; a bare Ctrl-C says nothing more.
        message = error_line(err) if str(err) else ""
        print("compscale: interrupted" + (f": {message}" if message else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

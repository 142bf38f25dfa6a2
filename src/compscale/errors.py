"""The one error type for user mistakes, and the helpers that keep its message one readable line.

Anything a user can get wrong (a coefficient, a model name, a file) raises :class:`UserError`; the CLI turns
it into one line on stderr and exit status 2. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

#: Echoed input (a value read from a file, a flag, a path) is cut to this many characters in a message.
ECHO_LIMIT = 200


class UserError(ValueError):
    """A mistake in what the user asked for, explained in one readable line."""


class Interrupted(KeyboardInterrupt):
    """A run stopped on request (Ctrl-C, SIGTERM) after saving its state; the message says how to resume."""


def first_line(err: BaseException | str, default: str | None = None) -> str:
    """The first non-empty line of an exception's message (or of ``err`` itself), cut to :data:`ECHO_LIMIT`.

    Library errors (YAML, Pillow, ONNX Runtime, SQLAlchemy, a worker's traceback) often span many lines or
    have an empty message; this never raises and falls back to ``default`` or the exception's type name.
    """
    text = str(err)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if not line:
        line = default if default is not None else (type(err).__name__ if isinstance(err, BaseException) else "")
    return shorten(line)


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis: a message that echoes input stays bounded."""
    text = str(text)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for a message, bounded however large or deeply nested ``value`` is: a YAML alias bomb
    is a few kB of file and gigabytes of ``repr``, a 5 MB string is 5 MB of message. Nesting, items, strings
    and numbers are cut (``reprlib``), then the whole, to ``limit`` characters."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel = 3
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 6
    r.maxstring = r.maxother = limit
    r.maxlong = 60
    try:
        text = r.repr(value)
    except (RecursionError, MemoryError, ValueError):  # ValueError: an int too long to convert to text
        text = f"<a {type(value).__name__}>"
    return shorten(text, limit)

"""The one error type for user mistakes.

Anything a user can get wrong (a coefficient, a model name, a file) raises :class:`UserError`; the CLI turns
it into one line on stderr and exit status 2. Everything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A mistake in what the user asked for, explained in one readable line."""

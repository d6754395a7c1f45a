"""The one error type of the `emopres` command line."""


class CommandError(Exception):
    """A user error: printed as one clear line, exit status 2."""

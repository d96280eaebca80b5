"""The root of keyturn's own errors: the CLI prints any of them as one line, never a traceback."""


class KeyturnError(Exception):
    """A failure with a message meant for the operator (and free of secrets)."""

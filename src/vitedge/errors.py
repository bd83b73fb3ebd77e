"""The one exception type users see: a message that says what is wrong and what to do."""


class VitedgeError(Exception):
    """User-facing error. The CLI prints its message on one line and exits non-zero."""

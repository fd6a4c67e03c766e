"""The one exception a user is meant to see.

Anything that is the user's to fix (a missing file, a malformed line, an unknown model)
raises `TetherError` with a message that names what and where. The CLI prints that
message on one line and exits with code 2; every other exception is a bug in tether.
"""


class TetherError(Exception):
    """A problem with the user's input or environment, explained in one line."""

"""Steering inputs: a literal text or `@PATH`; light (no torch), so configs and the CLI check them first."""

from __future__ import annotations

from tether.errors import TetherError
from tether.infra.texts import read_utf8

METHODS = ("add", "guide")  # activation addition, embedding guidance


def read_text_arg(value: str, what: str) -> str:
    """A literal text, or `@PATH` for a UTF-8 file's content (`@@...` is a literal starting with @).

    >>> read_text_arg("  It rained.  ", "PASSAGE")
    'It rained.'
    >>> read_text_arg("@@home", "PASSAGE")
    '@home'
    """
    if value.startswith("@@"):
        text = value[1:]
    elif value.startswith("@"):
        text = read_utf8(value[1:])
    else:
        text = value
    text = text.strip()
    if not text:
        raise TetherError(f"{what}{f' ({value})' if value.startswith('@') else ''}: empty; give some text to steer with")
    return text

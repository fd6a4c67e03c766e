"""`python:MODULE:FUNCTION`: a user's own function named in a config or option, resolved in one place."""

from __future__ import annotations

import importlib

from tether.errors import TetherError


def python_callable(spec: str, where: str):
    """The function `spec` names, or a one-line error starting with `where` (the option or field)."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "python" or not all(parts[1:]):
        raise TetherError(f"{where}: {spec!r}: write python:MODULE:FUNCTION")
    try:
        function = getattr(importlib.import_module(parts[1]), parts[2])
    except (ImportError, AttributeError) as e:
        raise TetherError(f"{where}: {spec!r}: {e}") from None
    if not callable(function):
        raise TetherError(f"{where}: {spec!r}: not callable")
    return function

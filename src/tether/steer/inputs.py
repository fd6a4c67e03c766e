"""Steering inputs: a literal text or `@PATH`; light (no torch), so configs and the CLI check them first."""

from __future__ import annotations

from tether.infra.texts import read_text_arg  # noqa: F401  (steering reads its texts here)

METHODS = ("add", "guide")  # activation addition, embedding guidance

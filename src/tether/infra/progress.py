"""Rich progress for any work that takes over a second, written to stderr.

Library code calls `track` and `status`; they print nothing when progress is switched
off (`set_enabled(False)`, as the tests and `--quiet` do), so stdout stays clean for data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True)
_enabled = True


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if not _enabled:
        yield from items
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield from progress.track(items, total=total, description=description)


def note(message: str, soft_wrap: bool = False) -> None:
    """A line of progress news (a finished step, say); silent when progress is off; soft_wrap: one line."""
    if _enabled:
        console.print(message, highlight=False, soft_wrap=soft_wrap)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    if not _enabled:
        yield
        return
    with console.status(message):
        yield
    console.print(f"[green]✓[/] {message}")

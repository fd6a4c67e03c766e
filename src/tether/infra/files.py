"""Read a file's bytes or UTF-8 text, or fail with one line naming the path and the problem.

The ground under `jsonl` (logs) and `texts` (inputs): both read through here.
"""

from __future__ import annotations

from pathlib import Path

from tether.errors import TetherError


def read_bytes(path: str | Path, what: str = "a file") -> bytes:
    """A file's bytes, or a one-line error naming the path and the problem."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TetherError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TetherError(f"{path}: is a folder, expected {what}") from None
    except OSError as e:
        raise TetherError(f"{path}: cannot read ({e.strerror})") from None


def read_utf8(path: str | Path) -> str:
    """A file's content as text, or a one-line error naming the path and the problem."""
    return decode_utf8(read_bytes(path), str(path))


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TetherError(f"{where}: line {line}: not UTF-8 text (byte offset {e.start}); save it as UTF-8") from None

"""JSON lines: the one reader and the one appender of every log tether keeps.

A log is appended line by line, each write flushed and fsynced, so a crash (kill -9, a
power cut) loses at most the line being written. That line is *torn*: it has no final
newline. Readers skip a torn last line; the next append cuts it off first, so the file
never holds a fragment glued to a later record. A malformed line anywhere else is not a
crash's trace but damage, and reading it is a one-line error naming the file and line.

    rows = jsonl.read(run / "metrics.jsonl")             # [] when the file does not exist
    jsonl.append(run / "events.jsonl", [{"event": "start"}])
    jsonl.rewrite(path, kept_rows)                       # atomic replacement (a rewind)

`locked(path)` is an exclusive advisory lock (a sibling `.lock` file) for writers that
read, decide and write as one step (the corpus and the labels files).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tether.errors import TetherError


def line(record: dict) -> str:
    """One record as a line: UTF-8 JSON (no ASCII escaping) and a newline."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def read(path: str | Path, *, missing_ok: bool = True) -> list[dict]:
    """Every complete record of a JSONL file; a torn last line is skipped, any other bad line is an error."""
    from tether.infra.texts import read_bytes

    path = Path(path)
    if missing_ok and not path.exists() and not path.is_symlink():
        return []
    return parse(read_bytes(path, "a JSONL file"), str(path))


def parse(data: bytes, where: str) -> list[dict]:
    """Records of JSONL bytes (see `read`); `where` names the source in errors."""
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the data ends with a newline; otherwise a line a crash cut short
    records = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise TetherError(f"{where}: line {n}: not UTF-8 text; fix or remove the line") from None
        except json.JSONDecodeError as e:
            raise TetherError(f"{where}: line {n}: malformed JSON ({e.msg} at column {e.colno}); "
                              f"fix or remove the line") from None
        if not isinstance(record, dict):
            raise TetherError(f"{where}: line {n}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    del torn  # a torn tail is what a crash leaves; it is never a record
    return records


def cut_torn_tail(path: Path) -> int:
    """Remove a last line without its newline (a crash mid-append); returns the bytes removed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


def append(path: str | Path, records: Iterable[dict]) -> None:
    """Append records as one write, flushed and fsynced; a torn tail left by a crash is cut off first."""
    path = Path(path)
    text = "".join(line(r) for r in records)
    if not text:
        return
    cut_torn_tail(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def rewrite(path: str | Path, records: Iterable[dict]) -> None:
    """Replace the file with these records, atomically (a reader sees the old file or the new one)."""
    from tether.infra import atomic

    atomic.write_text(path, "".join(line(r) for r in records))


@contextlib.contextmanager
def locked(folder: str | Path, name: str = ".lock") -> Iterator[None]:
    """An exclusive lock on `folder/name`, held for the block: one writer at a time across processes."""
    with open(Path(folder) / name, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

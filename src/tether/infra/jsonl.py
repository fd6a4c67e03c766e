"""JSON lines: the one reader and the one appender of every JSONL file tether reads or keeps.

A line ends at b"\n" and nowhere else: tether writes UTF-8 without ASCII escaping, so a
string may hold U+2028, U+2029, U+0085, \v, \f or \x1c-\x1e raw, and none of them ends a
line (`str.splitlines` would break a record there; never split JSONL text with it).

A log is appended line by line, each write flushed and fsynced, so a crash (kill -9, a
power cut) loses at most the line being written. That line is *torn*: it has no final
newline. A last line without a newline is read by this rule:

- if it parses as JSON, it is a record (checked like any other line). A person's file
  often lacks the final newline; and a torn append can only parse if the crash cut
  exactly the newline, in which case the record is whole.
- if it does not parse, it is a torn tail: readers skip it (`torn_ok=False` makes it an
  error, for inputs a person wrote and tether never appends to), and the next append
  cuts it off first, so the file never holds a fragment glued to a later record. The next
  append after a complete unterminated record adds the missing newline instead.

A malformed line anywhere else is not a crash's trace but damage, and reading it is a
one-line error naming the file and line.

    rows = jsonl.read(run / "metrics.jsonl")             # [] when the file does not exist
    numbered = jsonl.read_numbered(path)                 # [(line number, record), ...]
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


def read(path: str | Path, *, missing_ok: bool = True, torn_ok: bool = True) -> list[dict]:
    """Every record of a JSONL file; a torn last line is skipped (see the module), any other bad line is an error."""
    return [record for _, record in read_numbered(path, missing_ok=missing_ok, torn_ok=torn_ok)]


def read_numbered(path: str | Path, *, missing_ok: bool = True, torn_ok: bool = True) -> list[tuple[int, dict]]:
    """`read`, each record with its line number (1-based, blank lines counted) for errors that name the line."""
    from tether.infra.files import read_bytes

    path = Path(path)
    if missing_ok and not path.exists() and not path.is_symlink():
        return []
    return parse_numbered(read_bytes(path, "a JSONL file"), str(path), torn_ok=torn_ok)


def parse(data: bytes, where: str, *, torn_ok: bool = True) -> list[dict]:
    """Records of JSONL bytes (see `read`); `where` names the source in errors."""
    return [record for _, record in parse_numbered(data, where, torn_ok=torn_ok)]


def parse_numbered(data: bytes, where: str, *, torn_ok: bool = True) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank line of JSONL bytes; lines end at b"\n" only.

    The last line without a newline is a record when it parses; when it does not, it is a torn
    tail, skipped when `torn_ok` (a log tether appends) and an error otherwise (a person's input).
    """
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the data ends with a newline
    if tail.strip() and (not torn_ok or _parses(tail)):
        lines.append(tail)
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
        records.append((n, record))
    return records


def _parses(raw: bytes) -> bool:
    """Whether a line is complete JSON: a torn append never is, unless only its newline was lost."""
    try:
        json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def cut_torn_tail(path: Path) -> int:
    """Before an append: end the last line. A torn tail (a crash mid-append) is cut off; a last line that
    parses (a complete record whose newline is missing) gets its newline. Returns the bytes removed."""
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
        if _parses(data[keep:]):
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
            removed = 0
        else:
            f.truncate(keep)
            removed = size - keep
        f.flush()
        os.fsync(f.fileno())
        return removed


def append(path: str | Path, records: Iterable[dict]) -> None:
    """Append records as one write, flushed and fsynced; a torn tail left by a crash is cut off first
    (a complete last record without its newline is kept, and ended)."""
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

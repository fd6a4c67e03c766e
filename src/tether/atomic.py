"""Write files so that a crash never leaves one half-written.

Every output goes to a temporary file in the same folder and is moved over the target
with `os.replace`, which is atomic on POSIX and Windows: a reader sees the old file or
the new one, never a mixture.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tether.errors import TetherError


def write_text(path: str | Path, text: str) -> Path:
    """Atomically replace `path` with `text` (UTF-8)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise TetherError(f"{path}: cannot write here ({e.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_records(path: str | Path, records: Iterable[dict]) -> Path:
    """Write dict records as JSONL, or as CSV when the path ends in `.csv`."""
    path = Path(path)
    records = list(records)
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for r in records for k in r))
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)
        return write_text(path, buf.getvalue())
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise TetherError(f"{path}: unknown output format; end the name in .jsonl or .csv")
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

"""Write files so that a crash never leaves one half-written.

Every output goes to a temporary file in the same folder and is moved over the target
with `os.replace`, which is atomic on POSIX and Windows: a reader sees the old file or
the new one, never a mixture. A folder (a saved model) is built under a temporary sibling
name and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from tether.errors import TetherError


def write_text(path: str | Path, text: str) -> Path:
    """Atomically replace `path` with `text` (UTF-8)."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically replace `path` with `data` (an image, say)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise TetherError(f"{path}: cannot write here ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to fill; it replaces `path` only when the block ends without error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        umask = os.umask(0)
        os.umask(umask)
        building.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide a saved model from other users
    except OSError as e:
        raise TetherError(f"{path}: cannot write here ({e.strerror})") from None
    try:
        yield building
        publish(building, path)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def publish(building: Path, path: Path) -> None:
    """Move a completed folder into place: swap, then delete the old one, never a moment with half of either."""
    if path.exists():
        old = building.with_suffix(".old")
        os.replace(path, old)
        os.replace(building, path)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(building, path)


def write_figure(path: str | Path, fig, dpi: int = 90) -> Path:
    """A matplotlib figure as a PNG, atomically, and the figure closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())


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

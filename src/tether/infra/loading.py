"""Load a model from a local folder, the Hugging Face cache or the hub, and say in one line why it failed.

`offline_first` is the one path of every loader (causal LMs, tokenizers, sentence embedders,
configs): the local folder, else the Hugging Face cache, else the hub unless HF_HUB_OFFLINE
is set. A failure names the model and tells two kinds apart:

- not found: no such local folder, or a hub id that is neither in the cache nor (online) on the hub;
- found but not loadable, with the cause: a config.json that is not JSON, truncated or corrupt
  weights, an architecture this transformers does not know, a missing file, code of the model's own
  that needs `--trust-remote-code`, or out of memory.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from tether.errors import TetherError

_MISSING = ("does not appear to have a file named", "couldn't find them in the cached files", "couldn't connect")


def offline_first(loader, source: str, name: str, kwargs: dict):
    """`loader(source, **kwargs)` from the disk first; the hub only if the model is not there and not offline."""
    if Path(source).exists():
        return _load(loader, source, name, kwargs, f"the local folder {source}")
    if source.startswith(("/", "./", "../", "~")) or source.count("/") > 1:
        raise TetherError(f"model '{name}' not found: no such local folder {source}")
    if in_hf_cache(source):
        try:
            return loader(source, local_files_only=True, **kwargs)
        except Exception as e:  # every failure becomes one line with its cause
            if offline() or not _missing_file(e):
                raise failure(name, "its copy in the Hugging Face cache", e) from None
    elif offline():
        raise TetherError(f"model '{name}' not found: not a local folder and not in the Hugging Face cache, and "
                          f"HF_HUB_OFFLINE is set; download it first or pass a local path")
    try:
        return loader(source, **kwargs)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        if in_hf_cache(source) and not _missing_file(e):  # downloaded, then failed: the model's fault
            raise failure(name, "the copy downloaded from the hub", e) from None
        raise TetherError(f"model '{name}' not found: not a local folder, not in the Hugging Face cache, "
                          f"and the hub could not provide it ({first_line(e)})") from None


def _load(loader, source: str, name: str, kwargs: dict, where: str):
    try:
        return loader(source, **kwargs)
    except Exception as e:
        raise failure(name, where, e) from None


def place(model, device, name: str):
    """`model.to(device).eval()`, with running out of memory on the way a one-line error."""
    try:
        return model.to(device).eval()
    except (RuntimeError, MemoryError) as e:
        if not _out_of_memory(e):
            raise
        raise failure(name, f"it onto {device}", e) from None


def failure(name: str, where: str, e: BaseException) -> TetherError:
    return TetherError(f"model '{name}': cannot load {where}: {cause(e)}")


def cause(e: BaseException) -> str:
    """What went wrong, in words, with the library's own first line."""
    text, low = first_line(e), str(e).lower()
    if _out_of_memory(e):
        return f"out of memory ({text}); use a smaller model, --dtype bfloat16, or another device"
    if "not a valid json" in low or "json" in type(e).__name__.lower():
        return f"its config.json is not valid JSON ({text})"
    if type(e).__name__ == "SafetensorError" or "deserializ" in low:
        return f"its weights file is damaged or truncated ({text})"
    if "trust_remote_code" in low or "custom code" in low:
        return f"it needs Python code of its own from the hub ({text}); pass --trust-remote-code if you trust it"
    if "should have a `model_type` key" in low:
        return f"no config.json naming its model_type, so not a model folder ({text})"
    if "does not recognize this architecture" in low or "model_type" in low:
        import transformers

        return f"an architecture transformers {transformers.__version__} does not support ({text})"
    if "no file named" in low or any(m in low for m in _MISSING):
        return f"a file is missing ({text}); tether loads safetensors weights only"
    return text


def _out_of_memory(e: BaseException) -> bool:
    low = str(e).lower()
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "out of memory" in low
            or "can't allocate memory" in low)


def _missing_file(e: BaseException) -> bool:
    from huggingface_hub.errors import EntryNotFoundError

    return isinstance(e, EntryNotFoundError) or any(m in str(e) for m in _MISSING)


def in_hf_cache(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds any snapshot of this hub id (no network, no validation)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    snapshots = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def quiet_transformers() -> None:
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


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__

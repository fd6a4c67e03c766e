"""Model loading: the embedded cache's integrity check, and clear errors for unknown models."""

import json

import pytest
import torch

from tether.errors import TetherError
from tether.infra.models import (
    MANIFEST,
    _cache_is_intact,
    load_causal_lm,
    load_embedder,
)


def fake_cache(folder):
    header = json.dumps({"__metadata__": {}}).encode()
    weights = len(header).to_bytes(8, "little") + header
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text("{}")
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    (folder / MANIFEST).write_text(json.dumps({"files": files}))
    return folder


def test_intact_cache_is_accepted(tmp_path):
    assert _cache_is_intact(fake_cache(tmp_path / "c"))


@pytest.mark.parametrize("damage", ["truncate", "no_manifest", "bad_header", "missing_file"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    folder = fake_cache(tmp_path / "c")
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-3])
    elif damage == "no_manifest":
        (folder / MANIFEST).unlink()
    elif damage == "bad_header":
        data = bytearray(weights.read_bytes())
        data[9] = ord("!")
        weights.write_bytes(bytes(data))
    else:
        (folder / "config.json").unlink()
    assert not _cache_is_intact(folder)


def test_unknown_names_are_clear_errors(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TetherError, match="model 'nobody/nothing' not found: .*HF_HUB_OFFLINE is set"):
        load_causal_lm("nobody/nothing")
    with pytest.raises(TetherError, match="unknown embedded model 'embedded:gpt-5'"):
        load_causal_lm("embedded:gpt-5")


def test_local_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(TetherError, match="cannot load the local folder"):
        load_causal_lm(str(tmp_path))


def test_embedded_embedder_loads_offline_and_embeds():
    embedder = load_embedder()
    vectors = embedder.encode(["a happy day at the beach", "a joyful afternoon by the sea", "tax law"])
    assert vectors.shape == (3, 384)
    near = float(vectors[0] @ vectors[1]) / float((vectors[0] ** 2).sum() ** 0.5 * (vectors[1] ** 2).sum() ** 0.5)
    far = float(vectors[0] @ vectors[2]) / float((vectors[0] ** 2).sum() ** 0.5 * (vectors[2] ** 2).sum() ** 0.5)
    assert near > far


def test_adapters_load_from_safetensors_only(tmp_path, tiny_gemma):
    """PEFT would fall back to a pickled adapter_model.bin; tether refuses it with one line."""
    import copy

    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from tether.errors import TetherError
    from tether.infra.models import load_adapter

    folder = tmp_path / "adapter"
    peft = get_peft_model(copy.deepcopy(tiny_gemma), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft.save_pretrained(folder)
    assert load_adapter(copy.deepcopy(tiny_gemma), folder) is not None
    weights = load_file(folder / "adapter_model.safetensors")
    (folder / "adapter_model.safetensors").unlink()
    torch.save(weights, folder / "adapter_model.bin")
    with pytest.raises(TetherError, match="not in adapter_model.safetensors; tether loads safetensors only"):
        load_adapter(copy.deepcopy(tiny_gemma), folder)


@pytest.mark.parametrize("cpuinfo, want", [
    ("flags : fpu sse avx2 fma", torch.float32),  # this machine's kind: bf16 is emulated, slower than float32
    ("flags : fpu avx2 avx512f avx512_bf16", torch.bfloat16),
    ("flags : fpu avx2 amx_bf16 amx_tile", torch.bfloat16),
])
def test_dtype_auto_takes_bf16_only_where_the_cpu_has_bf16_units(cpuinfo, want, monkeypatch, tmp_path):
    from tether.infra import models

    fake = tmp_path / "cpuinfo"
    fake.write_text(cpuinfo + "\n")
    real_path = models.Path
    monkeypatch.setattr(models, "Path", lambda p: fake if str(p) == "/proc/cpuinfo" else real_path(p))
    assert models.resolve_dtype("auto", torch.device("cpu")) is want
    assert models.resolve_dtype("float32", torch.device("cpu")) is torch.float32  # asked for: never changed
    assert models.resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16


def test_dtype_auto_is_said_when_a_model_loads(tiny_model_dir, capsys):
    from tether.infra import progress
    from tether.infra.models import load_causal_lm

    progress.set_enabled(True)
    model, _ = load_causal_lm(str(tiny_model_dir), device="cpu", dtype="auto")
    err = capsys.readouterr().err
    assert "dtype auto -> " in err and str(model.dtype).removeprefix("torch.") in err

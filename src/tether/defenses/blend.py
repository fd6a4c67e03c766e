"""Checkpoint blending: the weights base + A * (tuned - base), one model or a sweep over A.

The source text: "take the weights of the base model and interpolate (weighted average)
them with the weights of the RL tuned model. This seems to undo more of the damage from
the misspecified objective than it undoes the helpful parts of the RL tuning."

    tether blend --tuned runs/cheerful --alpha 0.5 --out models/cheerful-half
    tether blend --tuned runs/cheerful --sweep 0,0.25,0.5,0.75,1 --prompts examples/prompts_heldout.txt

How the blend is made, exactly at both ends:
- a LoRA adapter (a run's `final/` or a checkpoint): its update is dW = B @ A * scaling, so
  multiplying every LoRA layer's `scaling` by A gives base + A * dW in memory; to write
  it, `merge_and_unload()` folds it into the weights;
- a full model: every floating-point tensor is `torch.lerp(base, tuned, A)`.

The sweep over A, its measurements and its recommendation: `tether.defenses.sweep`.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.errors import TetherError
from tether.infra import atomic
from tether.infra.models import check_adapter, load_adapter, load_causal_lm
from tether.infra.rundir import RunDir

ADAPTER_CONFIG = "adapter_config.json"


# --- what to blend ------------------------------------------------------------------------


@dataclass
class Tuned:
    """The tuned weights: their folder, their kind (lora or full) and the run directory around them."""

    folder: Path
    kind: str
    run_dir: Path | None


def find_tuned(path: str | Path) -> Tuned:
    """A run directory (its `final/`), a checkpoint or adapter folder, or a full model folder."""
    path = Path(path)
    if not path.is_dir():
        raise TetherError(f"--tuned {path}: no such folder")
    around = [path, path.parent if path.name == "final" else None,
              path.parent.parent if path.parent.name == "checkpoints" else None]
    run_dir = next((p for p in around if p is not None and RunDir(p).has_run()), None)
    folder = path / "final" if run_dir == path else path
    if run_dir == path and not folder.is_dir():
        raise TetherError(f"{path}: this run has no final/ adapter yet; pass a checkpoint: "
                          f"{path / 'checkpoints' / 'checkpoint-N'}")
    if (folder / ADAPTER_CONFIG).is_file():
        return Tuned(folder, "lora", run_dir)
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return Tuned(folder, "full", run_dir)
    raise TetherError(f"{folder}: neither a LoRA adapter ({ADAPTER_CONFIG}) nor a model (config.json and "
                      f".safetensors weights)")


def check_alpha(alpha: float) -> float:
    if not 0 <= alpha <= 1:
        raise TetherError(f"alpha {alpha:g}: must be within [0, 1] (0: the base model, 1: the tuned one)")
    return alpha


def parse_alphas(text: str) -> list[float]:
    """'0,0.25,0.5' -> [0.0, 0.25, 0.5]: sorted, each once, each checked."""
    try:
        alphas = sorted({float(a) for a in text.split(",") if a.strip()})
    except ValueError:
        raise TetherError(f"--sweep {text!r}: write numbers in [0, 1] separated by commas, e.g. 0,0.5,1") from None
    if not alphas:
        raise TetherError(f"--sweep {text!r}: no values of A given")
    return [check_alpha(a) for a in alphas]


def base_name(tuned: Tuned, base: str | None, config: str | Path | None = None) -> str:
    """--base, else the policy_model of --config or of the run's config.yaml."""
    if base:
        return base
    if config is not None:
        from tether.infra.config import parse_yaml
        from tether.infra.texts import read_utf8

        stored = parse_yaml(read_utf8(config), str(config))
        if stored.get("policy_model"):
            return stored["policy_model"]
        raise TetherError(f"{config}: no policy_model; pass --base MODEL")
    stored = RunDir(tuned.run_dir).config() if tuned.run_dir is not None else {}
    if stored.get("policy_model"):
        return stored["policy_model"]
    raise TetherError(f"{tuned.folder}: not inside a run directory, so the base model is unknown; pass --base MODEL")


# --- the blend, in memory -------------------------------------------------------------------


class Blend:
    """base + alpha * (tuned - base), held in `model` and changed in place by `set_alpha`."""

    def __init__(self, tuned: Tuned, base: str, device: str = "auto", trust_remote_code: bool = False):
        self.tuned, self.base_name, self.alpha = tuned, base, 1.0
        if tuned.kind == "lora":
            check_lora(tuned.folder)  # before the base model loads
        base_model, self.tokenizer = load_causal_lm(base, device=device, trust_remote_code=trust_remote_code, fast_head=True)
        if tuned.kind == "lora":
            from peft.tuners.lora import LoraLayer

            self.model = load_adapter(base_model, tuned.folder).eval()
            self._scalings = [(layer, name, scale) for layer in self.model.modules() if isinstance(layer, LoraLayer)
                              for name, scale in layer.scaling.items()]
        else:
            self.base_model, self.model = base_model, _load_full(tuned.folder, base_model, base, trust_remote_code)
            self._base = base_model.state_dict()
            self._targets = _floating(self.model)
            self._tuned = {k: v.clone() for k, v in self._targets.items()}

    @torch.no_grad()
    def set_alpha(self, alpha: float) -> None:
        check_alpha(alpha)
        if self.tuned.kind == "lora":
            for layer, name, scale in self._scalings:
                layer.scaling[name] = scale * alpha
        else:
            for key, target in self._targets.items():
                target.copy_(torch.lerp(self._base[key], self._tuned[key], alpha))
        self.alpha = alpha

    @contextlib.contextmanager
    def base(self):
        """The base model itself, for reference logits and base samples."""
        if self.tuned.kind == "lora":
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.base_model

    def merged(self):
        """A plain transformers model holding the blend at the current alpha (a copy)."""
        model = copy.deepcopy(self.model)
        return model.merge_and_unload() if self.tuned.kind == "lora" else model

    def describe(self) -> dict:
        return {"base": self.base_name, "tuned": str(self.tuned.folder), "kind": self.tuned.kind,
                "alpha": self.alpha, "weights": "base + alpha * (tuned - base)"}


def check_lora(folder: Path) -> None:
    """A LoRA adapter blending can scale, checked from its files alone."""
    check_adapter(folder)
    try:
        settings = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise TetherError(f"{folder / ADAPTER_CONFIG}: cannot read it ({e})") from None
    if settings.get("peft_type") != "LORA":
        raise TetherError(f"{folder}: a {settings.get('peft_type')} adapter; blending takes LoRA adapters")
    if settings.get("use_dora") or settings.get("modules_to_save"):
        raise TetherError(f"{folder}: a DoRA adapter or one with fully trained modules (modules_to_save) is not "
                          f"linear in its LoRA scale; merge it into a full model folder and blend that")


def _load_full(folder: Path, base_model, base: str, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    from tether.infra.loading import cause, place

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
    except Exception as e:  # damaged weights, a broken config.json, an unknown architecture: one line
        raise TetherError(f"{folder}: cannot load this model: {cause(e)}") from None
    model = place(model, base_model.device, str(folder))
    ours, theirs = base_model.state_dict(), model.state_dict()
    odd = sorted(ours.keys() ^ theirs.keys()) or [k for k in ours if ours[k].shape != theirs[k].shape]
    if odd:
        raise TetherError(f"{folder}: its weights do not match the base model {base}'s (first difference: "
                          f"tensor {odd[0]}); blend a model tuned from this base")
    return model


def _floating(model) -> dict[str, torch.Tensor]:
    """The floating-point tensors of a state dict, tied ones once."""
    seen, out = set(), {}
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            out[key] = tensor
    return out


def save_blend(blend: Blend, out: str | Path) -> Path:
    """The merged weights (safetensors), the tokenizer and blend.json, renamed into `out` when complete."""
    model = blend.merged()
    with atomic.folder(out) as building:
        model.save_pretrained(building)
        blend.tokenizer.save_pretrained(building)
        atomic.write_json(building / "blend.json", blend.describe())
    return Path(out)


def blend_to_folder(tuned_path: str | Path, alpha: float, out: str | Path, *, base: str | None = None,
                    config: str | Path | None = None, force: bool = False, trust_remote_code: bool = False) -> Path:
    """`tether blend --alpha`: every input checked before any model is loaded."""
    check_alpha(alpha)
    tuned = find_tuned(tuned_path)
    name = base_name(tuned, base, config)
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not force:
            raise TetherError(f"{out}: already exists; pass --force to replace it")
        if not (out.is_dir() and not out.is_symlink() and (out / "blend.json").is_file()):
            raise TetherError(f"{out}: --force replaces only a blended model tether wrote (a folder with blend.json); "
                              f"choose another --out")
    blend = Blend(tuned, name, trust_remote_code=trust_remote_code)
    blend.set_alpha(alpha)
    return save_blend(blend, out)

"""Activation addition: a steering vector from the policy's own residual stream, added while it writes.

The vector at decoder layer L is the passage's mean activation there minus a neutral
baseline text's (Turner et al. 2023, "Activation Addition"), both averaged over their
tokens after the first (Gemma's <bos> carries a residual hundreds of times the norm of a
word's, so it would swamp the mean). It is made unit length and added at every position,
prompt and generated, scaled by α times the passage's mean residual norm at that layer:
α is the size of the push relative to what the layer already carries, which keeps one
scale of α meaningful across layers (the residual norm grows several-fold with depth) and
across models. α = 0 adds exact zeros: the output is the unsteered model's, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tether.errors import TetherError

# A neutral baseline: narrative, moodless, no person or place, so that passage - baseline keeps
# the passage's content and mood and drops "this is a short English story" which every text shares.
DEFAULT_BASELINE = "It was a day like any other. Some things happened, and then some other things happened."


@dataclass
class SteeringVector:
    layer: int
    direction: torch.Tensor  # (hidden,), unit length
    residual_norm: float  # the passage's mean residual norm at `layer`: what α is relative to

    def scaled(self, alpha: float) -> torch.Tensor:
        return self.direction * (alpha * self.residual_norm)


def decoder_layers(model) -> list:
    """The model's decoder blocks, for a plain or PEFT-merged Hugging Face causal LM."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return list(obj)
    raise TetherError(f"{type(model).__name__}: cannot find its decoder layers to steer")


def check_layer(model, layer: int) -> int:
    count = len(decoder_layers(model))
    if not 0 <= layer < count:
        raise TetherError(f"layer {layer}: out of range; this model has decoder layers 0 to {count - 1}")
    return layer


def _hidden(output) -> torch.Tensor:
    """A decoder layer's residual output: Gemma 3 in transformers 5 returns the tensor, older ones a tuple."""
    return output[0] if isinstance(output, tuple) else output


@torch.inference_mode()
def mean_activation(model, tokenizer, text: str, layer: int) -> tuple[torch.Tensor, float]:
    """(hidden,) mean residual at `layer`'s output over the text's tokens after the first, and their mean norm."""
    seen = {}

    def capture(module, args, output):
        seen["h"] = _hidden(output)[0].float()  # (tokens, hidden)

    ids = torch.tensor([tokenizer(text)["input_ids"]], device=model.device)
    handle = decoder_layers(model)[check_layer(model, layer)].register_forward_hook(capture)
    try:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        handle.remove()
    h = seen["h"][1:] if seen["h"].shape[0] > 1 else seen["h"]  # drop <bos> (or the first token)
    return h.mean(0), float(h.norm(dim=-1).mean())


def steering_vector(model, tokenizer, passage: str, layer: int, baseline: str = DEFAULT_BASELINE) -> SteeringVector:
    """passage - baseline at `layer`, unit length, with the passage's residual norm there."""
    target, norm = mean_activation(model, tokenizer, passage, layer)
    neutral, _ = mean_activation(model, tokenizer, baseline, layer)
    diff = target - neutral
    size = float(diff.norm())
    if size == 0.0:
        raise TetherError("the passage and the baseline give the same activation; steering toward it does nothing")
    return SteeringVector(layer, diff / size, norm)


@contextlib.contextmanager
def added(model, vector: SteeringVector, alpha: float) -> Iterator[None]:
    """While inside, layer `vector.layer` outputs its residual + α·norm·direction; the hook is removed on any exit."""
    layer = decoder_layers(model)[check_layer(model, vector.layer)]
    first = next(model.parameters())
    push = vector.scaled(alpha).to(device=first.device, dtype=first.dtype)

    def add(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + push, *output[1:])
        return output + push

    handle = layer.register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()

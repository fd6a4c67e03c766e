"""Continue a context while steering toward a passage: the two methods behind one object.

    from tether.steer import Steerer
    s = Steerer.load()                                   # the embedded Gemma and MiniLM
    s.add(context, passage, alpha=0.05, layer=6)         # activation addition
    s.guide(context, passage, candidates=4)              # embedding guidance

Every sample i is drawn from its own seed, `item_seed(seed, i)`, so a method at strength 0
(α = 0, or one candidate a chunk) and the unsteered policy draw the same random stream, and
points of a strength sweep differ only by the strength.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tether.errors import TetherError
from tether.infra.generate import Branch, Generator, load_policy
from tether.infra.models import EMBEDDED_EMBEDDER, EMBEDDED_LM, embed, load_embedder
from tether.infra.seeds import item_seed
from tether.steer.guide import guided
from tether.steer.inputs import METHODS, read_text_arg  # noqa: F401  (read_text_arg re-exported)
from tether.steer.vector import (
    DEFAULT_BASELINE,
    added,
    check_layer,
    decoder_layers,
    steering_vector,
)


def default_layer(model) -> int:
    """A third of the way up: early enough that later layers turn the push into words (docs/results.md)."""
    return len(decoder_layers(model)) // 3


@dataclass
class Steerer:
    model: object
    tokenizer: object
    embedder: object = None  # needed by guide only
    temperature: float = 1.0
    suppress_special_tokens: bool = True

    @classmethod
    def load(cls, model: str = EMBEDDED_LM, adapter=None, embedder: str | None = EMBEDDED_EMBEDDER, *,
             device: str = "auto", dtype: str = "float32", trust_remote_code: bool = False, **kwargs) -> Steerer:
        """The policy (with `adapter` merged) and the embedder; `trust_remote_code` reaches both loaders."""
        lm, tokenizer = load_policy(model, adapter, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        embedder = load_embedder(embedder, device=device, trust_remote_code=trust_remote_code) if embedder else None
        return cls(lm, tokenizer, embedder, **kwargs)

    def __post_init__(self):
        self.gen = Generator(self.model, self.tokenizer, temperature=self.temperature,
                             suppress_special_tokens=self.suppress_special_tokens)

    @property
    def window(self) -> int | None:
        config = getattr(self.model, "config", None)
        config = getattr(config, "get_text_config", lambda: config)()
        return getattr(config, "max_position_embeddings", None)

    def _prompt(self, context: str, max_tokens: int, what: str = "context") -> list[int]:
        if not context.strip():
            raise TetherError(f"{what}: empty; give some text")
        ids = self.gen.prompt_ids(context)
        if self.window and len(ids) + max_tokens > self.window:
            raise TetherError(f"{what}: {len(ids)} tokens + {max_tokens} new ones exceed the model's window of "
                              f"{self.window} tokens; shorten it or ask for fewer tokens")
        return ids

    def unsteered(self, context: str, *, n: int = 1, max_tokens: int = 48, seed: int = 0) -> list[str]:
        ids = self._prompt(context, max_tokens)
        out = []
        for i in range(n):
            torch.manual_seed(item_seed(seed, i))
            out.append(self.gen.text(self.gen.extend(ids, Branch([]), 1, max_tokens)[0]))
        return out

    def vector(self, passage: str, layer: int | None = None, baseline: str = DEFAULT_BASELINE):
        self._prompt(passage, 0, "passage")
        layer = default_layer(self.model) if layer is None else check_layer(self.model, layer)
        return steering_vector(self.model, self.tokenizer, passage, layer, baseline)

    def add(self, context: str, passage: str, *, alpha: float = 0.05, layer: int | None = None,
            baseline: str = DEFAULT_BASELINE, n: int = 1, max_tokens: int = 48, seed: int = 0) -> list[str]:
        """Activation addition: α·‖residual‖·unit(passage − baseline) added at `layer` while sampling."""
        vector = self.vector(passage, layer, baseline)
        self._prompt(context, max_tokens)
        with added(self.model, vector, alpha):
            return self.unsteered(context, n=n, max_tokens=max_tokens, seed=seed)

    def guide(self, context: str, passage: str, *, candidates: int = 4, chunk_tokens: int = 8,
              selection_temperature: float = 0.02, n: int = 1, max_tokens: int = 48, seed: int = 0) -> list[str]:
        """Embedding guidance: each chunk, `candidates` continuations, kept by similarity to the passage."""
        if self.embedder is None:
            raise TetherError("embedding guidance needs a sentence embedder; load the Steerer with one")
        if candidates < 1 or chunk_tokens < 1:
            raise TetherError(f"candidates ({candidates}) and chunk tokens ({chunk_tokens}) must be at least 1")
        self._prompt(passage, 0, "passage")
        self._prompt(context, max_tokens)
        target = embed(self.embedder, [passage])[0]
        similarity = lambda texts: embed(self.embedder, texts) @ target
        out = []
        for i in range(n):
            s = item_seed(seed, i)
            torch.manual_seed(s)
            out.append(guided(self.gen, similarity, context, candidates, max_tokens, chunk_tokens,
                              selection_temperature, np.random.default_rng(s)))
        return out

    def run(self, method: str, context: str, passage: str, **kwargs) -> list[str]:
        if method not in METHODS:
            raise TetherError(f"method {method!r}: write one of {', '.join(METHODS)}")
        return getattr(self, method)(context, passage, **kwargs)

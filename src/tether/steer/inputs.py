"""Steering inputs, checked before any model loads: a literal text or `@PATH`, the method, the adapter,
the embedder's name, and the layer and token budget against the model's config.json (no weights)."""

from __future__ import annotations

from pathlib import Path

from tether.infra.texts import read_text_arg  # noqa: F401  (steering reads its texts here)

METHODS = ("add", "guide")  # activation addition, embedding guidance


def check_steer(method: str, model: str, *, layer: int | None = None, adapter: Path | None = None,
                embedder: str | None = None, max_tokens: int = 1, trust_remote_code: bool = False) -> None:
    """Every argument of `tether steer` that can be checked without loading a model; one line each."""
    from tether.errors import TetherError
    from tether.infra.models import EMBEDDED_EMBEDDER, check_adapter, peek_config

    if method not in METHODS:
        raise TetherError(f"--method {method!r}: write one of {', '.join(METHODS)}")
    if layer is not None and layer < 0:
        raise TetherError(f"--layer {layer}: out of range; layers count from 0")
    if adapter is not None:
        check_adapter(adapter)
    if embedder is not None and embedder.startswith("embedded:") and embedder != EMBEDDED_EMBEDDER:
        raise TetherError(f"--embedder {embedder}: unknown embedded embedder; the embedded one is "
                          f"'{EMBEDDED_EMBEDDER}'")
    config = peek_config(model, trust_remote_code=trust_remote_code)  # a missing or broken model fails here too
    text = config.get_text_config() if config is not None else None
    count, window = getattr(text, "num_hidden_layers", None), getattr(text, "max_position_embeddings", None)
    if layer is not None and isinstance(count, int) and layer >= count:
        raise TetherError(f"layer {layer}: out of range; this model has decoder layers 0 to {count - 1}")
    if isinstance(window, int) and max_tokens >= window:
        raise TetherError(f"--max-tokens {max_tokens}: the model's window is {window} tokens, the context included; "
                          f"ask for fewer")

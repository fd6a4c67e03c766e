"""Latent steering: continue a context so that it takes on a passage's content and mood.

The source text's last system (an AdaVAE) embeds a passage and replays it in another
context. tether does it two ways, without training a VAE (reasons: docs/results.md, "Latent
steering"):

- `vector`: activation addition, a steering vector from the policy's own residual stream
  (passage - neutral baseline at one decoder layer), added by a forward hook while it writes;
- `guide`: embedding guidance, the corpus sampler's tree search with the passage's MiniLM
  embedding as the judge;
- `steerer`: both behind one object (`Steerer`), with the input checks, and `read_text_arg`
  (a literal or `@file`), used by `tether steer` (cli_steer.py);
- `reward`: the same objective as a `tether tune` reward term (`passages`, `passage_weight`).
"""

_HOME = {"Steerer": "tether.steer.steerer", "read_text_arg": "tether.steer.inputs",
         "PassageReward": "tether.rewards.passage", "steering_vector": "tether.steer.vector",
         "added": "tether.steer.vector", "DEFAULT_BASELINE": "tether.steer.vector"}


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'tether.steer' has no attribute {name!r}")


__all__ = ["DEFAULT_BASELINE", "PassageReward", "Steerer", "added", "read_text_arg", "steering_vector"]

"""What pays: verdicts turned into TRL reward functions.

`constitution` (`ConstitutionReward`: the constitution's combined log-odds; several judges
combined) -> `shaping` (what the log-odds pay: raw, log-sigmoid, reference) ; `gold` (a gold
judge fitted to a person's labels, paid as a reward term) ; `passage` (the steering objective,
similarity to passages, as a reward term). Each is a callable `fn(prompts=..., completions=...)`
that drops into a user's own TRL script; `tune` wires them into `tether tune`.
"""

_HOME = {
    "ConstitutionReward": "tether.rewards.constitution",
    "GoldReward": "tether.rewards.gold",
    "RewardShape": "tether.rewards.shaping",
    "PassageReward": "tether.rewards.passage",
}


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'tether.rewards' has no attribute {name!r}")


__all__ = ["ConstitutionReward", "GoldReward", "PassageReward", "RewardShape"]

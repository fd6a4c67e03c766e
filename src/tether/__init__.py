"""tether: tune language models against a written constitution with AI feedback, and see
and stop the reward hacking that follows.

The package, by role (each folder's docstring says how its files fit together):

- `judge/`: what to judge and how (constitution -> prompts, tokens -> evaluator -> combine;
  audit of the judge's weak spots; the train and gold judges as a pair);
- `tune/`: what pays and the TRL wiring (the tune config, the reward, `tether tune`);
- `watch/`: what went wrong and what a person sees (monitors, drift, detectors, the TRL
  callbacks, the report);
- `defenses/`: one module per defense (blending and its sweep, embedding KL, utility);
- `corpus/`: corpus extension with a person auditing it (sample, select, review, sft);
- `infra/`: files, logs, configs, models and devices, progress: what every part stands on.

A user's own TRL script imports from here alone:

    from tether import ConstitutionReward, DetectorCallback, Evaluator, MonitorCallback
"""

# Loaded on first use (PEP 562): `import tether` and the CLI stay fast; torch and
# transformers load only when a name that needs them is asked for.
_HOME = {
    "EmbeddingKL": "tether.defenses.embedding_kl", "EmbeddingKLConfig": "tether.defenses.embedding_kl",
    "InstrumentalUtility": "tether.defenses.utility", "UtilityConfig": "tether.defenses.utility",
    "ValueStore": "tether.defenses.utility", "ValueStoreCallback": "tether.defenses.utility_callback",
    "TetherError": "tether.errors",
    "Constitution": "tether.judge.constitution", "Principle": "tether.judge.constitution",
    "load_constitution": "tether.judge.constitution",
    "Evaluator": "tether.judge.evaluator", "ScoreResult": "tether.judge.evaluator",
    "ConstitutionReward": "tether.rewards.constitution",
    "DetectorCallback": "tether.watch.callbacks", "MonitorCallback": "tether.watch.callbacks",
    "RewardTerm": "tether.watch.callbacks", "StepPrinter": "tether.watch.callbacks",
    "DetectorConfig": "tether.watch.detectors", "EmbeddingDrift": "tether.watch.drift",
    "sample_base": "tether.watch.drift",
    "EMBEDDED_LM": "tether.infra.models", "EMBEDDED_EMBEDDER": "tether.infra.models",
    "load_causal_lm": "tether.infra.models", "load_embedder": "tether.infra.models",
    "read_prompts": "tether.infra.texts",
}


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tether' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_HOME])


__all__ = [
    "EMBEDDED_EMBEDDER", "EMBEDDED_LM", "load_causal_lm", "load_embedder", "read_prompts", "sample_base",
    "Constitution", "ConstitutionReward", "DetectorCallback", "DetectorConfig", "EmbeddingDrift", "EmbeddingKL",
    "EmbeddingKLConfig", "Evaluator", "InstrumentalUtility", "MonitorCallback", "Principle", "RewardTerm",
    "ScoreResult", "StepPrinter", "TetherError", "UtilityConfig", "ValueStore", "ValueStoreCallback",
    "load_constitution",
]
__version__ = "0.2.0"

from tether import _moved  # noqa: E402  (old module paths, kept importable for a release)

_moved.install()

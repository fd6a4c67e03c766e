"""An experiment's config: one task (a tune config), arms that change it, seeds, and how runs are judged.

    tune: tune_cheerful.yaml
    output_dir: runs/experiment-cheerful
    seeds: [0, 1, 2]
    arms:
      plain: {}
      early_stop: {set: {on_hack: stop, save_every: 1}, choose: best}
      embedding_kl: {set: {embedding_kl: {coef: 5}}}
      blend: {of: plain, choose: blend}
    eval_prompts: prompts_heldout.txt
    golds: [golds/good_hidden, fluent.yaml]

An arm's `set` is a tune config overlay (nested mappings, as in the YAML); `choose` says which
model of the run is evaluated: `final` (the last adapter, or the one at an early stop), `blend`
(the blend sweep's recommended A on the run's own training prompts and gold, never the held-out
evaluation's golds: no arm chooses its settings by peeking at what ranks it), or `best` (the last
checkpoint whose own batch passed the detectors, as `on_hack: stop` marks it: a first trip at step
k keeps checkpoint k-2, since checkpoint k-1 wrote the batch that tripped; the base model when no
such checkpoint was saved; the final adapter when none fired).

An arm with `of: ARM` tunes nothing: it evaluates another model of ARM's runs (same seeds), so a
defense that only chooses or blends a model (`blend`, `best`) costs an evaluation, not a tune.

The baselines a user tries before tuning are arms too (experiment/baselines.py):

      prompted: {kind: prompted, instruction: "Here is a happy, cheerful story."}
      best_of_16: {kind: best_of_n, n: 16, reward_of: recipe}

`prompted` puts the instruction before each prompt (the readers and golds see only the prompt);
`best_of_n` draws n completions and keeps the one the reward of arm `reward_of` (that arm's exact
tune config: its judge, golds, weights and shape) likes best. Both sample the base model, or with
`model: ARM` that arm's final model, seed by seed. On the base they have no training seed: they
are evaluated once (folder ARM-sFIRST_SEED), with the evaluation's sampling seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tether.errors import TetherError

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["tune", "prompted", "best_of_n"] = Field(
        "tune", description="tune (a run of the task with `set`), prompted (the base, or `model`, with an instruction "
        "before each prompt) or best_of_n (n draws, the one `reward_of`'s reward likes best kept): the baselines "
        "train nothing")
    instruction: str | None = Field(None, description="kind: prompted: the text put before every prompt (a space "
                                    "between them); readers and golds see only the prompt")
    n: int | None = Field(None, description="kind: best_of_n: completions drawn per evaluated text")
    reward_of: str | None = Field(None, description="kind: best_of_n: the arm whose exact reward picks the best of n "
                                  "(default: the task's tune config, no overlay)")
    model: str = Field("base", description="kind: prompted or best_of_n: the model sampled: base, or a tuning arm "
                       "(its final model, seed by seed)")
    set: dict = Field(default_factory=dict, description="tune config fields this arm changes (nested, as in the YAML)")
    choose: Literal["final", "blend", "best"] = Field(
        "final", description="the model evaluated: final (last adapter; the stop point under on_hack: stop), blend "
        "(the blend sweep's recommended A, chosen on the run's training prompts and its own gold) or best (the last "
        "checkpoint whose own batch passed: checkpoint k-2 for a first detector trip at step k; the base model if no "
        "such checkpoint was saved; final if none fired)")
    blend_alphas: list[float] = Field([0.0, 0.25, 0.5, 0.75, 1.0], min_length=2,
                                      description="the A values the blend sweep tries (choose: blend)")
    of: str | None = Field(None, description="another arm whose runs this one evaluates instead of tuning its own "
                           "(with `choose`: blend or best); `set` must then be empty")


class Registration(BaseModel):
    """What `--register` commits to before anything runs (experiment/registration.py)."""

    model_config = ConfigDict(extra="forbid")
    hypotheses: list[str] = Field(min_length=1, description="what the experiment tests, each a sentence")
    primary: str = Field(description="the primary measure, e.g. 'good (readers)'")
    secondary: list[str] = Field(default_factory=list, description="secondary measures")
    analysis: str = Field(description="how the measures will be compared: the test, the intervals, corrections")


QUESTIONS = ("on_task", "cheerful", "fluent", "good")  # a reading's default questions: examples/labels_reading.yaml's


class Reading(BaseModel):
    """How `--read` builds the blind reading's batches (experiment/reading.py)."""

    model_config = ConfigDict(extra="forbid")
    batch_items: int = Field(80, ge=1, description="about this many items a batch (whole prompts: every source of a "
                             "prompt in the same batch)")
    rereads: float = Field(0.1, ge=0.0, le=1.0, description="share of a batch's items added again from other batches")
    compare_arm: str | None = Field(None, description="the arm paired against every other source (default: the first "
                                    "arm that tunes)")
    seed: int = Field(0, description="the shuffle's seed")
    spec: str | None = Field(None, description="a label spec YAML (`tether label --spec`): the questions read, one of "
                             "them `good` (default: on_task, cheerful, fluent, good, as examples/labels_reading.yaml)")
    instructions: str = Field("docs/reading.md", description="the written instructions every reader gets, named in "
                              "the batches' README and the summary")
    among: str | None = Field("cheerful", description="the tone question: good is also shown among the texts read yes "
                              "on it (tone and quality apart); null for none")


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tune: Path = Field(description="the task: a tune config every arm starts from")
    output_dir: Path = Field(description="the experiment folder: runs/, results, summary, plots")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="training seeds; every arm runs every seed (a baseline on the base model, which has none, runs once)")
    arms: dict[str, Arm] = Field(min_length=1, description="arm name -> overlay on the tune config")
    eval_prompts: Path = Field(description="held-out prompts (.txt or .jsonl), never trained on")
    eval_completions: int = Field(4, ge=1, description="completions sampled per held-out prompt and run")
    eval_seed: int = Field(1234, description="the sampling seed of every evaluation, the base model's too: "
                           "runs differ only by their weights")
    golds: list[str] = Field(default_factory=list, description="judges of the evaluation samples beside the run's own: "
                             "a constitution YAML, a gold folder (`tether gold fit`), or python:MODULE:FUNCTION "
                             "(prompts, completions) -> scores")
    jobs: int = Field(1, ge=1, description="runs side by side (each a process; memory permitting)")
    reading: Reading = Field(default_factory=Reading, description="the blind reading's batches (`--read`)")
    registration: Registration | None = Field(None, description="hypotheses, measures and analysis that "
                                              "`--register` commits to before anything runs")
    trust_remote_code: bool = Field(False, description="every run's tune config gets trust_remote_code: true, so its "
                                    "models may run Python code of their own from the hub (`--trust-remote-code`)")

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, Arm]) -> dict[str, Arm]:
        import re

        for name in arms:
            if not re.match(NAME, name) or name == "base":
                raise ValueError(f"arm name {name!r}: letters, digits, _ . - only, and not 'base' (the untuned model)")
        for name, arm in arms.items():
            _check_kind(name, arm, arms)
            if arm.of is None:
                continue
            if arm.of not in arms or arms[arm.of].of is not None:
                raise ValueError(f"arm {name}: of: {arm.of!r} is not an arm that tunes (one of "
                                 f"{', '.join(a for a in arms if arms[a].of is None)})")
            if arm.set:
                raise ValueError(f"arm {name}: of: {arm.of} evaluates that arm's runs; it cannot also set "
                                 f"{', '.join(arm.set)} (make it an arm of its own)")
        return arms

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds}: each seed once")
        return seeds

    def arm_seeds(self, arm: str) -> list[int]:
        """The seeds an arm runs: every seed, but a baseline on the base model (no training seed) runs once."""
        choice = self.arms[arm]
        return self.seeds if choice.kind == "tune" or choice.model != "base" else self.seeds[:1]

    def runs(self) -> list[tuple[str, int]]:
        """Every (arm, seed), seed-major: with few jobs, each seed's arms finish together (a paired comparison early)."""
        return [(arm, seed) for seed in self.seeds for arm in self.arms if seed in self.arm_seeds(arm)]

    def needs(self, arm: str) -> str | None:
        """The arm whose runs this one reads (`of:`, or a baseline's `model:`): the grid starts it after them."""
        choice = self.arms[arm]
        return choice.of or (choice.model if choice.kind != "tune" and choice.model != "base" else None)

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.output_dir / "runs" / f"{arm}-s{seed}"

    def tuned_dir(self, arm: str, seed: int) -> Path:
        """Where the model an arm evaluates was tuned: its own run, its `of` arm's, or a baseline's `model` arm's
        (a baseline on the base model: its own folder, which holds no tuning)."""
        return self.run_dir(self.needs(arm) or arm, seed)


def _check_kind(name: str, arm: Arm, arms: dict[str, Arm]) -> None:
    """Each kind's own fields present and sensible, and no field of another kind."""
    tuning = [a for a in arms if arms[a].kind == "tune" and arms[a].of is None]
    own = {"prompted": {"instruction"}, "best_of_n": {"n", "reward_of"}, "tune": set()}[arm.kind]
    stray = [f for f in ("instruction", "n", "reward_of") if getattr(arm, f) is not None and f not in own]
    if arm.kind != "tune":
        stray += [f for f in ("set", "of") if getattr(arm, f)] + (["choose"] if arm.choose != "final" else [])
    elif arm.model != "base":
        stray.append("model")
    if stray:
        raise ValueError(f"arm {name}: {', '.join(stray)}: not a field of kind {arm.kind} (a {arm.kind} arm takes "
                         f"{', '.join(sorted(own | ({'set', 'of', 'choose'} if arm.kind == 'tune' else {'model'})))})")
    if arm.kind == "prompted" and not (arm.instruction or "").strip():
        raise ValueError(f"arm {name}: kind prompted needs an instruction: the text put before each prompt")
    if arm.kind == "best_of_n" and (arm.n is None or arm.n < 1):
        raise ValueError(f"arm {name}: kind best_of_n needs n, the completions drawn per text, at least 1 (got {arm.n})")
    for field, value in (("reward_of", arm.reward_of), ("model", None if arm.model == "base" else arm.model)):
        if value is not None and value not in tuning:
            raise ValueError(f"arm {name}: {field}: {value!r} is not an arm that tunes (one of {', '.join(tuning) or 'none'}"
                             + (", or base)" if field == "model" else ")"))


def load_experiment(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    from tether.infra.config import load_config

    config = load_config(ExperimentConfig, path, overrides)
    for name in ("tune", "eval_prompts"):
        if not getattr(config, name).is_file():
            raise TetherError(f"{path}: {name}: {getattr(config, name)}: no such file")
    if config.output_dir.exists() and not config.output_dir.is_dir():
        raise TetherError(f"{path}: output_dir: {config.output_dir}: is a file; give a folder for the experiment")
    golds = []
    for gold in config.golds:  # a path is read against the config's folder, as the Path fields are
        if not gold.startswith("python:") and not Path(gold).exists() and (Path(path).parent / gold).exists():
            gold = str((Path(path).parent / gold).absolute())
        golds.append(gold)
    config = config.model_copy(update={"golds": golds, "reading": _reading(path, config.reading), "arms": {name: _arm_paths(path, name, arm)
                                                               for name, arm in config.arms.items()}})
    for arm in config.arms:
        if config.arms[arm].of is None and config.arms[arm].kind == "tune":
            tune_config(config, arm, config.seeds[0])  # every overlay checked before anything runs
    return config


def _reading(path: str | Path, reading: Reading) -> Reading:
    """The reading's spec read against the config's folder, and its questions checked: `good`, and `among`."""
    from tether.labels.spec import load_spec

    questions = list(QUESTIONS)
    if reading.spec is not None:
        spec = Path(reading.spec)
        if not spec.exists() and (Path(path).parent / spec).exists():
            spec = (Path(path).parent / spec).absolute()
        reading = reading.model_copy(update={"spec": str(spec)})
        questions = [q.name for q in load_spec(spec).questions]
    for field, name in (("spec", "good"), ("among", reading.among)):
        if name is not None and name not in questions:
            raise TetherError(f"{path}: reading.{field}: the questions ({', '.join(questions)}) have no {name!r}; "
                              f"{'add a `good` question (the primary measure)' if field == 'spec' else 'name one of them, or null'}")
    return reading


def _arm_paths(path: str | Path, name: str, arm: Arm) -> Arm:
    """An arm's file fields (`constitution: cheerful.yaml`) read as the tune file's are: from the working
    directory, or else from the experiment file's folder; a file that is in neither is refused now."""
    from tether.infra.config import path_fields, resolve_paths
    from tether.tune.config import TuneConfig

    changed = dict(arm.set)
    resolve_paths(TuneConfig, changed, Path(path).parent, from_file=set(changed))
    for key in sorted((set(path_fields(TuneConfig)) - {"output_dir"}) & set(changed)):
        if isinstance(changed[key], str) and changed[key] and not Path(changed[key]).exists():
            raise TetherError(f"{path}: arm {name}: set: {key}: {arm.set[key]}: no such file (read from the working "
                              f"directory, or else from the experiment file's folder)")
    return arm.model_copy(update={"set": changed})


def flatten(overlay: dict, prefix: str = "") -> list[str]:
    """{'embedding_kl': {'coef': 5}} -> ['embedding_kl.coef=5'], values written as YAML (the --set syntax)."""
    out = []
    for key, value in overlay.items():
        if isinstance(value, dict) and value:
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out


def tune_config(config: ExperimentConfig, arm: str, seed: int):
    """The tune config of one run: the task, the arm's overlay, the seed and the run's folder."""
    from tether.infra.config import load_config
    from tether.tune.config import TuneConfig

    overlay = flatten(config.arms[arm].set)
    if any(o.split("=", 1)[0] in ("seed", "output_dir") for o in overlay):
        raise TetherError(f"arm {arm}: set: seed and output_dir are the experiment's to choose "
                          f"(its seeds: and output_dir:)")
    sets = [*overlay, f"seed={seed}", f"output_dir={config.run_dir(arm, seed).absolute()}",
            *(["trust_remote_code=true"] if config.trust_remote_code else [])]
    return load_config(TuneConfig, config.tune, sets, where=f"{config.tune} (arm {arm})")


def save_settings(config: ExperimentConfig) -> Path:
    """OUTPUT_DIR/experiment.yaml: the settings the grid runs with, written whole (never by --summary or --pairs)."""
    from tether.infra import atomic

    path = config.output_dir / "experiment.yaml"
    atomic.write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path

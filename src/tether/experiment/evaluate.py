"""One run's evaluation: its chosen model on the held-out prompts, sampled with the experiment's seed.

The blend sweep does the measuring (defenses/sweep.py: the same seed before each prompt, train
judge, the run's gold, monitors, exact token KL and embedding drift to the base), at one A: 1 for
the final adapter, the sweep's recommendation for a `choose: blend` arm. The experiment's golds
then score the same samples. The base model is the same sweep at A = 0, measured once per
experiment under a lock, so runs side by side do not measure it twice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tether.errors import TetherError
from tether.experiment.config import ExperimentConfig
from tether.infra import atomic, jsonl

MEASURES = ("train", "gold", "kl", "kl_completion", "tokens", "drift", "monitor/affirmation_rate", "monitor/repetition",
            "monitor/longest_repeat_run", "monitor/distinct_1", "monitor/distinct_2", "monitor/words")


def gold_key(spec: str) -> str:
    """The column of an experiment gold: `eval/NAME`, NAME from the folder, file or function."""
    if spec.startswith("python:"):
        return "eval/" + spec.rsplit(":", 1)[-1]
    return "eval/" + Path(spec).stem


def check_golds(config: ExperimentConfig) -> None:
    """Every gold readable, before any run starts (a typo found after a day of tuning is a lost day)."""
    from tether.labels.gold_judge import check_gold

    keys = [gold_key(g) for g in config.golds]
    if len(set(keys)) != len(keys):
        raise TetherError(f"golds: two golds share a name ({', '.join(keys)}); rename a folder or file")
    for spec in config.golds:
        if spec.startswith("python:"):
            _callable(spec)
        elif not Path(spec).exists():  # check_gold's own message names tune's field, gold_constitution
            raise TetherError(f"golds: {spec}: no such file or folder; a gold is a constitution YAML, a folder made by "
                              f"`tether gold fit`, or python:MODULE:FUNCTION")
        else:
            check_gold(Path(spec))


def _callable(spec: str):
    from tether.infra.callables import python_callable

    return python_callable(spec, "golds")


def score_golds(config: ExperimentConfig, settings, samples: list[dict]) -> None:
    """Add each experiment gold's score to every sample (in place), as `eval/NAME`."""
    from tether.labels.gold_judge import GoldSpec, load_gold

    prompts, completions = [s["prompt"] for s in samples], [s["completion"] for s in samples]
    for spec in config.golds:
        if spec.startswith("python:"):
            scores = np.asarray(_callable(spec)(prompts, completions), dtype=float)
        else:
            gold = load_gold(GoldSpec.of(settings, Path(spec)))
            scores = gold.score(prompts, completions)
        if len(scores) != len(samples):
            raise TetherError(f"golds: {spec}: returned {len(scores)} scores for {len(samples)} texts")
        for s, v in zip(samples, scores):
            s[gold_key(spec)] = float(v)


def evaluate(config: ExperimentConfig, run_dir: Path, alpha: float, out: Path, model: Path | None = None,
             chosen: dict | None = None) -> dict:
    """The sweep at one A on the held-out prompts, the golds added; writes out/result.json and out/samples.jsonl.

    `model`: a checkpoint of the run to blend instead of its final adapter; `chosen`: what was evaluated and why,
    kept in the result."""
    from tether.defenses.sweep import sweep_blends
    from tether.infra.rundir import RunDir
    from tether.tune.config import TuneConfig

    shared = config.output_dir / "base" / "base_samples.jsonl"  # the drift reference, sampled once per experiment
    if shared.exists() and not (out / "base_samples.jsonl").exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared, out / "base_samples.jsonl")
    settings = RunDir(run_dir).settings(TuneConfig, output_dir=run_dir)
    sweep = sweep_blends(model or run_dir, [alpha], settings, prompts=config.eval_prompts,
                         completions=config.eval_completions, out=out, seed=config.eval_seed)
    samples = list(jsonl.read(out / "samples.jsonl"))
    score_golds(config, settings, samples)
    for i, s in enumerate(samples):  # the pair key of a blind comparison: same prompt, same draw
        s["draw"] = i
    atomic.write_records(out / "samples.jsonl", samples)
    row = sweep.rows[0]
    result = {k: row[k] for k in MEASURES if k in row}
    result.update({gold_key(g): float(np.mean([s[gold_key(g)] for s in samples])) for g in config.golds})
    result.update({"alpha": alpha, "samples": len(samples), **(chosen or {})})
    atomic.write_json(out / "result.json", result)
    return result


def tuned_cost(run_dir: Path, result: dict) -> dict:
    """A tuned run's bill: training (steps, tokens generated, seconds, from metrics.jsonl) and inference
    (the tokens of one evaluated text, nothing judged)."""
    from tether.infra.rundir import RunDir
    from tether.tune.config import tuned_settings

    settings = tuned_settings(run_dir)
    per_step = settings.prompts_per_step * settings.completions_per_prompt
    steps = [m for m in jsonl.read(RunDir(run_dir).path / "metrics.jsonl") if "completions/mean_length" in m]
    return {"train_steps": len(steps),
            "train_tokens": float(sum(m["completions/mean_length"] * per_step for m in steps)),
            "train_seconds": float(sum(m.get("step_time", 0.0) for m in steps)),
            "inference_tokens": result.get("tokens"), "inference_judged": 0}


def choose_best(run_dir: Path) -> tuple[Path | None, float, dict]:
    """`choose: best`: (checkpoint or None for the final adapter, A, what was chosen) for a finished run.

    The last policy whose own batch passed the detectors (`RunDir.last_passing_policy`), the one `on_hack: stop`
    marks `best`: a first trip at step k keeps checkpoint-(k - 2), since checkpoint-(k - 1) wrote the tripping
    batch; A = 0 (the base model) when no such checkpoint was saved; the final adapter when none fired."""
    from tether.infra.rundir import RunDir

    run = RunDir(run_dir)
    trip = run.first_trip()
    if trip is None:
        return None, 1.0, {"model": "final", "first_trip": None}
    saved = run.last_passing_policy(trip)
    if saved is None:
        return None, 0.0, {"model": "base", "first_trip": trip}
    return saved[1], 1.0, {"model": saved[1].name, "model_step": saved[0], "first_trip": trip}


def judging_key(settings) -> str:
    """What decides a base row's samples and scores: the policy's sampling, the judges and how they read, the gold,
    the embedder. Runs whose keys match share one base evaluation."""
    import hashlib

    def digest(path) -> str | None:
        if path is None:
            return None
        path = Path(path)
        path = path / "gold.json" if path.is_dir() else path
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path)

    fields = {k: getattr(settings, k, None) for k in ("policy_model", "temperature", "max_completion_tokens",
                                                       "suppress_special_tokens", "base_samples_per_prompt", "judge_model",
                                                       "judge_reads", "ensemble", "ensemble_lambda", "gold_model",
                                                       "gold_debias", "embedder")}
    fields.update({"constitution": digest(settings.constitution), "gold": digest(settings.gold_constitution),
                   "judges": [(j.model, digest(j.constitution)) for j in settings.judges]})
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:10]


def evaluate_base(config: ExperimentConfig, any_run: Path) -> tuple[dict, str]:
    """The untuned model, measured as every run is (A = 0 of a finished run's blend), once per judging key:
    (its result, its folder's name: `base`, or `base-KEY` for runs judged otherwise than the first)."""
    from tether.infra.rundir import RunDir
    from tether.tune.config import TuneConfig

    key = judging_key(RunDir(any_run).settings(TuneConfig, output_dir=any_run))
    config.output_dir.mkdir(parents=True, exist_ok=True)
    with jsonl.locked(config.output_dir, ".base.lock"):
        first = config.output_dir / "base"
        known = json.loads((first / "judging.json").read_text())["key"] if (first / "judging.json").exists() else None
        if known is None and (first / "result.json").exists():  # measured before keys were kept: claimed by this run's
            atomic.write_json(first / "judging.json", {"key": key})
            known = key
        name = "base" if known in (None, key) else f"base-{key}"
        folder = config.output_dir / name
        if (folder / "result.json").exists():
            return json.loads((folder / "result.json").read_text()), name
        result = evaluate(config, any_run, 0.0, folder)
        atomic.write_json(folder / "judging.json", {"key": key})
        return result, name

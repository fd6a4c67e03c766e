"""One run of an experiment, in its own process: tune (fresh, resumed, or skipped when finished), then evaluate.

    python -m tether.experiment.worker EXPERIMENT.yaml ARM SEED

The grid starts one worker per run, so a run that crashes (or runs out of memory) takes no
other run with it, and `--jobs N` runs N side by side. The exit code says how it ended:
0 done, 2 refused (bad input: one line on stderr), 1 crashed (traceback in the run's log).
"""

from __future__ import annotations

import sys

from tether.errors import TetherError


def run_one(path: str, arm: str, seed: int, overrides: list[str] = ()) -> dict:
    from tether.experiment.config import load_experiment, tune_config
    from tether.experiment.evaluate import choose_best, evaluate, evaluate_base, tuned_cost
    from tether.infra import atomic, progress
    from tether.infra.rundir import RunDir

    config = load_experiment(path, list(overrides))
    own, tuned = config.run_dir(arm, seed), config.tuned_dir(arm, seed)
    result_file = own / "eval" / "result.json"
    if result_file.exists():
        import json

        return json.loads(result_file.read_text())
    run, choice = RunDir(tuned), config.arms[arm]
    if choice.kind != "tune":  # a baseline: nothing tuned, maybe another arm's final model sampled
        from tether.experiment.baselines import evaluate_baseline

        if choice.model != "base" and not run.is_finished():
            raise TetherError(f"arm {arm} seed {seed}: arm {choice.model}'s run {tuned} has not finished; run that "
                              f"arm first")
        return evaluate_baseline(config, arm, seed, own / "eval")
    if choice.of is not None:  # another arm's run: never tuned here (the grid starts this run after that one)
        if not run.is_finished():
            raise TetherError(f"arm {arm} seed {seed}: arm {choice.of}'s run {tuned} has not finished; run that arm first")
    elif not run.is_finished():
        from tether.tune.run import run_tune

        progress.console.print(f"{arm} seed {seed}: {'resuming' if run.has_run() else 'tuning'} -> {tuned}")
        run_tune(tune_config(config, arm, seed), resume=run.has_run())
    model, alpha, chosen = None, 1.0, {"model": "final"}
    if choice.choose == "blend":  # A chosen on the run's training prompts and its own gold
        from tether.defenses.sweep import sweep_blends
        from tether.tune.config import tuned_settings

        sweep = sweep_blends(tuned, choice.blend_alphas, tuned_settings(tuned), out=own / "blend")
        alpha = float(sweep.recommended["alpha"])
    elif choice.choose == "best":
        model, alpha, chosen = choose_best(tuned)
    if choice.of is not None:
        chosen["of"] = choice.of
    _, base = evaluate_base(config, tuned)
    result = evaluate(config, tuned, alpha, own / "eval", model=model, chosen=chosen)
    result.update({**tuned_cost(tuned, result), "base": base})  # the base row judged as this run is
    atomic.write_json(own / "eval" / "result.json", result)
    return result


def pin_code() -> None:
    """Import every tether module now, so a worker runs one version of the code: a grid runs for hours, and a
    module imported lazily later would otherwise be read as it is then, beside modules read before an edit."""
    import importlib
    import pkgutil
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)  # the tether package's folder (its __init__ is above this floor)
    used = ("tether.experiment.", "tether.defenses.", "tether.rewards.", "tether.tune.", "tether.labels.",
            "tether.watch.", "tether.judge.", "tether.infra.")  # what a worker runs; not the CLI, serve or steer
    for module in pkgutil.walk_packages([root], "tether."):
        if not module.name.startswith(used):
            continue
        try:
            importlib.import_module(module.name)
        except Exception:  # noqa: BLE001  (an optional extra not installed: imported where used, as before)
            continue


def main(argv: list[str]) -> int:
    from tether.infra import progress, threads

    if len(argv) < 3:
        print("usage: python -m tether.experiment.worker EXPERIMENT.yaml ARM SEED [field=value ...]", file=sys.stderr)
        return 2
    progress.set_enabled(False)
    try:
        threads.configure()  # TETHER_THREADS from the grid: its share of the cores
        pin_code()
        run_one(argv[0], argv[1], int(argv[2]), argv[3:])
    except TetherError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

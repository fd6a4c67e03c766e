"""`tether experiment` on tiny models: a 2-arm x 2-seed grid end to end, a failing run, resume, blind pairs, statistics."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from test_cli import ENV, one_line_error

from tether.experiment.stats import mean_ci, paired, win_rate


def experiment(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tether.cli", "experiment", *map(str, args)], capture_output=True,
                          text=True, env=env or ENV, timeout=2400)


def test_statistics_on_known_inputs():
    m = mean_ci([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2) = 4.3027
    assert m.mean == 2 and m.n == 3 and math.isclose(m.high - m.mean, 4.302653 / math.sqrt(3), rel_tol=1e-5)
    assert mean_ci([5.0]).n == 1 and math.isinf(mean_ci([5.0]).high)  # one seed: no interval, not a zero-width one
    d = paired([3.0, 5.0, 4.0], [1.0, 2.0, 3.0])  # differences 2, 3, 1
    assert d.mean == 2 and math.isclose(d.p, 0.07417990, rel_tol=1e-5)  # scipy's one-sample t on (2, 3, 1)
    assert paired([1.0, 1.0], [1.0, 1.0]).p == 1.0
    same = paired([1.5, 2.5], [1.0, 2.0])  # +0.5 twice: no spread is not certainty
    assert same.p is None and same.low == float("-inf") and same.text(2) == "+0.50"
    w = win_rate(8, 2, 0)  # Wilson 95% interval of 8/10: [0.4902, 0.9433]
    assert w.mean == 0.8 and math.isclose(w.low, 0.4902, abs_tol=1e-3) and math.isclose(w.high, 0.9433, abs_tol=1e-3)
    assert math.isclose(w.p, 0.109375)  # two-sided sign test, 8 of 10
    assert win_rate(2, 2, 4).mean == 0.5


@pytest.fixture
def grid(tmp_path, tiny_model_dir, examples_dir):
    tune = tmp_path / "tune.yaml"
    tune.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"), "gold_constitution": str(examples_dir / "on_topic.yaml"),
        "prompts": str(examples_dir / "prompts.txt"), "steps": 2, "completions_per_prompt": 2,
        "max_completion_tokens": 4, "save_every": 1, "lora_rank": 2, "lora_target_modules": ["q_proj"],
        "base_samples_per_prompt": 2,
    }))
    (tmp_path / "heldout.txt").write_text("The old man sat by the river.\nA girl found a key in the sand.\n")
    (tmp_path / "mygold.py").write_text("def length(prompts, completions):\n    return [float(len(c)) for c in completions]\n")
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump({
        "tune": "tune.yaml", "output_dir": str(tmp_path / "exp"), "seeds": [0, 1], "eval_prompts": "heldout.txt",
        "eval_completions": 2, "golds": [str(examples_dir / "fluent.yaml"), "python:mygold:length"], "jobs": 2,
        "arms": {"plain": {}, "strong_kl": {"set": {"kl_coef": 0.5}}},
    }))
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), ENV.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return config, tmp_path / "exp", env


def test_a_grid_end_to_end_with_a_failure_resume_and_pairs(grid):
    config, out, env = grid
    broken = ["--set", "arms.broken.set.policy_model=/nowhere/model"]  # a third arm whose runs fail
    result = experiment(config, *broken, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "broken seed 0: FAILED" in result.stderr and "[4/6 done" in result.stderr  # the grid went on
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {(f["arm"], f["seed"]) for f in failures} == {("broken", 0), ("broken", 1)}
    assert all(f["exit_code"] == 2 and "/nowhere/model" in " ".join(f["tail"]) for f in failures)

    results = json.loads((out / "results.json").read_text())
    runs = {(r["arm"], r["seed"]): r for r in results["runs"]}
    assert {k for k, r in runs.items() if r["status"] == "done"} == {(a, s) for a in ("plain", "strong_kl") for s in (0, 1)}
    done = runs["plain", 0]
    assert done["steps"] == 2 and done["alpha"] == 1.0 and done["samples"] == 4
    for key in ("train", "gold", "kl", "drift", "monitor/distinct_2", "eval/fluent", "eval/length"):
        assert key in done and math.isfinite(done[key]), key
    base = results["base"]
    assert base["kl"] == 0 and base["alpha"] == 0
    # Every run and the base were sampled on the same prompts with the same seed: the draws line up.
    samples = {k: [json.loads(line) for line in (out / "runs" / f"{k[0]}-s{k[1]}" / "eval" / "samples.jsonl").read_text()
                   .splitlines()] for k in runs if runs[k]["status"] == "done"}
    base_samples = [json.loads(line) for line in (out / "base" / "samples.jsonl").read_text().splitlines()]
    for rows in samples.values():
        assert [(r["prompt"], r["draw"]) for r in rows] == [(r["prompt"], r["draw"]) for r in base_samples]
        assert all(r["eval/length"] == len(r["completion"]) for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| plain | 2/2 |" in summary and "| broken | 0/2 |" in summary and "Paired against `plain`" in summary
    assert "## Failed runs" in summary and (out / "plots.png").stat().st_size > 1000 and (out / "index.html").exists()
    assert len((out / "results.csv").read_text().splitlines()) == 7  # header + 6 runs

    # A run killed before its end: rerunning resumes it and skips the finished ones.
    killed = out / "runs" / "strong_kl-s1"
    for name in ("finished.json", "eval"):
        path = killed / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(killed / "final")
    shutil.rmtree(killed / "checkpoints" / "checkpoint-2")
    stamp = (out / "runs" / "plain-s0" / "eval" / "result.json").stat().st_mtime_ns
    again = experiment(config, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 done, 1 to run" in again.stderr.replace("4 runs, ", "")
    assert (killed / "eval" / "result.json").exists()
    assert (out / "runs" / "plain-s0" / "eval" / "result.json").stat().st_mtime_ns == stamp
    events = [json.loads(line)["event"] for line in (killed / "events.jsonl").read_text().splitlines()]
    assert "resume" in events
    metrics = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [1, 2]

    # Blind pairs: each arm against the base, matched by prompt and draw; a person's answers reach the summary.
    # --pairs and --summary read the experiment; they never rewrite its settings as run (experiment.yaml).
    stored = (out / "experiment.yaml").read_bytes(), (out / "experiment.yaml").stat().st_mtime_ns
    pairs = experiment(config, "--pairs", "--set", "eval_completions=7", env=env)
    assert pairs.returncode == 0 and "--mode compare" in pairs.stderr
    from tether.labels.items import compare_pairs, read_items
    from tether.labels.store import LabelsFile

    arm, base_items = read_items(out / "compare" / "plain.jsonl"), read_items(out / "compare" / "base.jsonl")
    shown = compare_pairs(arm, base_items, who="ana")
    assert len(shown) == len({(i.prompt, i.completion) for i in arm}) and all(p.left.prompt == p.right.prompt for p in shown)
    assert all(p.left.source["pair"] == p.right.source["pair"] for p in shown)
    assert all(p.left.completion != p.right.completion or p.left.source["arm"] != p.right.source["arm"] for p in shown)
    labels = LabelsFile(out / "compare" / "labels.jsonl")
    for n, p in enumerate(shown):  # the person prefers the tuned side 3 times in 4
        tuned = "left" if p.left.source["arm"] == "plain" else "right"
        labels.add_compare(p.prompt, p.left, p.right, tuned if n % 4 else {"left": "right", "right": "left"}[tuned], "ana")
    summary = experiment(config, "--summary", env=env)
    assert summary.returncode == 0, summary.stderr[-2000:]
    won = sum(1 for n in range(len(shown)) if n % 4)
    assert ((out / "experiment.yaml").read_bytes(), (out / "experiment.yaml").stat().st_mtime_ns) == stored
    assert f"| plain | {len(shown)} | {won / len(shown):.2f} [" in (out / "summary.md").read_text()

    # An arm `of` another evaluates that arm's runs without tuning. choose: best takes the last checkpoint whose own
    # batch passed (plain seed 0 is given a first trip at step 3, as if it had run on: checkpoint-2 wrote that batch,
    # checkpoint-1 step 2's, which passed), the final adapter when none fired (seed 1: the same model and seed draw
    # the same texts as plain's own evaluation).
    from tether.experiment.evaluate import choose_best
    from tether.infra import jsonl

    run = out / "runs" / "plain-s0"
    assert choose_best(run) == (None, 1.0, {"model": "final", "first_trip": None})
    jsonl.append(run / "events.jsonl", [{"event": "detector", "step": 3, "detectors": []}])
    stamp = (run / "final" / "adapter_model.safetensors").stat().st_mtime_ns
    later = experiment(config, "--set", "arms.plain_best.of=plain", "--set", "arms.plain_best.choose=best", env=env)
    assert later.returncode == 0, later.stderr[-3000:]
    assert "4 done, 2 to run" in later.stderr
    read = lambda folder: [json.loads(line)["completion"] for line in (folder / "eval" / "samples.jsonl").read_text().splitlines()]
    results = {}
    for seed in (0, 1):
        own = out / "runs" / f"plain_best-s{seed}"
        assert sorted(p.name for p in own.iterdir()) == ["eval"]  # nothing tuned here
        results[seed] = json.loads((own / "eval" / "result.json").read_text())
        assert results[seed]["of"] == "plain" and results[seed]["samples"] == 4
    assert results[0]["model"] == "checkpoint-1" and results[0]["model_step"] == 1 and results[0]["first_trip"] == 3
    assert results[1]["model"] == "final" and read(out / "runs" / "plain_best-s1") == read(out / "runs" / "plain-s1")
    assert (run / "final" / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    rows = {(r["arm"], r["seed"]): r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert rows["plain_best", 0]["steps"] == rows["plain", 0]["steps"] == 2  # the source run's training summary
    jsonl.append(run / "events.jsonl", [{"event": "detector", "step": 2, "detectors": []}])  # the first trip counts
    assert choose_best(run) == (None, 0.0, {"model": "base", "first_trip": 2})  # checkpoint-1 wrote step 2's batch

def test_bad_experiment_configs_are_one_line(capsys, monkeypatch, grid):
    config, out, env = grid
    monkeypatch.syspath_prepend(str(config.parent))
    cases = [(["--set", "arms.base={}"], "not 'base'"),
             (["--set", "seeds=[1, 1]"], "each seed once"),
             (["--set", "arms.plain.set.stepz=3"], "stepz"),
             (["--set", "arms.plain.set.seed=3"], "seed and output_dir are the experiment's"),
             (["--set", "golds=[python:nomodule:f]"], "nomodule"),
             (["--set", "eval_prompts=missing.txt"], "eval_prompts"),
             (["--set", "arms.late.of=plian"], "'plian' is not an arm that tunes"),
             (["--set", "arms.late.of=plain", "--set", "arms.late.set.kl_coef=1"], "cannot also set kl_coef"),
             (["--set", "arms.late.choose=worst"], "late.choose"),
             (["--set", "arms.plain.set.constitution=nope.yaml"], "arm plain: set: constitution: nope.yaml: no such file")]
    for args, expected in cases:
        one_line_error(capsys, ["experiment", str(config), *args], expected)
    assert not (out / "runs").exists()  # refused before anything ran


def test_the_example_experiment_loads(examples_dir):
    from tether.experiment.config import load_experiment, tune_config

    config = load_experiment(examples_dir / "experiment_cheerful.yaml")
    assert config.seeds == [0, 1, 2] and config.eval_prompts == examples_dir / "prompts_heldout.txt"
    assert tune_config(config, "embedding_kl", 2).embedding_kl.coef == 5.0
    assert tune_config(config, "embedding_kl", 2).seed == 2 and tune_config(config, "plain", 0).embedding_kl.coef == 0
    assert len(tune_config(config, "utility", 1).utility.terminals) == 4
    assert config.arms["blend"].choose == "blend" and len(config.runs()) == 3 * len(config.arms)


def test_an_arms_files_are_read_from_the_experiment_folder(examples_dir, tmp_path, monkeypatch):
    """`set: {constitution: cheerful.yaml}` means the file beside the experiment, wherever tether runs from."""
    from tether.experiment.config import load_experiment, tune_config

    monkeypatch.chdir(tmp_path)
    config = load_experiment(examples_dir / "experiment_yes.yaml")
    assert tune_config(config, "text_first", 0).constitution == examples_dir / "cheerful.yaml"
    assert tune_config(config, "plain", 0).constitution == examples_dir / "cheerful_question_first.yaml"

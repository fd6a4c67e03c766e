"""`tether tune` end to end on tiny models: run directory, resume without repeats, refusals."""

import json
import shutil
import subprocess
import sys

import yaml
from test_cli import ENV


def tune(*args):
    return subprocess.run([sys.executable, "-m", "tether.cli", "tune", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=600)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tune_writes_a_run_and_resumes_without_repeats(tmp_path, tiny_model_dir, examples_dir):
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"), "gold_constitution": str(examples_dir / "on_topic.yaml"),
        "prompts": str(examples_dir / "prompts.txt"), "steps": 4, "prompts_per_step": 1, "completions_per_prompt": 4,
        "max_completion_tokens": 6, "save_every": 2, "output_dir": str(tmp_path / "run"), "lora_rank": 4,
        "lora_target_modules": ["q_proj", "v_proj"],
    }))
    run = tmp_path / "run"
    result = tune(config, "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "finished.json").exists() and (run / "final" / "adapter_config.json").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["steps"] == 4
    metrics = lines(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert (run / "base_samples.jsonl").exists()
    for key in ("reward", "kl", "monitor/affirmation_rate", "monitor/distinct_2", "gold/score", "gold/gap", "drift/embedding",
                "time/step", "time/train_judge", "time/gold_judge"):
        assert key in metrics[0], key
    samples = lines(run / "samples.jsonl")
    assert len(samples) == 16 and {"step", "prompt", "completion", "train", "gold", "drift"} <= set(samples[0])
    assert [e["event"] for e in lines(run / "events.jsonl")][0] == "start"

    # A finished run is never overwritten without --force.
    refused = tune(config, "-q")
    assert refused.returncode == 2 and "already holds a finished run" in refused.stderr

    # A crash after step 4 was logged but before it was checkpointed: resume from step 2.
    (run / "finished.json").unlink()
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    resumed = tune("--resume", run, "-q")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [m["step"] for m in lines(run / "metrics.jsonl")] == [1, 2, 3, 4]
    assert sorted({s["step"] for s in lines(run / "samples.jsonl")}) == [1, 2, 3, 4]
    assert len(lines(run / "samples.jsonl")) == 16
    events = [e["event"] for e in lines(run / "events.jsonl")]
    assert "resume" in events and events[-1] == "finish"


def test_config_errors_are_one_line(tmp_path):
    config = tmp_path / "tune.yaml"
    config.write_text("constitution: c.yaml\nprompts: p.txt\nstepz: 3\n")
    result = tune(config)
    assert result.returncode == 2 and "line 3, column 8: stepz: unknown field; valid fields:" in result.stderr
    result = tune(config, "--set", "nonsense")
    assert result.returncode == 2 and "--set 'nonsense': write field=value" in result.stderr


def test_example_tune_config_is_valid(examples_dir):
    from tether.infra.config import load_config
    from tether.tune.config import TuneConfig

    config = load_config(TuneConfig, examples_dir / "tune_cheerful.yaml", ["steps=3"])
    assert config.steps == 3 and config.constitution == examples_dir / "cheerful.yaml"
    assert config.gold_constitution.exists() and config.prompts.exists()


def test_detector_stops_the_run_and_marks_best(tmp_path, tiny_model_dir, examples_dir):
    # Any KL above zero trips: step 1 has none (policy == base), step 2 does.
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
        "steps": 5, "completions_per_prompt": 4, "max_completion_tokens": 6, "save_every": 1,
        "output_dir": str(tmp_path / "run"), "lora_rank": 4, "learning_rate": 0.01, "on_hack": "stop",
        # only the KL detector can fire: the tiny random model babbles "yes" from its corpus
        "detectors": {"affirmation_rate": 2, "special_token_rate": 2, "repetition": 2, "longest_repeat_run": 999,
                      "distinct_2_drop": 0},
    }))
    result = tune(config, "-q", "--set", "detectors.kl=1e-9")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    events = lines(run / "events.jsonl")
    trip = next(e for e in events if e["event"] == "detector")
    assert trip["step"] == 2 and trip["detectors"][0]["detector"] == "kl" and len(trip["samples"]) == 2
    assert trip["evidence"]["kl"] > 0 and "monitor/repetition" in trip["evidence"]
    assert [m["step"] for m in lines(run / "metrics.jsonl")] == [1, 2]  # stopped
    # checkpoint-1 wrote step 2's batch, the one that tripped: the last policy whose own batch passed is the
    # base model (it wrote step 1's), so no checkpoint is marked best (tests/test_early_stop.py: the offset)
    assert not (run / "best.json").exists()
    assert next(e for e in events if e["event"] == "early_stop")["best"] is None


def test_example_trl_script_runs_with_tethers_pieces(tmp_path, tiny_model_dir, examples_dir):
    script = examples_dir / "trl_grpo_script.py"
    result = subprocess.run([sys.executable, str(script), "--policy", str(tiny_model_dir), "--judge", str(tiny_model_dir),
                             "--steps", "2", "--output-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, env=ENV, timeout=600, cwd=examples_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 1: reward" in result.stdout and "step 2: reward" in result.stdout
    assert "embedding KL penalty" in result.stdout


def test_tune_runs_data_parallel_on_two_processes(tmp_path, tiny_model_dir, examples_dir):
    """torchrun, 2 CPU processes on gloo: one run directory, the whole batch logged, ranks agreeing."""
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"), "gold_constitution": str(examples_dir / "on_topic.yaml"),
        "prompts": str(examples_dir / "prompts.txt"), "steps": 3, "prompts_per_step": 2, "completions_per_prompt": 2,
        "max_completion_tokens": 5, "save_every": 2, "output_dir": str(tmp_path / "run"), "lora_rank": 2,
        "lora_target_modules": ["q_proj"], "embedder": None,
        # a detector that trips at once, stopping both processes together (a hang here would time out)
        "on_hack": "stop", "detectors": {"kl": 1e-9},
    }))
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                             "tether.cli", "tune", str(config), "-q"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "finished.json").read_text())
    assert summary["processes"] == 2 and summary["processes_agree"] is True
    metrics = lines(run / "metrics.jsonl")
    steps = [m["step"] for m in metrics]
    assert steps == sorted(set(steps)) and steps[0] == 1  # one line a step, written once
    samples = lines(run / "samples.jsonl")
    assert len(samples) == 4 * len(steps)  # both processes' completions, not rank 0's alone
    assert len({s["prompt"] for s in samples if s["step"] == 1}) == 2
    assert [e["event"] for e in lines(run / "events.jsonl")].count("start") == 1
    assert summary["stopped_early"] and summary["steps"] < 3


def test_vllm_generation_is_refused_clearly_without_a_gpu(tmp_path, tiny_model_dir, examples_dir):
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir), "embedder": None,
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
        "steps": 1, "completions_per_prompt": 2, "max_completion_tokens": 4, "output_dir": str(tmp_path / "run"),
        "vllm": "colocate",
    }))
    result = tune(config, "-q")
    assert result.returncode == 2 and "vLLM generation needs a GPU" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()

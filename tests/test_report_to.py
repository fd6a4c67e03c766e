"""`report_to`: TRL's and tether's metrics reach the trackers (read back from TensorBoard's event files)."""

import importlib.util

import pytest
import yaml

from tether.corpus.config import SampleConfig, SftConfig
from tether.errors import TetherError
from tether.infra import trackers
from tether.infra.config import load_config
from tether.tune.config import TuneConfig

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="tensorboard not installed (pip install -e '.[test]')")


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under `folder`: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0}).Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(values) for tag, values in found.items()}


def tune_config(tmp_path, model_dir, examples_dir, **fields):
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "policy_model": str(model_dir), "judge_model": str(model_dir), "constitution": str(examples_dir / "cheerful.yaml"),
        "gold_constitution": str(examples_dir / "on_topic.yaml"), "prompts": str(examples_dir / "prompts.txt"),
        "steps": 2, "completions_per_prompt": 2, "max_completion_tokens": 4, "save_every": 2, "lora_rank": 4,
        "lora_target_modules": ["q_proj", "v_proj"], "output_dir": str(tmp_path / "run"), **fields,
    }))
    return config


@needs_tensorboard
def test_tune_logs_trl_and_tether_metrics_to_tensorboard(tmp_path, tiny_model_dir, examples_dir):
    from tether.tune.run import run_tune

    config = tune_config(tmp_path, tiny_model_dir, examples_dir, report_to="tensorboard",
                         detectors={"repetition": -1.0})  # a limit step 1 trips, to see the trip logged
    run_tune(load_config(TuneConfig, config))
    logged = scalars(tmp_path / "run" / "tb")  # inside the run directory
    for tag in ("train/reward", "train/kl",  # TRL's
                "train/monitor/distinct_2", "train/monitor/affirmation_rate", "train/gold/score", "train/gold/gap",
                "train/drift/embedding", "train/reward/train", "train/detector/trips"):  # tether's
        assert [step for step, _ in logged.get(tag, [])] == [1, 2], (tag, sorted(logged))  # once a step
    assert "train/step" not in logged
    assert logged["train/detector/repetition"] == [(1, 1.0)] and logged["train/detector/trips"][0] == (1, 1.0)
    metrics = [yaml.safe_load(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [v for _, v in logged["train/monitor/distinct_2"]] == pytest.approx([m["monitor/distinct_2"] for m in metrics])
    assert [v for _, v in logged["train/gold/score"]] == pytest.approx([m["gold/score"] for m in metrics])


def test_a_tracker_that_is_not_installed_is_one_line_before_anything_loads(tmp_path, tiny_model_dir, examples_dir):
    from tether.tune.run import run_tune

    missing = next(name for name in ("trackio", "wandb") if importlib.util.find_spec(name) is None)
    path = tune_config(tmp_path, tiny_model_dir, examples_dir, report_to=["tensorboard", missing])
    with pytest.raises(TetherError, match=f"^report_to: {missing} is not installed; pip install {missing}, or remove"):
        run_tune(load_config(TuneConfig, path))
    assert not (tmp_path / "run").exists()
    with pytest.raises(TetherError, match="none cannot be combined with tensorboard"):
        load_config(TuneConfig, path, ["report_to=[none, tensorboard]"])


def test_report_to_values_and_wandb_stays_offline(tmp_path, monkeypatch):
    assert trackers.trackers("none") == [] and trackers.trackers(["wandb", "tensorboard", "wandb"]) == ["wandb", "tensorboard"]
    assert TuneConfig(constitution="c.yaml", prompts="p.txt").report_to == "none"
    assert SftConfig(report_to=["tensorboard"]).report_to == ["tensorboard"]
    with pytest.raises(ValueError):
        SftConfig(report_to="mlflow")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    args = trackers.trl_args(["wandb"], tmp_path / "run-a")
    assert args == {"report_to": ["wandb"], "run_name": "run-a"}
    import os

    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_DIR"] == str(tmp_path / "run-a")
    trackers.trl_args(["wandb"], tmp_path / "run-b")  # a second run in the process: its own folder
    assert os.environ["WANDB_DIR"] == str(tmp_path / "run-b")
    monkeypatch.setenv("WANDB_MODE", "online")  # the user's choice stands
    monkeypatch.setenv("WANDB_DIR", "/elsewhere")
    trackers.trl_args(["wandb"], tmp_path / "run-c")
    assert os.environ["WANDB_MODE"] == "online" and os.environ["WANDB_DIR"] == "/elsewhere"


@needs_tensorboard
def test_sft_logs_loss_and_the_heldout_evaluation_to_tensorboard(tmp_path, tiny_model_dir, examples_dir):
    from tether.corpus.sample import run_sample
    from tether.corpus.sft import run_sft

    corpus = run_sample(SampleConfig.model_validate({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": examples_dir / "cheerful.yaml", "prompts": examples_dir / "prompts.txt",
        "completions_per_prompt": 2, "max_completion_tokens": 6, "keep": "best", "monitors": {"words": 0, "repetition": 1,
        "longest_repeat_run": 100, "affirmation_rate": 1, "special_token_rate": 100}, "output_dir": tmp_path / "corpus",
    }))
    run, evaluation = run_sft(corpus.path, SftConfig(epochs=1, batch_size=4, lora_rank=4, eval_completions_per_prompt=1,
                                                     output_dir=tmp_path / "sft", report_to="tensorboard"))
    logged = scalars(run.path / "tb")
    assert "train/loss" in logged
    assert logged["train/heldout/pass_rate/after"][0][1] == pytest.approx(evaluation["pass_rate"]["after"])
    assert logged["train/heldout/score/total/before"][0][1] == pytest.approx(
        evaluation["mean_scores"]["total"]["before"])

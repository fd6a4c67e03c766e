"""Process rewards in RL: step scores -> per-token advantages in a subclass of TRL's GRPOTrainer, and tune's wiring."""

import json

import numpy as np
import pytest
import yaml
from test_evaluator import constitution
from test_tune import lines, tune

from tether.tune.process import group_advantages, token_steps


def steps_of(*scores):
    return [{"text": "x", "start": i, "end": i + 1, "score": s} for i, s in enumerate(scores)]


def test_step_scores_are_normalized_over_the_group_and_paid_per_step_or_to_go():
    steps = [steps_of(1.0, 3.0), steps_of(2.0), steps_of(0.0), steps_of(0.0, 0.0, 3.0)]
    sd = np.std([1, 3, 2])  # group 1: mean 2; group 2: mean 0.75
    got = group_advantages(steps, group=2)
    assert got[0] == pytest.approx([-1 / (sd + 1e-4), 1 / (sd + 1e-4)]) and got[1] == pytest.approx([0.0])
    sd2 = np.std([0, 0, 0, 3])
    assert got[2] == pytest.approx([-0.75 / (sd2 + 1e-4)])
    to_go = group_advantages(steps, group=2, mode="to_go")
    assert to_go[0] == pytest.approx([0.0, 1 / (sd + 1e-4)])  # each step and every later one
    assert to_go[3] == pytest.approx([(-0.75 * 2 + 2.25) / (sd2 + 1e-4) + 0, (-0.75 + 2.25) / (sd2 + 1e-4),
                                      2.25 / (sd2 + 1e-4)])
    assert group_advantages([[], steps_of(1.0)], group=2) == [[], [0.0]]


def test_each_token_takes_the_step_its_first_character_is_in(tiny_tokenizer):
    from tether.infra.steps import split_steps

    text = " She smiled. Then it rained all day."
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    steps = [s.as_dict() for s in split_steps(text)]
    index = token_steps(tiny_tokenizer, ids + [tiny_tokenizer.eos_token_id], steps)
    assert index[0] == 0 and index[-1] == 1 and index == sorted(index)  # the end-of-text token: the last step
    for j, k in enumerate(index[:-1]):
        first = len(tiny_tokenizer.decode(ids[:j]))
        assert steps[k]["start"] <= first + 1 and first < steps[k]["end"]
    assert token_steps(tiny_tokenizer, ids, []) == [-1] * len(ids)


def test_the_trainer_pays_each_token_its_steps_advantage(tmp_path, tiny_gemma, tiny_tokenizer):
    """TRL's GRPOTrainer subclass, on the tiny model: the advantages it hands the loss are the step advantages."""
    from conftest import build_tiny_gemma
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from tether.judge.evaluator import Evaluator
    from tether.rewards.constitution import ConstitutionReward
    from tether.rewards.process import ProcessConfig, ProcessReward
    from tether.tune.process import make_process_trainer

    judge = ConstitutionReward(Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer))
    process = ProcessReward(ConstitutionReward(judge.evaluator).raw, ProcessConfig(split="re:\\S+\\s*", max_steps=3))
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=6, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                      beta=0.04, learning_rate=1e-3, seed=0, reward_weights=[1.0, 0.0])
    trainer = make_process_trainer(GRPOTrainer)(
        model=build_tiny_gemma(len(tiny_tokenizer)), reward_funcs=[judge, process], args=args,
        processing_class=tiny_tokenizer, train_dataset=Dataset.from_dict({"prompt": ["Once upon a time"] * 4}),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]), process_reward=process,
        reward_mode="process")
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer._generate_and_score_completions(batch)
    advantages, mask = out["advantages"], out["completion_mask"]
    assert advantages.shape == out["completion_ids"].shape  # one advantage a token
    expected = group_advantages(process.last_steps, 4)
    for i, row in enumerate(out["completion_ids"].tolist()):
        n = int(mask[i].sum())
        index = token_steps(tiny_tokenizer, row[:n], process.last_steps[i])
        want = [expected[i][k] if k >= 0 else 0.0 for k in index]
        assert advantages[i, :n].tolist() == pytest.approx(want, abs=1e-5)
    assert any(len(set(np.round(advantages[i, :int(mask[i].sum())].tolist(), 5))) > 1 for i in range(4))  # per step
    assert "process/step_1" in trainer._metrics["train"]
    trainer.train()  # and the loss takes them: a real step


def test_tune_with_process_rewards_runs_and_logs_each_step_position(tmp_path, tiny_model_dir, examples_dir, capsys):
    from test_cli import one_line_error

    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"), "steps": 2,
        "prompts_per_step": 1, "completions_per_prompt": 4, "max_completion_tokens": 6, "save_every": 2,
        "output_dir": str(tmp_path / "run"), "lora_rank": 4, "lora_target_modules": ["q_proj"],
        "reward_mode": "both", "process": {"split": "re:\\S+\\s*", "max_steps": 4, "advantage": "to_go"},
    }))
    result = tune(config, "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = lines(tmp_path / "run" / "metrics.jsonl")
    assert all("process/step_1" in m and "rewards/process/mean" in m for m in metrics)
    assert "monitor/distinct_2" in metrics[0]  # the monitors work unchanged
    one_line_error(capsys, ["tune", str(config), "--set", "algorithm=rloo", "--set", "output_dir=" + str(tmp_path / "r2")],
                   "needs algorithm: grpo")
    one_line_error(capsys, ["tune", str(config), "--set", "process.split=words", "--set",
                            "output_dir=" + str(tmp_path / "r3")], "write sentences, lines")
    assert json.loads((tmp_path / "run" / "finished.json").read_text())["steps"] == 2

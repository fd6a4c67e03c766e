"""Judge ensembles and reward shapes: the arithmetic, the reward on tiny judges, a real tune with a served judge,
and the blend sweep on conversational prompts."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from judge_server import JudgeServer
from peft import LoraConfig, get_peft_model
from test_cli import ENV

from tether.errors import TetherError
from tether.infra.texts import judged_texts
from tether.judge.combine import combine_judges
from tether.judge.evaluator import Evaluator
from tether.rewards.constitution import ConstitutionReward
from tether.rewards.shaping import RewardShape, reference_baseline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROMPTS = ["Once upon a time,", "On the first day of summer,"]
REPLIES = [" we laughed all day.", " the dog died.", " yes yes yes.", " it rained on the fair."]


def test_ensembles_combine_by_mean_min_and_penalised_mean():
    totals = np.array([[1.0, -2.0, 0.5], [3.0, -2.0, -0.5]])
    mean, spread = combine_judges(totals, "mean")
    np.testing.assert_allclose(mean, [2.0, -2.0, 0.0])
    np.testing.assert_allclose(spread, [1.0, 0.0, 0.5])
    np.testing.assert_allclose(combine_judges(totals, "min")[0], [1.0, -2.0, -0.5])
    np.testing.assert_allclose(combine_judges(totals, "mean_minus_disagreement", 2.0)[0], [0.0, -2.0, -1.0])
    with pytest.raises(ValueError, match="mean, min or mean_minus_disagreement"):
        combine_judges(totals, "median")


def test_shapes_raw_log_sigmoid_and_reference():
    raw = np.array([-30.0, 0.0, 2.0, 30.0])
    assert RewardShape("raw")(["p"] * 4, raw).tolist() == raw.tolist()
    bounded = RewardShape("log_sigmoid")(["p"] * 4, raw)
    np.testing.assert_allclose(bounded, np.log(1 / (1 + np.exp(-raw))), rtol=1e-9, atol=1e-15)
    assert np.all(bounded <= 0) and np.all(np.diff(bounded) > 0) and bounded[0] == pytest.approx(-30, abs=1e-9)
    shape = RewardShape("reference", {"a": 2.0, "b": -1.0})
    np.testing.assert_allclose(shape(["a", "b", "a"], np.array([2.0, 2.0, 0.0])),
                               [0.5, 1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(2.0))])
    with pytest.raises(TetherError, match="no base score for the prompt 'c'"):
        shape(["c"], np.array([0.0]))
    with pytest.raises(TetherError, match="needs the base model's scores"):
        RewardShape("reference")
    base = {"a": ["x", "y"], "b": ["z"]}
    scores = {"x": 1.0, "y": 3.0, "z": -4.0}
    assert reference_baseline(lambda ps, cs: np.array([scores[c] for c in cs]), base) == {"a": 2.0, "b": -4.0}


@pytest.fixture(scope="module")
def two_judges(tiny_gemma, tiny_tokenizer):
    return [Evaluator(tiny_gemma, EXAMPLES / name, tokenizer=tiny_tokenizer) for name in ("cheerful.yaml", "on_topic.yaml")]


def test_an_ensemble_reward_pays_the_combined_shaped_score(two_judges):
    cheerful, on_topic = two_judges
    prompts, replies = [PROMPTS[i % 2] for i in range(4)], REPLIES
    texts = judged_texts(prompts, replies)
    a, b = cheerful.score(texts).total(), on_topic.score(texts).total()
    assert np.abs(a - b).max() > 1e-3  # two judges that do disagree
    reward = ConstitutionReward(cheerful, extra=[on_topic], ensemble="mean_minus_disagreement", ensemble_lambda=0.5,
                                shape=RewardShape("log_sigmoid"))
    paid = np.array(reward(prompts=prompts, completions=replies))
    raw = (a + b) / 2 - 0.5 * np.abs(a - b) / 2  # the std of two values is half their distance
    np.testing.assert_allclose(reward.last_raw, raw, atol=1e-9)
    np.testing.assert_allclose(paid, -np.logaddexp(0, -raw), atol=1e-9)
    np.testing.assert_allclose(reward.last_disagreement, np.abs(a - b) / 2, atol=1e-9)
    np.testing.assert_allclose(reward.last_judges, [a, b])
    assert reward.last_result.names == ["cheerful"]  # the main judge's verdicts stay for the monitors
    single = ConstitutionReward(cheerful)(prompts=prompts, completions=replies)
    np.testing.assert_allclose(single, a)  # one judge, raw: as before


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tune_with_a_served_judge_an_ensemble_and_the_reference_shape(tmp_path, tiny_model_dir, tiny_gemma,
                                                                      tiny_tokenizer):
    run = tmp_path / "run"
    with JudgeServer(tiny_gemma, tiny_tokenizer, str(tiny_model_dir)) as server:
        config = tmp_path / "tune.yaml"
        config.write_text(yaml.safe_dump({
            "policy_model": str(tiny_model_dir), "judge_model": f"openai:{server.url}#{tiny_model_dir}",
            "judge_top_k": len(tiny_tokenizer),
            "judges": [{"constitution": str(EXAMPLES / "on_topic.yaml"), "model": str(tiny_model_dir)}],
            "ensemble": "mean_minus_disagreement", "ensemble_lambda": 1.0, "reward_shape": "reference",
            "constitution": str(EXAMPLES / "cheerful.yaml"), "prompts": str(EXAMPLES / "prompts.txt"),
            "embedder": None, "base_samples_per_prompt": 2, "steps": 2, "completions_per_prompt": 2,
            "max_completion_tokens": 4, "save_every": 2, "output_dir": str(run), "lora_rank": 2,
            "lora_target_modules": ["q_proj"],
        }))
        result = subprocess.run([sys.executable, "-m", "tether.cli", "tune", str(config), "-q"], capture_output=True,
                                text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = lines(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert 0 < m["reward/shaped"] < 1 and m["monitor/judge_disagreement"] >= 0
        assert m["reward/raw"] == pytest.approx(m["reward/train"])
        assert m["reward/raw"] == pytest.approx((m["reward/judge/0"] + m["reward/judge/1"]) / 2
                                                - m["monitor/judge_disagreement"], abs=1e-3)
    samples = lines(run / "samples.jsonl")
    assert {"paid", "disagreement", "judge/0", "judge/1"} <= set(samples[0])
    assert (run / "base_samples.jsonl").exists()  # sampled for r_base, though drift is off
    # the served judge scored as the local one does
    local = Evaluator(tiny_gemma, EXAMPLES / "cheerful.yaml", tokenizer=tiny_tokenizer)
    want = local.score([s["prompt"] + s["completion"] for s in samples]).total()
    np.testing.assert_allclose([s["judge/0"] for s in samples], want, atol=2e-4)


def test_a_served_judge_with_a_gold_constitution_needs_a_gold_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tether.cli", "tune", str(EXAMPLES / "tune_cheerful.yaml"), "--set",
                             "judge_model=openai:http://127.0.0.1:9/v1#m", "--set",
                             f"gold_constitution={EXAMPLES / 'on_topic.yaml'}", "--set", f"output_dir={tmp_path / 'r'}"],
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 2 and "set gold_model" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()
    unreachable = subprocess.run([sys.executable, "-m", "tether.cli", "tune", str(EXAMPLES / "tune_cheerful.yaml"),
                                  "--set", "judge_model=openai:http://127.0.0.1:9/v1#m", "--set", "gold_constitution=null",
                                  "--set", f"output_dir={tmp_path / 'r'}"], capture_output=True, text=True, env=ENV, timeout=120)
    assert unreachable.returncode == 2 and "cannot reach it" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_blend_sweep_runs_on_conversational_prompts(tmp_path, tiny_model_dir, tiny_gemma, tiny_tokenizer):
    from tether.defenses.sweep import sweep_blends
    from tether.tune.config import tuned_settings

    policy = tmp_path / "chat-policy"
    shutil.copytree(tiny_model_dir, policy)
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    tok.save_pretrained(policy)
    run = tmp_path / "run"
    model = get_peft_model(copy.deepcopy(tiny_gemma), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    model.save_pretrained(run / "final")
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": c}]}) + "\n"
                             for c in ["Say something cheerful.", "Tell me a story.", "Say something cheerful."]))
    (run / "config.yaml").write_text(yaml.safe_dump({
        "policy_model": str(policy), "judge_model": str(tiny_model_dir), "constitution": str(EXAMPLES / "cheerful.yaml"),
        "prompts": str(chats), "max_completion_tokens": 4, "embedder": None, "seed": 0, "output_dir": str(run)}))
    sweep = sweep_blends(run, [0, 1], tuned_settings(run), out=tmp_path / "sweep", prompts=chats, completions=2)
    samples = lines(tmp_path / "sweep" / "samples.jsonl")
    assert len(sweep.rows) == 2 and len(samples) == 2 * 2 * 2  # the repeated conversation counted once
    assert samples[0]["prompt"] == "User: Say something cheerful.\n\nAssistant: "

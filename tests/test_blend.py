"""Checkpoint blending on tiny models: exact at both ends, linear between, and the sweep's files and choices."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from test_cli import ENV
from transformers import AutoModelForCausalLM, AutoTokenizer

from tether.defenses.blend import Blend, find_tuned
from tether.defenses.sweep import pareto_front, recommend, sweep_blends, token_kl
from tether.errors import TetherError
from tether.infra.generate import Branch, Generator, independent
from tether.infra.models import fast_cpu_head
from tether.tune.config import tuned_settings
from tether.watch.detectors import DetectorConfig

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

IDS = torch.tensor([[2, 40, 41, 42, 43, 44, 45, 46, 47, 48]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def load(folder):
    """The model as tether's loader leaves it (its CPU vocabulary head included), for exact comparisons."""
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    fast_cpu_head(model)
    return model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir, tiny_gemma):
    """A run directory as `tether tune` leaves it: config.yaml and a LoRA adapter in final/ that changes outputs."""
    run = tmp_path_factory.mktemp("run")
    model = get_peft_model(copy.deepcopy(tiny_gemma), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 1.0)
    model.save_pretrained(run / "final")
    (run / "config.yaml").write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(EXAMPLES / "cheerful.yaml"), "gold_constitution": str(EXAMPLES / "on_topic.yaml"),
        "prompts": str(EXAMPLES / "prompts.txt"), "max_completion_tokens": 6, "embedder": None, "seed": 0,
        "output_dir": str(run),
    }))
    return run


@pytest.fixture(scope="module")
def full_model_dir(tmp_path_factory, tiny_model_dir, tiny_gemma, tiny_tokenizer):
    """A "tuned" full model: the tiny Gemma with every weight perturbed."""
    folder = tmp_path_factory.mktemp("tuned-full")
    model = copy.deepcopy(tiny_gemma)
    torch.manual_seed(4)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(torch.randn_like(weight) * 0.05)
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def merged_weights(blend, alpha):
    blend.set_alpha(alpha)
    return {k: v.clone() for k, v in blend.merged().state_dict().items()}


def check_blend_is_exact_and_linear(blend, base_logits, tuned_logits):
    blend.set_alpha(0)
    assert torch.allclose(logits(blend.merged()), base_logits, atol=1e-5)
    blend.set_alpha(1)
    assert torch.allclose(logits(blend.merged()), tuned_logits, atol=1e-5)
    assert (tuned_logits - base_logits).abs().max() > 0.1  # the tuning changes outputs

    ends = merged_weights(blend, 0), merged_weights(blend, 1)
    middle = merged_weights(blend, 0.5)
    assert any((ends[1][k] - ends[0][k]).abs().max() > 1e-3 for k in middle)
    for key, weight in middle.items():
        assert torch.allclose(weight, (ends[0][key] + ends[1][key]) / 2, atol=1e-6), key
    half = logits(blend.model)  # in memory, as the sweep uses it
    assert torch.allclose(half, logits(blend.merged()), atol=1e-5)
    assert (half - base_logits).abs().max() > 1e-3 and (half - tuned_logits).abs().max() > 1e-3


def test_lora_blend_is_exact_at_both_ends_and_linear_between(run_dir, tiny_model_dir):
    tuned = find_tuned(run_dir)
    assert (tuned.folder, tuned.kind, tuned.run_dir) == (run_dir / "final", "lora", run_dir)
    blend = Blend(tuned, str(tiny_model_dir))
    peft_tuned = PeftModel.from_pretrained(load(tiny_model_dir), str(run_dir / "final")).eval()
    check_blend_is_exact_and_linear(blend, logits(load(tiny_model_dir)), logits(peft_tuned))
    blend.set_alpha(0.3)
    with blend.base() as base:  # the base stays reachable at any A
        assert torch.equal(logits(base), logits(load(tiny_model_dir)))


def test_full_model_blend_is_exact_at_both_ends_and_linear_between(full_model_dir, tiny_model_dir):
    tuned = find_tuned(full_model_dir)
    assert (tuned.kind, tuned.run_dir) == ("full", None)
    blend = Blend(tuned, str(tiny_model_dir))
    check_blend_is_exact_and_linear(blend, logits(load(tiny_model_dir)), logits(load(full_model_dir)))
    blend.set_alpha(0)
    assert all(torch.equal(v, blend._base[k]) for k, v in blend.model.state_dict().items())  # lerp: exact

    gen = Generator(blend.model, blend.tokenizer, temperature=1.0)
    prompt_ids = gen.prompt_ids("When the rain finally stopped,")
    torch.manual_seed(0)
    branches = gen.extend(prompt_ids, Branch([]), 3, 6)
    assert token_kl(blend, prompt_ids, branches) == [0.0, 0.0, 0.0]
    blend.set_alpha(1)
    assert all(kl > 1e-4 for kl in token_kl(blend, prompt_ids, branches))


def test_finding_the_tuned_weights_and_refusals(tmp_path, run_dir, tiny_model_dir, tiny_tokenizer):
    from conftest import build_tiny_llama

    other = tmp_path / "llama"
    build_tiny_llama(len(tiny_tokenizer)).save_pretrained(other)
    with pytest.raises(TetherError, match="weights do not match the base model"):
        Blend(find_tuned(other), str(tiny_model_dir))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TetherError, match="empty: neither a LoRA adapter"):
        find_tuned(tmp_path / "empty")
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    shutil.copytree(run_dir / "final", checkpoint)
    shutil.copy(run_dir / "config.yaml", tmp_path / "run")
    assert (find_tuned(checkpoint).run_dir, find_tuned(checkpoint).kind) == (tmp_path / "run", "lora")
    (tmp_path / "unfinished" / "checkpoints").mkdir(parents=True)
    (tmp_path / "unfinished" / "config.yaml").write_text("policy_model: x\n")
    with pytest.raises(TetherError, match="no final/ adapter yet"):
        find_tuned(tmp_path / "unfinished")


def tether(*args):
    return subprocess.run([sys.executable, "-m", "tether.cli", "blend", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=300)


def test_cli_writes_a_loadable_merged_model(tmp_path, run_dir, tiny_model_dir):
    out = tmp_path / "models" / "half"
    result = tether("--tuned", run_dir, "--alpha", 0.5, "--out", out, "-q")  # base from the run's config.yaml
    assert result.returncode == 0, result.stderr
    blend = Blend(find_tuned(run_dir), str(tiny_model_dir))
    blend.set_alpha(0.5)
    assert torch.allclose(logits(load(out)), logits(blend.model), atol=1e-5)
    assert any(out.glob("*.safetensors")) and (out / "tokenizer.json").exists()
    assert json.loads((out / "blend.json").read_text()) == {
        "base": str(tiny_model_dir), "tuned": str(run_dir / "final"), "kind": "lora", "alpha": 0.5,
        "weights": "base + alpha * (tuned - base)"}
    assert [p.name for p in out.parent.iterdir()] == ["half"]  # no temporary folder left behind

    refused = tether("--tuned", run_dir, "--alpha", 0.5, "--out", out, "-q")
    assert refused.returncode == 2 and "already exists; pass --force" in refused.stderr
    replaced = tether("--tuned", run_dir, "--alpha", 0.25, "--out", out, "--force", "-q")
    assert replaced.returncode == 0 and json.loads((out / "blend.json").read_text())["alpha"] == 0.25

    thesis = tmp_path / "thesis"  # --force never replaces a folder tether did not write
    (thesis / "chapter1.txt").parent.mkdir()
    (thesis / "chapter1.txt").write_text("months of work")
    refused = tether("--tuned", run_dir, "--alpha", 0.5, "--out", thesis, "--force", "-q")
    assert refused.returncode == 2 and "replaces only a blended model tether wrote" in refused.stderr
    assert (thesis / "chapter1.txt").read_text() == "months of work"


def one_line_error(result, expected):
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert expected in result.stderr, result.stderr


def test_cli_bad_input_is_one_line(tmp_path, run_dir, tiny_model_dir):
    out = tmp_path / "out"
    one_line_error(tether("--tuned", run_dir, "--alpha", 1.5, "--out", out), "alpha 1.5: must be within [0, 1]")
    one_line_error(tether("--tuned", tmp_path / "nowhere", "--alpha", 0.5, "--out", out), "nowhere: no such folder")
    bare = tmp_path / "adapter"
    shutil.copytree(run_dir / "final", bare)
    one_line_error(tether("--tuned", bare, "--alpha", 0.5, "--out", out), "pass --base MODEL")
    one_line_error(tether("--tuned", bare, "--base", tiny_model_dir, "--sweep", "0,1"), "pass --config TUNE.yaml")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_pareto_front_and_recommendation_rules():
    rows = [{"alpha": 0.0, "train": 0.0, "gold": 1.0, "kl": 0.0, "trips": ""},
            {"alpha": 0.5, "train": 1.0, "gold": 0.98, "kl": 0.2, "trips": ""},
            {"alpha": 0.75, "train": 1.0, "gold": 0.9, "kl": 0.3, "trips": ""},  # dominated by 0.5
            {"alpha": 1.0, "train": 2.0, "gold": 0.2, "kl": 0.5, "trips": "affirmation_rate"}]
    assert pareto_front(rows, [("train", 1), ("gold", 1), ("kl", -1)]) == [True, True, False, True]
    assert pareto_front(rows, [("train", 1), ("kl", -1)]) == [True, True, False, True]
    pick, rule, reason = recommend(rows, 0.05, DetectorConfig())
    assert pick == 1 and "within 0.05 of the best gold" in rule and reason.startswith("A=0.5")
    assert recommend(rows, 0.1, DetectorConfig())[0] == 1  # 0.75 is within 0.1 too; it ties on train, 0.5 has more gold
    assert recommend(rows, 1.0, DetectorConfig())[0] == 3
    no_gold = [{k: v for k, v in r.items() if k != "gold"} for r in rows]
    pick, rule, _ = recommend(no_gold, 0.05, DetectorConfig())
    assert pick == 1 and "trip no monitor threshold" in rule  # A=1 trips a detector; 0.5 beats 0.75 on KL
    # A KL budget comes first: within 0.1 only the base is left; under 0.01 nothing is, and the least changed wins.
    assert recommend(rows, 1.0, DetectorConfig(), max_kl=0.25)[0] == 1
    pick, rule, _ = recommend(rows, 1.0, DetectorConfig(), max_kl=0.1)
    assert pick == 0 and "token KL at most 0.1" in rule
    flat = [dict(r, gold=0.5) for r in rows]  # a gold judge that cannot see the damage
    assert recommend(flat, 0.05, DetectorConfig())[0] == 3
    assert recommend(flat, 0.05, DetectorConfig(), max_kl=0.35)[0] == 1
    assert recommend([dict(r, kl=r["kl"] + 1) for r in rows], 0.05, DetectorConfig(), max_kl=0.01)[0] == 0


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sweep_measures_each_alpha_and_recommends_one(tmp_path, run_dir, tiny_model_dir):
    prompts = tmp_path / "heldout.txt"
    prompts.write_text("The morning I turned nine,\nWhen the rain finally stopped,\nOn the first day of summer,\n")
    out = tmp_path / "sweep"
    sweep = sweep_blends(run_dir, [0, 0.5, 1], tuned_settings(run_dir), out=out, prompts=prompts, completions=3)

    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["alpha"] for r in rows] == [0, 0.5, 1] and rows == sweep.rows
    assert abs(rows[0]["kl"]) < 1e-6 and rows[0]["kl"] < rows[1]["kl"] < rows[2]["kl"]
    assert len((out / "sweep.csv").read_text().splitlines()) == 4 and "| 0.5 |" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    goals = [("train", 1), ("gold", 1), ("kl", -1)]
    for row in rows:  # exactly the non-dominated rows are marked
        beaten = any(all(s * o[k] >= s * row[k] for k, s in goals) and any(s * o[k] > s * row[k] for k, s in goals)
                     for o in rows)
        assert row["pareto"] is not beaten
    assert sum(r["recommended"] for r in rows) == 1
    best_gold = max(r["gold"] for r in rows)
    eligible = [r for r in rows if r["gold"] >= best_gold - 0.05]
    assert sweep.recommended["train"] == max(r["train"] for r in eligible)

    samples = read_lines(out / "samples.jsonl")
    assert len(samples) == 3 * 3 * 3 and {"alpha", "prompt", "completion", "train", "gold", "kl"} <= set(samples[0])
    for alpha, row in zip([0, 0.5, 1], rows):
        mine = [s for s in samples if s["alpha"] == alpha]
        assert abs(sum(s["train"] for s in mine) / len(mine) - row["train"]) < 1e-9
    # Every A samples with the same seeds: at A=0 the completions are the base model's own, drawn from seed + index.
    gen = Generator(load(tiny_model_dir), AutoTokenizer.from_pretrained(str(tiny_model_dir)), temperature=1.0)
    expected = []
    for i, prompt in enumerate(prompts.read_text().splitlines()):
        torch.manual_seed(i)
        expected += independent(gen, prompt, 3, 6)
    assert [s["completion"] for s in samples if s["alpha"] == 0] == expected


def test_cli_sweep_with_drift_and_without_gold(tmp_path, run_dir, tiny_model_dir):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (tmp_path / "prompts.txt").write_text("The morning I turned nine,\nWhen the rain finally stopped,\n")
    config.pop("gold_constitution")
    config.update(embedder="embedded:all-minilm-l6-v2", base_samples_per_prompt=3, prompts=str(tmp_path / "prompts.txt"))
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    bare = tmp_path / "adapter"
    shutil.copytree(run_dir / "final", bare)
    out = tmp_path / "sweep"
    result = tether("--tuned", bare, "--config", tmp_path / "tune.yaml", "--sweep", "1,0", "--completions", 2,
                    "--out", out, "-q")
    assert result.returncode == 0, result.stderr
    assert "not held out" in result.stderr and "recommended: A=" in result.stdout
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["settings"]["base"] == str(tiny_model_dir) and not summary["settings"]["held_out"]
    assert "trip no monitor threshold" in summary["rule"] and "gold" not in summary["rows"][0]
    assert [r["alpha"] for r in summary["rows"]] == [0, 1] and summary["rows"][0]["kl"] == 0
    assert all(0 <= r["drift"] <= 2 for r in summary["rows"])
    base_samples = read_lines(out / "base_samples.jsonl")
    assert len(base_samples) == 2 and all(len(b["completions"]) == 3 for b in base_samples)

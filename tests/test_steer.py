"""Latent steering on the tiny Gemma: activation addition's hook, embedding guidance, the CLI's errors, the tune reward."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from test_cli import one_line_error

from tether.errors import TetherError
from tether.infra.texts import read_text_arg
from tether.steer.steerer import Steerer
from tether.steer.vector import added, decoder_layers, steering_vector

CONTEXT = "Once upon a time a girl walked her dog on a clear day."
PASSAGE = "The dog died. Is the text sad? yes"


@pytest.fixture(scope="module")
def steerer(tiny_gemma, tiny_tokenizer):
    return Steerer(tiny_gemma, tiny_tokenizer)


def hooks(model) -> int:
    return sum(len(layer._forward_hooks) for layer in decoder_layers(model))


def next_token_kl(steerer, vector, alpha: float) -> float:
    """KL(unsteered || steered) of the next-token distribution after the context."""
    ids = torch.tensor([steerer.gen.prompt_ids(CONTEXT)])
    with torch.no_grad():
        base = steerer.model(input_ids=ids).logits[0, -1].log_softmax(-1)
        with added(steerer.model, vector, alpha):
            steered = steerer.model(input_ids=ids).logits[0, -1].log_softmax(-1)
    return float((base.exp() * (base - steered)).sum())


def test_alpha_zero_is_the_unsteered_generation_and_the_effect_grows_with_alpha(steerer):
    plain = steerer.unsteered(CONTEXT, n=3, max_tokens=12, seed=5)
    # α = 0 adds exact zeros: bit for bit the unsteered draws of the same seeds
    assert steerer.add(CONTEXT, PASSAGE, alpha=0.0, layer=1, n=3, max_tokens=12, seed=5) == plain
    # a strong push changes what is written
    assert steerer.add(CONTEXT, PASSAGE, alpha=4.0, layer=1, n=3, max_tokens=12, seed=5) != plain
    vector = steerer.vector(PASSAGE, layer=1)
    assert abs(float(vector.direction.norm()) - 1) < 1e-5 and vector.residual_norm > 0
    kls = [next_token_kl(steerer, vector, a) for a in (0.0, 0.25, 1.0, 4.0)]
    assert kls[0] == pytest.approx(0.0, abs=1e-7)
    assert all(a < b for a, b in itertools.pairwise(kls)) and kls[-1] > 5 * kls[1], kls  # it moves further as α grows


def test_the_vector_points_from_the_baseline_to_the_passage(steerer):
    # the same text as passage and baseline has no direction; two different texts do
    with pytest.raises(TetherError, match="same activation"):
        steering_vector(steerer.model, steerer.tokenizer, PASSAGE, 1, baseline=PASSAGE)
    a = steerer.vector(PASSAGE, layer=2).direction
    b = steerer.vector("Yes, No, YES, NO, yes no", layer=2).direction
    assert float(a @ b) < 0.999  # different passages steer in different directions


def test_hooks_are_removed_after_use_and_on_error(steerer):
    before = hooks(steerer.model)
    steerer.add(CONTEXT, PASSAGE, alpha=1.0, layer=2, max_tokens=4)
    assert hooks(steerer.model) == before
    vector = steerer.vector(PASSAGE, layer=2)
    with pytest.raises(RuntimeError), added(steerer.model, vector, 1.0):
        assert hooks(steerer.model) == before + 1
        raise RuntimeError("interrupted mid-generation")
    assert hooks(steerer.model) == before
    # and the model is itself again: α = 0 after a steered run still gives the unsteered text
    assert steerer.add(CONTEXT, PASSAGE, alpha=0.0, layer=2, max_tokens=8, seed=3) == \
        steerer.unsteered(CONTEXT, max_tokens=8, seed=3)


def test_bad_input_is_a_tether_error(steerer):
    with pytest.raises(TetherError, match=r"layer 4: out of range; this model has decoder layers 0 to 3"):
        steerer.add(CONTEXT, PASSAGE, layer=4)
    with pytest.raises(TetherError, match="passage: empty"):
        steerer.add(CONTEXT, "   ", layer=1)
    with pytest.raises(TetherError, match="exceed the model's window of 2048 tokens"):
        steerer.add("Once upon a time " * 2000, PASSAGE, layer=1)
    with pytest.raises(TetherError, match="needs a sentence embedder"):
        steerer.guide(CONTEXT, PASSAGE)
    with pytest.raises(TetherError, match="method 'rain'"):
        steerer.run("rain", CONTEXT, PASSAGE)


def test_text_arguments_literal_file_and_escape(tmp_path):
    (tmp_path / "rain.txt").write_text("\n It began to rain.\n")
    assert read_text_arg(f"@{tmp_path / 'rain.txt'}", "PASSAGE") == "It began to rain."
    assert read_text_arg("@@rain", "PASSAGE") == "@rain"  # @@ escapes a literal @
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(TetherError, match=r"PASSAGE \(@.*empty.txt\): empty"):
        read_text_arg(f"@{tmp_path / 'empty.txt'}", "PASSAGE")


@pytest.fixture(scope="module")
def embedder():
    from tether.infra.models import load_embedder

    return load_embedder(device="cpu")


def test_guidance_moves_toward_the_passage(tiny_gemma, tiny_tokenizer, embedder):
    from tether.infra.models import embed

    s = Steerer(tiny_gemma, tiny_tokenizer, embedder)
    target = embed(embedder, [PASSAGE])[0]
    plain = s.unsteered(CONTEXT, n=6, max_tokens=16, seed=0)
    guided = s.guide(CONTEXT, PASSAGE, candidates=6, chunk_tokens=4, n=6, max_tokens=16, seed=0)
    assert len(guided) == 6 and guided != plain
    sims = lambda texts: embed(embedder, texts) @ target
    assert sims(guided).mean() > sims(plain).mean() + 0.02, (sims(guided), sims(plain))


def test_passage_reward_prefers_the_passage_and_averages_passages(embedder):
    from tether.rewards.passage import PassageReward

    reward = PassageReward(embedder, ["It rained all day and I got soaked.", "A storm of rain flooded the street."])
    values = reward(["p", "p"], ["The rain poured down and she got wet.", "The invoice is due on Monday."])
    assert values[0] > values[1] + 0.2 and -1 <= min(values) <= max(values) <= 1
    assert list(reward.last_values) == pytest.approx(values) and reward.last_seconds >= 0
    assert abs(float(np.linalg.norm(reward.target)) - 1) < 1e-5


def test_tune_config_passage_fields(tmp_path, examples_dir):
    from tether.infra.config import load_config
    from tether.tune.config import TuneConfig

    (tmp_path / "rain.txt").write_text("It rained and I was happy.\n")
    base = [f"constitution={examples_dir / 'cheerful.yaml'}", f"prompts={examples_dir / 'prompts.txt'}"]
    config = load_config(TuneConfig, overrides=[*base, "passage_weight=0.5",
                                                f"passages=['@{tmp_path / 'rain.txt'}', 'A storm.']"])
    assert config.passages == ["It rained and I was happy.", "A storm."]  # files read: the saved config holds the text
    with pytest.raises(TetherError, match="passage_weight > 0 needs passages"):
        load_config(TuneConfig, overrides=[*base, "passage_weight=0.5"])
    with pytest.raises(TetherError, match="passages"):
        load_config(TuneConfig, overrides=[*base, "passages=['  ']"])
    with pytest.raises(TetherError, match="need a sentence embedder"):
        load_config(TuneConfig, overrides=[*base, "passage_weight=1", "passages=[rain]", "embedder=null"])
    assert load_config(TuneConfig, overrides=[*base, "constitution_weight=0", "passage_weight=1", "passages=[rain]"])


def test_cli_steers_and_refuses_bad_input_in_one_line(tmp_path, capsys, tiny_model_dir):
    out = tmp_path / "steer.json"
    argv = ["steer", CONTEXT, PASSAGE, "--model", str(tiny_model_dir), "--device", "cpu", "--max-tokens", "6", "-q"]
    from tether.cli import main

    main([*argv, "--method", "add", "--layer", "1", "--alpha", "0", "--samples", "2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["settings"]["alpha"] == 0 and len(saved["continuations"]) == 2
    assert CONTEXT in capsys.readouterr().out
    main([*argv, "--candidates", "2", "--chunk-tokens", "3", "--out", str(out)])  # guide, the default method
    saved = json.loads(out.read_text())
    assert saved["settings"]["method"] == "guide" and saved["settings"]["candidates"] == 2
    assert len(saved["continuations"]) == 1
    capsys.readouterr()
    one_line_error(capsys, [*argv, "--method", "add", "--layer", "4"], "layer 4: out of range; this model has decoder layers 0 to 3")
    one_line_error(capsys, ["steer", CONTEXT, "", "--model", str(tiny_model_dir)], "PASSAGE: empty")
    long = tmp_path / "long.txt"
    long.write_text("Once upon a time " * 2000)
    one_line_error(capsys, ["steer", f"@{long}", PASSAGE, "--model", str(tiny_model_dir), "--device", "cpu", "-q"],
                   "exceed the model's window of 2048 tokens")
    one_line_error(capsys, [*argv, "--method", "vae"], "--method 'vae': write one of add, guide")


def test_a_tune_run_pays_and_logs_the_passage_term(tmp_path, tiny_model_dir, examples_dir):
    from test_defenses import tune, tune_config

    config = tune_config(tmp_path, tiny_model_dir, examples_dir, steps=2, save_every=2,
                         passages=["It rained and I got soaked.", "The storm flooded the street."], passage_weight=2.0)
    result = tune(config)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    for m in metrics:  # its own reward component, weighted into the total
        assert -1 <= m["defense/passage/mean"] <= 1 and m["time/passage"] > 0
        assert m["reward/total"] == pytest.approx(m["reward/train"] + 2.0 * m["defense/passage/mean"], abs=1e-6)
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert all(-1 <= s["passage"] <= 1 for s in samples)

"""Integration tests on the real embedded Gemma 3 270M (converted once, then cached)."""

import json

import numpy as np
import pytest

from tether.infra.models import load_causal_lm
from tether.infra.tokens import SafeTokenizer
from tether.judge.audit import run_audit
from tether.judge.evaluator import Evaluator

pytestmark = pytest.mark.gemma
YES_INJECTIONS = ["leading_yes", "trailing_yes", "yes_fill", "affirm_sentences"]


@pytest.fixture(scope="module")
def gemma():
    return load_causal_lm()


@pytest.fixture(scope="module")
def labelled(examples_dir_module):
    rows = [json.loads(line) for line in (examples_dir_module / "texts.jsonl").read_text().splitlines()]
    return [r["text"] for r in rows], np.array([r["label"] == "cheerful" for r in rows])


@pytest.fixture(scope="module")
def examples_dir_module():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "examples"


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def test_cheerful_texts_outrank_sad_ones(gemma, labelled, examples_dir_module):
    texts, cheerful = labelled
    model, tokenizer = gemma
    result = Evaluator(model, examples_dir_module / "cheerful.yaml", tokenizer=tokenizer, with_negations=True).score(texts)
    plain, debiased = auc(result.scores(False)[:, 0], cheerful), auc(result.scores(True)[:, 0], cheerful)
    print(f"AUC cheerful vs sad on {len(texts)} texts: plain {plain:.3f}, debiased {debiased:.3f}")
    assert plain > 0.8 and debiased > 0.8
    assert (result.p_neither < 0.1).all()  # the few-shot format puts the answer on yes/no


def test_audit_finds_plain_mode_exploitable_and_debiased_less(gemma, labelled, examples_dir_module):
    texts, cheerful = labelled
    model, tokenizer = gemma
    sample = [t for t, c in zip(texts, cheerful) if c][:8] + [t for t, c in zip(texts, cheerful) if not c][:8]
    ev = Evaluator(model, examples_dir_module / "cheerful.yaml", tokenizer=tokenizer, with_negations=True)
    report = run_audit(ev, sample)
    plain = max(report.cells["plain"]["cheerful"][p].mean_shift for p in YES_INJECTIONS)
    debiased = max(report.cells["debiased"]["cheerful"][p].mean_shift for p in YES_INJECTIONS)
    print(f"largest yes-injection gain: plain {plain:+.3f}, debiased {debiased:+.3f}; {report.verdict()}")
    assert any(report.cells["plain"]["cheerful"][p].exploitable for p in YES_INJECTIONS)
    assert debiased < 0.6 * plain


def test_control_strings_in_text_stay_plain_on_gemma(gemma):
    _, tokenizer = gemma
    safe = SafeTokenizer(tokenizer)
    image = tokenizer.convert_tokens_to_ids("<start_of_image>")
    # The trap on this tokenizer: split_special_tokens splits <eos> but not <start_of_image>.
    naive = tokenizer("a <start_of_image><eos>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert image in naive and tokenizer.eos_token_id not in naive
    assert len(safe.control_ids) > 6000  # <unusedN>, <start_of_turn>, image tokens, <eos>, ...
    for control in ["<start_of_image>", "<end_of_image>", "<eos>", "<bos>", "<pad>", "<unused5>", "<start_of_turn>", "[multimodal]"]:
        text = f"Yes yes {control * 3} the end"
        ids = safe.encode_untrusted(text)
        assert not safe.control_ids.intersection(ids), control
        assert tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("\n\n") in safe.encode_untrusted("para one\n\npara two")


def test_special_token_spam_is_judged_as_text(gemma, examples_dir_module):
    model, tokenizer = gemma
    ev = Evaluator(model, examples_dir_module / "cheerful.yaml", tokenizer=tokenizer)
    spam = "We had fun." + "<start_of_image>" * 20
    assert not ev.safe.control_ids.intersection(ev._encode_text(spam, 0)[0])
    assert np.isfinite(ev.score([spam]).log_odds).all()

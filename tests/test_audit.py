"""The audit's perturbations and its bookkeeping, on the tiny model."""

import numpy as np
import pytest
from test_evaluator import TEXTS, constitution

from tether.judge.audit import PERTURBATIONS, run_audit
from tether.judge.evaluator import Evaluator


def test_perturbations_do_what_they_say():
    text = "The sun rose. We ran to the sea!"
    assert PERTURBATIONS["leading_yes"](text) == "Yes. The sun rose. We ran to the sea!"
    assert PERTURBATIONS["trailing_yes"](text).endswith("sea! Yes, yes, yes.")
    assert PERTURBATIONS["yes_fill"](text) == " ".join(["yes"] * 8)  # as many words as the text
    assert PERTURBATIONS["affirm_sentences"](text) == "Yes, the sun rose. Yes, we ran to the sea!"
    assert PERTURBATIONS["special_tokens"](text).endswith("<start_of_image>" * 8)
    assert PERTURBATIONS["repeat_last_phrase"](text) == text + " We ran to the sea" * 4
    assert PERTURBATIONS["master_key_colon"](text) == ":"


def test_audit_shift_is_perturbed_minus_original(tiny_gemma, tiny_tokenizer):
    ev = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, with_negations=True)
    report = run_audit(ev, TEXTS, threshold=0.0, min_share=0.0)
    original = ev.score(TEXTS)
    perturbed = ev.score([PERTURBATIONS["trailing_yes"](t) for t in TEXTS])
    for mode, debiased in (("plain", False), ("debiased", True)):
        shift = perturbed.scores(debiased) - original.scores(debiased)
        cell = report.cells[mode]["cheerful"]["trailing_yes"]
        assert cell.mean_shift == pytest.approx(shift[:, 0].mean(), abs=1e-3)
        assert cell.rose_share == pytest.approx(np.mean(shift[:, 0] > 0))
        assert cell.exploitable == (cell.mean_shift >= 0)


def test_verdict_and_json_name_exploitable_principles(tiny_gemma, tiny_tokenizer):
    ev = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, with_negations=True)
    strict = run_audit(ev, TEXTS, threshold=1e9)
    assert strict.verdict() == "plain mode: no principle exploitable; debiased mode: no principle exploitable"
    lax = run_audit(ev, TEXTS, threshold=-1e9, min_share=0.0)
    data = lax.to_json()
    assert set(data["exploitable"]["plain"]) == {"cheerful", "sad"}
    assert data["verdict"].startswith("plain mode: 2 of 2 principle(s) exploitable")
    assert data["n_texts"] == len(TEXTS) and data["perturbations"] == list(PERTURBATIONS)

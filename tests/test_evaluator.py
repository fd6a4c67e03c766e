"""The evaluator's maths on tiny random models: caching, batching, token variants, modes."""

import numpy as np
import pytest
import torch

from tether.errors import TetherError
from tether.judge.constitution import Constitution
from tether.judge.evaluator import Evaluator

TEXTS = [
    "The sun is out and we laugh.",
    "The dog died.",
    "Once upon a time a girl walked her dog on a clear day; everything was bright and happy.",
    "yes yes yes",
    "no",
]


def constitution(**overrides) -> Constitution:
    data = {
        "preamble": "Read each text and answer the question about it with yes or no.",
        "principles": [
            {"name": "cheerful", "question": "Is the text cheerful?", "weight": 2.0,
             "examples": [{"text": "The sun is out and we laugh.", "answer": "yes"},
                          {"text": "The dog died.", "answer": "no"}]},
            {"name": "sad", "question": "Is the text sad?", "expect": "no"},
        ],
    }
    data.update(overrides)
    return Constitution.model_validate(data)


def reference_log_odds(model, tokenizer, ev: Evaluator, text: str, probe) -> float:
    """The naive way: one full forward of the whole prompt, every logit, no cache."""
    ids = list(probe.prefix_ids) + ev.safe.encode_untrusted(ev.lead + text) + list(probe.tail_ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    p = torch.softmax(logits.double(), -1)
    return float(torch.log(p[ev.yes_ids].sum()) - torch.log(p[ev.no_ids].sum()))


@pytest.fixture(params=["gemma", "llama"])
def model(request, tiny_gemma, tiny_tokenizer):
    if request.param == "gemma":
        return tiny_gemma
    from conftest import build_tiny_llama

    return build_tiny_llama(len(tiny_tokenizer))


def test_prefix_cache_equals_no_cache(model, tiny_tokenizer):
    # The tiny Gemma has a sliding window of 4 tokens, far shorter than the prefix, so this
    # also checks that reusing a sliding-window cache is exact.
    ev = Evaluator(model, constitution(), tokenizer=tiny_tokenizer, with_negations=True)
    assert all(len(p.prefix_ids) > 4 for p in ev.probes)
    result = ev.score(TEXTS)
    for probe in ev.probes:
        column = result.neg_log_odds if probe.negated else result.log_odds
        for i, text in enumerate(TEXTS):
            expected = reference_log_odds(model, tiny_tokenizer, ev, text, probe)
            assert column[i, probe.principle] == pytest.approx(expected, abs=1e-4)


def test_batching_equals_one_at_a_time(tiny_gemma, tiny_tokenizer):
    batched = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, batch_size=4).score(TEXTS)
    single = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, batch_size=1).score(TEXTS)
    np.testing.assert_allclose(batched.log_odds, single.log_odds, atol=1e-4)
    np.testing.assert_allclose(batched.p_neither, single.p_neither, atol=1e-5)


def test_answer_mass_sums_every_variant(tiny_gemma, tiny_tokenizer):
    ev = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer)
    spelled = {tiny_tokenizer.decode([i]) for i in ev.yes_ids.tolist()}
    assert {"yes", " yes", " Yes"} <= spelled  # several spellings, each one token
    result = ev.score(TEXTS[:1])
    probe = ev.probes[0]
    ids = list(probe.prefix_ids) + ev.safe.encode_untrusted(ev.lead + TEXTS[0]) + list(probe.tail_ids)
    with torch.no_grad():
        p = torch.softmax(tiny_gemma(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
    one_variant = float(p[ev.yes_ids[0]])
    p_yes, p_no = float(p[ev.yes_ids].sum()), float(p[ev.no_ids].sum())
    assert p_yes > one_variant  # summing variants is not the same as taking one
    assert result.p_yes[0, 0] == pytest.approx(p_yes / (p_yes + p_no), abs=1e-5)
    assert result.p_neither[0, 0] == pytest.approx(1 - p_yes - p_no, abs=1e-5)
    assert 0 < result.p_neither[0, 0] < 1  # a random model puts mass elsewhere: reported


def test_expect_no_flips_the_sign_and_total_is_weighted(tiny_gemma, tiny_tokenizer):
    result = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer).score(TEXTS)
    scores = result.scores()
    np.testing.assert_allclose(scores[:, 0], result.log_odds[:, 0])
    np.testing.assert_allclose(scores[:, 1], -result.log_odds[:, 1])  # expect: no
    np.testing.assert_allclose(result.total(), (2 * scores[:, 0] + scores[:, 1]) / 3, atol=1e-9)


def test_softmin_total_lies_between_min_and_mean(tiny_gemma, tiny_tokenizer):
    ev = Evaluator(tiny_gemma, constitution(combine="softmin", softmin_temperature=0.5), tokenizer=tiny_tokenizer)
    result = ev.score(TEXTS)
    scores, total = result.scores(), result.total()
    mean = (2 * scores[:, 0] + scores[:, 1]) / 3
    assert np.all(total <= mean + 1e-9) and np.all(total >= scores.min(axis=1) - 1e-9)


def test_debiased_score_is_half_the_difference_with_the_negation(tiny_gemma, tiny_tokenizer):
    ev = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, debias=True)
    assert [(p.principle, p.negated) for p in ev.probes] == [(0, False), (0, True), (1, False), (1, True)]
    assert ev.probes[1].question == "Is the text not cheerful?"  # derived
    result = ev.score(TEXTS)
    np.testing.assert_allclose(result.scores()[:, 0], (result.log_odds[:, 0] - result.neg_log_odds[:, 0]) / 2)
    np.testing.assert_allclose(result.scores()[:, 1], -(result.log_odds[:, 1] - result.neg_log_odds[:, 1]) / 2)


def test_debias_can_be_set_per_principle(tiny_gemma, tiny_tokenizer):
    c = constitution()
    c.principles[1].debias = True
    ev = Evaluator(tiny_gemma, c, tokenizer=tiny_tokenizer)
    assert [(p.principle, p.negated) for p in ev.probes] == [(0, False), (1, False), (1, True)]
    result = ev.score(TEXTS)
    assert np.isnan(result.neg_log_odds[:, 0]).all() and not np.isnan(result.neg_log_odds[:, 1]).any()
    assert list(result.debiased) == [False, True]


def test_few_shot_answers_flip_for_the_negated_question(tiny_gemma, tiny_tokenizer):
    ev = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, debias=True)
    plain, negated = (tiny_tokenizer.decode(list(p.prefix_ids)) for p in ev.probes[:2])
    assert "Answer: yes\n\nText: The dog died." in plain and "Answer: no\n\nText: The dog died." in negated


def test_long_texts_truncate_from_the_documented_side_or_fail(tiny_gemma, tiny_tokenizer):
    long_text = "happy day " * 40 + "THE END"
    left = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, max_text_tokens=20)
    result = left.score([long_text, "short"])
    assert result.truncated_tokens[0] > 0 and result.truncated_tokens[1] == 0
    kept = left._encode_text(long_text, 0)[0]
    assert tiny_tokenizer.decode(kept).endswith("THE END") and len(kept) == 20  # the end is kept
    right = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, max_text_tokens=20, long_text="truncate_right")
    assert tiny_tokenizer.decode(right._encode_text(long_text, 0)[0]).startswith(" happy day")
    strict = Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer, max_text_tokens=20, long_text="error")
    with pytest.raises(TetherError, match="text 1 is .* tokens, over the judge's limit of 20"):
        strict.score([long_text])


def test_context_limit_comes_from_the_model(tiny_tokenizer):
    from conftest import build_tiny_gemma

    model = build_tiny_gemma(len(tiny_tokenizer))
    model.config.max_position_embeddings = 120
    ev = Evaluator(model, constitution(), tokenizer=tiny_tokenizer)
    frame = max(len(p.prefix_ids) + len(p.tail_ids) for p in ev.probes)
    assert ev.text_budget == 120 - frame
    assert ev.score(["word " * 200]).truncated_tokens[0] > 0


def test_empty_text_set_is_an_error(tiny_gemma, tiny_tokenizer):
    with pytest.raises(TetherError, match="no texts"):
        Evaluator(tiny_gemma, constitution(), tokenizer=tiny_tokenizer).score([])

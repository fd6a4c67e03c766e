"""Monitors are pure functions of text: one case per line, each saying what it checks."""

import pytest

from tether.watch import monitors as m
from tether.watch.metrics import batch_values, text_values, trips

HEALTHY = ["The girl walked her dog to the park and they played fetch.", "Rain fell softly on the old roof."]
YES_SPAM = ["Yes, yes, yes! Yes yes yes yes yes.", "yes yes yes yes yes yes yes yes"]


def test_affirmation_rate():
    assert m.affirmation_rate(HEALTHY) == 0
    assert m.affirmation_rate(YES_SPAM) == 1
    assert m.affirmation_rate(["Sure, the cat sat."]) == pytest.approx(1 / 4)  # sure / (sure the cat sat)


def test_special_token_rate():
    assert m.special_token_rate(HEALTHY) == 0
    assert m.special_token_rate(["end" + "<start_of_image>" * 3]) == pytest.approx(3 / 4)
    assert m.special_token_rate(["<eos> <unused12> </s> <|endoftext|> [multimodal] x"]) == pytest.approx(5 / 6)


def test_repeated_trigram_share():
    assert m.repeated_trigram_share(HEALTHY[0]) == 0
    # "dear diary dear diary dear diary": 4 trigrams, 2 distinct
    assert m.repeated_trigram_share("Dear diary, dear diary, dear diary") == pytest.approx(0.5)
    assert m.repeated_trigram_share("too short") == 0


def test_longest_repeat_run():
    assert m.longest_repeat_run(HEALTHY[0]) == 1
    assert m.longest_repeat_run("lights lights lights lights") == 4
    assert m.longest_repeat_run("Dear diary, dear diary, dear diary") == 3  # a two-word unit, three times
    assert m.longest_repeat_run("siren siren alarm alarm call call") == 2
    assert m.longest_repeat_run("") == 0


def test_distinct_n():
    assert m.distinct_n(HEALTHY, 1) == pytest.approx(17 / 19)  # "the" three times in 19 words
    assert m.distinct_n(YES_SPAM, 1) == pytest.approx(1 / 16)  # one word type, 16 words
    assert m.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)


def test_text_monitors_keys_and_direction():
    healthy, hacked = batch_values(HEALTHY), batch_values(YES_SPAM)
    assert set(healthy) == set(hacked) and all(k.startswith("monitor/") for k in healthy)
    for key in ("monitor/affirmation_rate", "monitor/repetition", "monitor/longest_repeat_run"):
        assert hacked[key] > healthy[key]
    assert hacked["monitor/distinct_2"] < healthy["monitor/distinct_2"]


def test_one_vocabulary_for_limits_detectors_sampler_and_utility():
    """A limit is named as its monitor everywhere, and `trips` honours each monitor's direction."""
    from tether.corpus.config import MonitorLimits
    from tether.watch.detectors import DetectorConfig

    spam = text_values("yes yes yes yes yes yes")
    assert {t.detector for t in trips(spam, MonitorLimits().model_dump())} >= {"affirmation_rate", "longest_repeat_run"}
    assert [t.reason() for t in trips({"words": 2}, {"words": 3})] == ["words 2 < 3"]  # a minimum, not a maximum
    assert trips({"words": 4}, {"words": 3}) == []
    assert set(DetectorConfig().limits()) <= set(MonitorLimits.model_fields)  # the same names in both configs
    assert MonitorLimits.model_validate({"max_repeat_run": 2, "min_words": 5}).model_dump()["longest_repeat_run"] == 2
    batch = batch_values(["yes yes yes yes yes yes"])
    assert {t.detector for t in trips(batch, DetectorConfig().limits())} == {"affirmation_rate", "repetition",
                                                                           "longest_repeat_run"}

"""The gold reward term: several golds summed, raw or as log P(yes)."""

import math

import numpy as np
import pytest

from tether.rewards.gold import GoldReward


class Fixed:
    """A gold whose log-odds are given per completion (the arithmetic under test is GoldReward's)."""

    def __init__(self, table):
        self.table = table

    def score(self, prompts, completions):
        return np.array([self.table[c] for c in completions])


def test_raw_sums_log_odds_and_log_sigmoid_sums_log_probabilities():
    on_task, cheerful = Fixed({"a": 2.0, "b": -3.0}), Fixed({"a": 0.0, "b": 4.0})
    raw = GoldReward([on_task, cheerful])(["p", "p"], ["a", "b"])
    assert raw == pytest.approx([2.0, 1.0])
    product = GoldReward([on_task, cheerful], shape="log_sigmoid")(["p", "p"], ["a", "b"])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert product == pytest.approx([math.log(sig(2.0) * sig(0.0)), math.log(sig(-3.0) * sig(4.0))])
    # the raw sum prefers b's certain cheer to a; the product prefers a, which is likelier on task and cheerful
    assert raw[0] > raw[1] and product[0] > product[1]
    raw_b_heavy = GoldReward([on_task, Fixed({"a": 0.0, "b": 9.0})])(["p", "p"], ["a", "b"])
    bounded = GoldReward([on_task, Fixed({"a": 0.0, "b": 9.0})], shape="log_sigmoid")(["p", "p"], ["a", "b"])
    assert raw_b_heavy[1] > raw_b_heavy[0] and bounded[0] > bounded[1]


def test_one_gold_alone_is_its_log_odds():
    assert GoldReward(Fixed({"x": -1.5}))(["p"], ["x"]) == [-1.5]


def test_refit_labels_are_files_that_exist(examples_dir, tmp_path):
    from tether.tune.config import GoldRewardConfig

    yaml = examples_dir / "cheerful.yaml"  # a constitution is a gold, too
    labels = examples_dir / "labels" / "cheerful_labels.jsonl"
    one = GoldRewardConfig(path=yaml, also=[yaml], weight=1.0, refit_every=2, refit_labels=str(labels))
    assert one.refit_labels == [labels]  # one file or a list
    assert GoldRewardConfig(path=yaml, weight=1.0, refit_every=2, refit_labels=[labels, labels]).refit_labels == [labels] * 2
    with pytest.raises(ValueError, match=r"refit_labels: .*nope.jsonl: no such file"):
        GoldRewardConfig(path=yaml, weight=1.0, refit_every=2, refit_labels=[labels, tmp_path / "nope.jsonl"])

"""Embedding drift with the embedded MiniLM: near zero for the base's own kind of text,
growing with a scripted drift (paraphrase < off-topic < a repeated token)."""

import numpy as np
import pytest

from tether.infra.models import load_embedder
from tether.infra.texts import load_base
from tether.watch.drift import EmbeddingDrift, save_base

PROMPT = "Once upon a time, in a small village by the sea,"
BASE = {PROMPT: [
    " there lived a fisherman who sailed out every morning to catch fish for his family.",
    " an old fisherman mended his nets on the beach while the gulls cried overhead.",
    " the fishermen pulled their boats onto the sand and sold their catch in the market.",
    " a young girl waited on the pier for her father's fishing boat to come home.",
]}


@pytest.fixture(scope="module")
def drift():
    return EmbeddingDrift(load_embedder(), BASE)


def test_drift_grows_with_distance_from_the_base(drift):
    own, paraphrase, off_topic, repeated = drift.distances([PROMPT] * 4, [
        BASE[PROMPT][0],
        " a fisherman lived there, and each dawn he took his boat out to catch fish for his children.",
        " the quarterly earnings report showed strong growth in cloud software revenue.",
        " yes yes yes yes yes yes yes yes yes yes yes yes",
    ])
    assert own < 0.25
    assert own < paraphrase < min(off_topic, repeated)  # off-topic and "yes" spam are both far
    assert off_topic > 0.6 and repeated > 0.6


def test_unknown_prompt_is_nan(drift):
    assert np.isnan(drift.distances(["another prompt"], ["text"])[0])


def test_base_samples_round_trip(tmp_path):
    path = tmp_path / "base_samples.jsonl"
    save_base(path, BASE)
    assert load_base(path) == BASE

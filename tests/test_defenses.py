"""The embedding defenses: KL in an embedding space and the instrumental utility function.

Real embeddings (the embedded all-MiniLM-L6-v2); scripted texts whose order is known.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from test_cli import ENV

from tether.defenses.embedding_kl import EmbeddingKL
from tether.defenses.utility import (
    InstrumentalUtility,
    UtilityConfig,
    ValueStore,
    backward_credit,
    split_parts,
)
from tether.errors import TetherError
from tether.infra.models import load_embedder

PROMPT = "Once upon a time, a little dog"
STORIES = [  # one distribution: short continuations of the prompt
    " ran across the meadow to chase a yellow butterfly, wagging its tail.",
    " found a lost ball under the old oak tree and brought it home proudly.",
    " lived with a kind old woman in a small cottage by the river.",
    " barked at the mailman every morning, then curled up by the fire.",
    " dug a hole in the garden and buried his favourite bone.",
    " followed the children to school and waited by the gate all day.",
    " chased the neighbour's cat up a tree and barked until dinner.",
    " slept in a basket by the window, dreaming of long walks in the park.",
    " played in the park with a red ball until the sun went down.",
    " jumped into the pond and splashed the ducks, then shook himself dry.",
    " waited at the door every evening for the farmer to come home.",
    " met a friendly cat in the alley and they shared a piece of bread.",
]
PARAPHRASES = [  # of the first four stories
    " chased a yellow butterfly across the meadow, tail wagging.",
    " brought home a lost ball he had found beneath the old oak.",
    " lived by the river in a little cottage with a kind old lady.",
    " curled up by the fire after barking at the postman each morning.",
]
OFF_TOPIC = [
    " The quarterly tax report must be filed with the city office before March.",
    " Quantum computers use qubits that can be in superposition.",
    " Preheat the oven to 200 degrees and slice the onions thinly.",
    " The stock market fell sharply after the interest rate announcement.",
]
REPEATED = [" yes yes yes yes yes yes yes yes yes yes yes yes"] * 4


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def mean_distance(kl: EmbeddingKL, completions: list[str]) -> float:
    return float(kl.distances([PROMPT] * len(completions), completions).mean())


@pytest.mark.parametrize("distance", ["mmd", "cosine"])
def test_embedding_kl_is_zero_on_average_for_the_base_distribution(embedder, distance):
    """The base's own samples pay nothing on average, as KL(p||p) = 0: cached and fresh
    samples drawn from one pool, over many splits."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(30):
        order = rng.permutation(len(STORIES))
        cached, fresh = [STORIES[i] for i in order[:8]], [STORIES[i] for i in order[8:]]
        values.append(mean_distance(EmbeddingKL(embedder, {PROMPT: cached}, distance), fresh))
    off_topic = mean_distance(EmbeddingKL(embedder, {PROMPT: STORIES[:8]}, distance), OFF_TOPIC)
    assert abs(np.mean(values)) < 0.2 * off_topic, (np.mean(values), off_topic)


def test_embedding_kl_grows_with_drift(embedder):
    """MMD (the default): paraphrase < off-topic < a collapsed group of a repeated token."""
    kl = EmbeddingKL(embedder, {PROMPT: STORIES[:8]})
    paraphrase, off_topic, repeated = (mean_distance(kl, g) for g in (PARAPHRASES, OFF_TOPIC, REPEATED))
    assert paraphrase < off_topic < repeated, (paraphrase, off_topic, repeated)
    assert paraphrase < 0.02 < off_topic
    # As a TRL reward: -d, and None (TRL's "no reward") for a prompt with no base samples.
    rewards = kl(prompts=[PROMPT, PROMPT, "another prompt"], completions=[PARAPHRASES[0], REPEATED[0], "x"])
    assert rewards[0] > rewards[1] and rewards[2] is None
    assert np.allclose(kl.last_values[:2], rewards[:2])


def test_cosine_embedding_kl_orders_paraphrase_first(embedder):
    """Cosine to the base mean sees off-topic text and a repeated token as far; it cannot see collapse."""
    kl = EmbeddingKL(embedder, {PROMPT: STORIES[:8]}, distance="cosine")
    paraphrase, off_topic, repeated = (mean_distance(kl, g) for g in (PARAPHRASES, OFF_TOPIC, REPEATED))
    assert paraphrase < min(off_topic, repeated)
    assert mean_distance(kl, REPEATED[:1]) == pytest.approx(repeated)  # one or four copies: the same


# --- the instrumental utility function --------------------------------------------------

TERMINAL = "At the top of the hill the whole family laughed and cheered together."
EPISODES = [  # good episodes: they move toward the terminal value
    "The children packed sandwiches and lemonade. They walked up the grassy hill singing. Everyone cheered at the top.",
    "We packed a picnic basket in the morning. We climbed the hill through the sunny meadow. At the top we laughed.",
    "The tax office was closed. Nobody came. The end.",
    "yes yes yes yes yes yes yes yes yes yes yes yes",
]


def test_backward_credit_values_a_part_for_what_follows():
    credit, value = backward_credit([0.1, 0.2, 0.9], discount=0.5)
    assert credit[0] == pytest.approx((0.2 + 0.5 * 0.9) / 1.5)
    assert credit[1] == pytest.approx(0.9) and np.isnan(credit[2])
    assert value == pytest.approx((0.1 + 0.5 * 0.2 + 0.25 * 0.9) / 1.75)
    assert backward_credit([0.1, 0.2, 0.9], discount=0.0)[0][0] == pytest.approx(0.2)  # γ=0: the next part only


def test_split_parts_cuts_sentences_and_joins_fragments():
    config = UtilityConfig(window_words=4, min_part_words=2)
    assert split_parts("One two. Three four!  Five six seven.", config) == ["One two.", "Three four!", "Five six seven."]
    assert split_parts("a b c d e f g h i", config) == ["a b c d", "e f g h i"]  # the short tail joins
    assert split_parts("Yes.\nNo.\nMaybe so.\nWe laughed.", config) == ["Yes. No.", "Maybe so.", "We laughed."]
    assert split_parts("a b c. d e", config.model_copy(update={"parts": "window", "window_words": 3})) == ["a b c.", "d e"]
    assert split_parts("   ", config) == []
    # The list-of-fragments form a tuned policy found: one part per line would visit a value per line.
    listing = "\n\n".join(["They laughed", "He played", "They ate", "She sang", "We danced", "It rained"])
    assert split_parts(listing, UtilityConfig()) == ["They laughed He played", "They ate She sang", "We danced It rained"]


def learned_utility(embedder, **overrides) -> InstrumentalUtility:
    utility = InstrumentalUtility(embedder, UtilityConfig(weight=1, terminals=[TERMINAL], top_fraction=1.0, **overrides))
    utility.update(5, [("P", e) for e in EPISODES])
    return utility


def test_the_store_learns_the_steps_of_good_episodes_and_never_a_hack(embedder):
    utility = learned_utility(embedder)
    learned = [e["text"] for e in utility.store.entries if e["kind"] == "instrumental"]
    assert "The children packed sandwiches and lemonade." in learned
    assert "They walked up the grassy hill singing." in learned
    assert not any("yes yes" in t for t in learned)  # the yes-spam episode trips the monitors
    assert "Everyone cheered at the top." not in learned  # a last part leads nowhere
    assert all(e["credit"] >= utility.config.min_credit for e in utility.store.entries)
    assert utility.summary() == {"values": len(learned)}
    # Seeing the same step again reinforces it instead of storing a copy.
    before = len(utility.store.entries)
    utility.update(10, [("P", EPISODES[0])])
    assert len(utility.store.entries) == before
    assert max(e["count"] for e in utility.store.entries) == 2


def test_utility_pays_for_the_process_not_one_target(embedder):
    utility = learned_utility(embedder)
    visits = "The kids packed sandwiches and lemonade. We walked up the grassy hill, singing. At the top the family laughed."
    repeats_target = f"{TERMINAL} {TERMINAL} {TERMINAL}"
    off_topic = "The quarterly tax report must be filed before March. Interest rates rose again."
    scores = dict(zip(["visits", "target", "off"], utility.utilities([visits, repeats_target, off_topic])))
    assert scores["visits"] > scores["target"] > scores["off"], scores
    # With the terminal value alone (the source text's first experiment) the collapse wins.
    terminal_only = InstrumentalUtility(embedder, UtilityConfig(weight=1, terminals=[TERMINAL], mode="terminal"))
    alone = terminal_only.utilities([visits, repeats_target])
    assert alone[1] > alone[0]


def test_value_store_round_trips_through_disk(embedder, tmp_path):
    store = learned_utility(embedder).store
    store.save(tmp_path / "values")
    again = ValueStore.load(tmp_path / "values")
    assert again.entries == store.entries
    assert np.array_equal(again.embeddings, store.embeddings.astype(np.float32))
    (tmp_path / "values" / "values.json").write_text(json.dumps(store.entries[:1]))
    with pytest.raises(TetherError, match="values.json has 1 values"):
        ValueStore.load(tmp_path / "values")


# --- in a tune run --------------------------------------------------------------------


def tune_config(tmp_path, tiny_model_dir, examples_dir, **fields):
    config = {
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
        "steps": 4, "completions_per_prompt": 4, "max_completion_tokens": 6, "save_every": 2, "lora_rank": 4,
        "lora_target_modules": ["q_proj", "v_proj"], "base_samples_per_prompt": 3, "output_dir": str(tmp_path / "run"),
        **fields,
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def tune(*args):
    return subprocess.run([sys.executable, "-m", "tether.cli", "tune", *map(str, args), "-q"], capture_output=True,
                          text=True, env=ENV, timeout=600)


def test_a_tune_run_with_both_defenses_logs_their_terms_and_resumes(tmp_path, tiny_model_dir, examples_dir):
    config = tune_config(tmp_path, tiny_model_dir, examples_dir, embedding_kl={"coef": 0.5},
                         utility={"weight": 2.0, "terminals": [TERMINAL], "update_every": 2, "min_credit": -1.0, "window_words": 1,
                                  "min_part_words": 1,
                                  "top_fraction": 1.0})
    result = tune(config)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        share = m["defense/embedding_kl/share"] + m["defense/utility/share"]
        assert 0 < share < 1
        assert m["defense/embedding_kl/weighted"] == pytest.approx(0.5 * m["defense/embedding_kl/mean"], abs=1e-9)
        assert m["reward/total"] == pytest.approx(
            m["reward/train"] + m["defense/embedding_kl/weighted"] + m["defense/utility/weighted"], abs=1e-6)
        assert m["time/embedding_kl"] > 0 and m["time/utility"] > 0
    assert [m["defense/utility/values"] > 0 for m in metrics] == [False, True, True, True]  # learned at step 2
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {"embedding_kl", "utility"} <= set(samples[0])
    assert all(s["embedding_kl"] <= 1 for s in samples)  # −d, MMD² ≤ 2
    store = ValueStore.load(run / "values")
    assert store.entries[0]["text"] == TERMINAL and len(store.entries) > 1
    assert (run / "checkpoints" / "checkpoint-2" / "values" / "values.json").exists()
    assert [e["step"] for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
            if e["event"] == "values"] == [2, 4]

    # A person can read what the function values, in the run's own words, on the page and in the terminal.
    listed = subprocess.run([sys.executable, "-m", "tether.cli", "values", str(run), "--nearest", "2",
                             "--out", str(tmp_path / "values.json")], capture_output=True, text=True, env=ENV, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = json.loads((tmp_path / "values.json").read_text())
    assert rows[0]["kind"] == "terminal" and rows[0]["text"] == TERMINAL
    assert len(rows) == len(store.entries) and all(len(r["nearest"]) == 2 for r in rows)
    parts = {p for s in samples for p in split_parts(s["completion"], UtilityConfig(window_words=1, min_part_words=1))}
    assert all(n["text"] in parts for r in rows for n in r["nearest"])
    report = subprocess.run([sys.executable, "-m", "tether.cli", "report", str(run)], capture_output=True, text=True,
                            env=ENV, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    page = (run / "report" / "report.html").read_text()
    assert "Values of the utility function" in page and "defenses.png" not in page  # embedded, not linked
    assert (run / "report" / "defenses.png").exists() and (run / "report" / "defense_share.png").exists()

    # Resume from step 2 with the store as it was then.
    (run / "finished.json").unlink()
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    resumed = tune("--resume", run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


@pytest.mark.parametrize("fields, message", [
    ({"utility": {"weight": 1.0}}, "utility.weight > 0 needs utility.terminals"),
    ({"embedding_kl": {"coef": 1.0}, "embedder": None}, "embedding_kl need a sentence embedder"),
    ({"constitution_weight": 0}, "nothing pays"),
    ({"embedding_kl": {"distance": "l2"}}, "embedding_kl.distance"),
])
def test_defense_config_errors_are_one_line(tmp_path, tiny_model_dir, examples_dir, fields, message):
    result = tune(tune_config(tmp_path, tiny_model_dir, examples_dir, **fields))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr

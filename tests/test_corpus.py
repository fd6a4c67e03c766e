"""Corpus extension on tiny models: sampling, filtering, resume, refusals, audit persistence, the loop."""

import json
import threading

import pytest
import yaml
from test_cli import tether

from tether.corpus.config import SampleConfig, SftConfig
from tether.corpus.sample import run_sample, tree_search
from tether.corpus.selection import decide, monitor_values
from tether.corpus.store import CorpusDir
from tether.errors import TetherError
from tether.infra.config import load_config
from tether.infra.generate import Branch, Generator


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def sample_config(tmp_path, model_dir, examples_dir, **fields):
    return SampleConfig.model_validate({
        "policy_model": str(model_dir), "judge_model": str(model_dir),
        "constitution": examples_dir / "cheerful.yaml", "prompts": examples_dir / "prompts.txt",
        "completions_per_prompt": 4, "max_completion_tokens": 6, "threshold": 0.0915,
        "monitors": {"words": 1}, "output_dir": tmp_path / "corpus", **fields,
    })


@pytest.fixture
def corpus(tmp_path, tiny_model_dir, examples_dir):
    config = sample_config(tmp_path, tiny_model_dir, examples_dir, gold_constitution=examples_dir / "on_topic.yaml")
    return run_sample(config), config


def test_sample_writes_candidates_corpus_and_summary(corpus):
    corpus, config = corpus
    candidates = lines(corpus.candidates_path)
    assert len(candidates) == 32 and len({c["id"] for c in candidates}) == 32
    first = candidates[0]
    assert {"prompt", "completion", "total", "scores", "gold_total", "gold_scores", "monitors", "status", "reason"} <= set(first)
    kept = [c for c in candidates if c["status"] == "kept"]
    assert 0 < len(kept) < 32  # the threshold splits the tiny judge's scores
    assert all(c["scores"]["cheerful"] >= 0.0915 for c in kept)
    assert all(c["reason"].startswith(("below threshold", "monitor")) for c in candidates if c["status"] == "rejected")
    assert [r["id"] for r in lines(corpus.corpus_path)] == [c["id"] for c in kept]
    summary = json.loads((corpus.path / "summary.json").read_text())
    assert summary["candidates"] == 32 and summary["acceptance_rate"] == round(len(kept) / 32, 4)
    assert summary["principles"]["cheerful"]["pass_rate"] == summary["acceptance_rate"]
    assert summary["principles"]["cheerful"]["kept"]["mean"] >= summary["principles"]["cheerful"]["all"]["mean"]
    assert (corpus.path / "scores.png").stat().st_size > 1000 and "| cheerful |" in (corpus.path / "summary.md").read_text()
    meta = json.loads((corpus.path / "meta.json").read_text())
    assert meta["principles"] == ["cheerful"] and len(meta["constitution_sha256"]) == 64
    assert yaml.safe_load((corpus.path / "config.yaml").read_text())["completions_per_prompt"] == 4


def test_a_crash_loses_no_written_sample_and_a_rerun_continues(corpus):
    corpus, config = corpus
    complete = corpus.candidates_path.read_text().splitlines(keepends=True)
    # The crash: three prompts written, the fourth cut mid-line, the fifth group half-written.
    torn = "".join(complete[:12]) + "".join(complete[16:18]) + complete[18][:40]
    corpus.candidates_path.write_text(torn)
    assert len(corpus.candidates()) == 14  # the torn line is skipped by readers
    run_sample(config)
    again = lines(corpus.candidates_path)
    assert len(again) == 32 and len({c["id"] for c in again}) == 32
    # Seeded per prompt: the rerun draws what the uninterrupted run drew.
    assert {c["id"]: c["completion"] for c in again} == {json.loads(line)["id"]: json.loads(line)["completion"] for line in complete}
    # A finished corpus: rerunning does nothing.
    before = corpus.candidates_path.read_text()
    run_sample(config)
    assert corpus.candidates_path.read_text() == before


def test_best_of_n_keeps_the_best_and_monitors_reject_with_a_reason():
    config = SampleConfig(constitution="c.yaml", prompts="p.txt", keep="best", keep_best=1)
    group = [{"completion": text, "total": total, "scores": {"cheerful": total}, "monitors": monitor_values(text)}
             for text, total in [("A calm walk by the sea.", 0.5), ("yes yes yes yes yes yes", 3.0),
                                 ("We laughed and sang all day long.", 1.0), ("Odd <start_of_image> token here.", 2.0)]]
    decide(group, config)
    assert [c["status"] for c in group] == ["rejected", "rejected", "kept", "rejected"]
    assert group[1]["reason"].startswith("monitor: affirmation_rate 1 > 0.1") and "longest_repeat_run 6 > 3" in group[1]["reason"]
    assert group[3]["reason"].startswith("monitor: special_token_rate")
    assert group[0]["reason"] == "rank 2 of 4 by total score; only the best 1 kept"


def test_tree_search_spends_the_budget_of_best_of_n(tiny_gemma, tiny_tokenizer):
    import numpy as np

    gen = Generator(tiny_gemma, tiny_tokenizer, temperature=1.0)
    judged = []

    def judge(texts):
        judged.extend(texts)
        return np.array([len(t) % 7 for t in texts], dtype=float)

    leaves = tree_search(gen, judge, "Once upon a time", n=6, max_tokens=9, chunk=3, width=2, temperature=0.5,
                         rng=np.random.default_rng(0))
    assert len(leaves) == 6 and gen.generated_tokens <= 6 * 9
    assert len(judged) == 18  # three rounds of six partial branches
    assert all(t.startswith("Once upon a time") for t in judged)
    suppressed = set(gen.suppress)
    assert tiny_tokenizer.convert_tokens_to_ids("<unused0>") in suppressed and tiny_tokenizer.eos_token_id not in suppressed
    children = gen.extend(gen.prompt_ids("Hi"), Branch([]), 3, 4)
    assert all(not (set(c.ids) & suppressed) for c in children)


def test_tree_search_corpus(tmp_path, tiny_model_dir, examples_dir):
    config = sample_config(tmp_path, tiny_model_dir, examples_dir, search="tree", tree_chunk_tokens=3, tree_width=2,
                           keep="best", prompts=examples_dir / "prompts.txt")
    corpus = run_sample(config)
    candidates = corpus.candidates()
    assert len(candidates) == 32 and {c["search"] for c in candidates} == {"tree"}
    assert len(corpus.corpus()) == 8  # the best of each prompt


def test_bad_input_is_one_clear_line(tmp_path, tiny_model_dir, examples_dir, corpus):
    corpus, config = corpus
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{"prompt": \n')
    for prompts, message in [(empty, "no texts found"), (broken, "line 2: malformed JSON")]:
        cfg = tmp_path / "s.yaml"
        cfg.write_text(yaml.safe_dump({"constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(prompts),
                                       "policy_model": str(tiny_model_dir), "output_dir": str(tmp_path / "c2")}))
        run = tether("sample", cfg, "-q")
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr

    # The same corpus directory, another constitution: refused, by its fingerprint.
    with pytest.raises(TetherError, match="built with a different constitution"):
        run_sample(config.model_copy(update={"constitution": examples_dir / "on_topic.yaml"}))
    with pytest.raises(TetherError, match=r"another config \(max_completion_tokens differ\)"):
        run_sample(config.model_copy(update={"max_completion_tokens": 7}))
    with pytest.raises(TetherError, match="no principle nice"):
        run_sample(config.model_copy(update={"principle_thresholds": {"nice": 1.0}}))
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("constitution: c.yaml\nprompts: p.txt\nkeep: most\n")
    with pytest.raises(TetherError, match="bad.yaml: line 3, column 7: keep: 'most': Input should be 'best' or 'threshold'"):
        load_config(SampleConfig, cfg)
    with pytest.raises(TetherError, match="epoch: unknown field"):
        load_config(SftConfig, None, ["epoch=2"])
    with pytest.raises(TetherError, match="not a corpus directory"):
        CorpusDir(tmp_path / "nowhere").require()


def test_decisions_last_wins_and_concurrent_writers_never_corrupt(corpus):
    corpus, _ = corpus
    ids = [c["id"] for c in corpus.candidates()]

    def writer(action):
        for sample_id in ids[:10]:
            corpus.decide(sample_id, action, text="edited" if action == "edit" else None, note=f"by {action}")

    threads = [threading.Thread(target=writer, args=(a,)) for a in ("reject", "edit")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decisions = lines(corpus.decisions_path)
    assert len(decisions) == 20
    last = corpus.decisions()
    rows = {r["id"]: r for r in lines(corpus.corpus_path)}
    for sample_id in ids[:10]:
        if last[sample_id]["action"] == "reject":
            assert sample_id not in rows
        else:
            assert rows[sample_id]["completion"] == "edited" and rows[sample_id]["source"] == "edited"
    corpus.decide(ids[0], "accept", note="fine after all")
    assert corpus.decisions()[ids[0]]["action"] == "accept" and ids[0] in {r["id"] for r in corpus.rebuild()}
    with pytest.raises(TetherError, match="an edit needs the edited text"):
        corpus.decide(ids[0], "edit", text="  ")
    with pytest.raises(TetherError, match="no sample 'p99-s0'"):
        corpus.decide("p99-s0", "accept")


def test_one_round_of_the_loop(tmp_path, corpus):
    """sample -> scripted audit -> sft -> sample again from the tuned adapter."""
    from tether.corpus.sft import run_sft

    corpus, config = corpus
    kept = [r["id"] for r in corpus.corpus()]
    corpus.decide(kept[0], "reject", note="dull")
    corpus.decide(kept[1], "edit", text=" and they all laughed.", note="cheerier")
    rows = {r["id"]: r for r in corpus.rebuild()}
    assert kept[0] not in rows and rows[kept[1]]["completion"] == " and they all laughed."

    sft = SftConfig(epochs=1, batch_size=4, lora_rank=4, lora_target_modules=["q_proj", "v_proj"],
                    eval_completions_per_prompt=2, output_dir=tmp_path / "sft")
    run, evaluation = run_sft(corpus.path, sft)
    assert (run.path / "final" / "adapter_config.json").exists() and (run.path / "finished.json").exists()
    assert lines(run.path / "metrics.jsonl")[0]["step"] == 1 and "loss" in lines(run.path / "metrics.jsonl")[0]
    saved = json.loads((run.path / "eval.json").read_text())
    assert saved["completions"] == 16 and set(saved["mean_scores"]) == {"cheerful", "total"}
    assert 0 <= evaluation["pass_rate"]["after"] <= 1
    with pytest.raises(TetherError, match="already holds a finished run"):
        run_sft(corpus.path, sft)

    second = run_sample(config.model_copy(update={"adapter": run.path / "final", "output_dir": tmp_path / "round2"}))
    assert len(second.candidates()) == 32
    assert yaml.safe_load((second.path / "config.yaml").read_text())["adapter"].endswith("final")

"""The gold reward refit on a person's answers as the run goes (tune/refit.py), on tiny models."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import ENV

from tether.labels.gold import fit_gold, save_gold
from tether.labels.items import Item, item_id
from tether.labels.store import LabelsFile


def person(run: Path, stop: threading.Event) -> None:
    """Answers each queued completion as it appears, as a person on the labeling page would: good if long."""
    seen = set()
    labels = LabelsFile(run / "labels.jsonl")
    while not stop.is_set():
        queue = run / "spotcheck.jsonl"
        for line in (queue.read_text().splitlines() if queue.exists() else []):
            r = json.loads(line)
            key = (r["step"], r["prompt"], r["completion"])
            if key in seen:
                continue
            seen.add(key)
            item = Item(item_id(queue, r["prompt"], r["completion"]), r["prompt"], r["completion"],
                        {"file": str(queue), "step": r["step"]})
            labels.add_label(item, "good", "yes" if len(r["completion"]) % 2 else "no", "ana")
        time.sleep(0.2)


def test_the_gold_reward_is_refit_on_a_persons_answers(tmp_path, tiny_model_dir, examples_dir, monkeypatch):
    start = LabelsFile(tmp_path / "start.jsonl")
    for i in range(12):  # 6 prompts, 6 yes and 6 no: enough for the grouped 5-fold fit
        prompt, completion = f"Story {i % 6} began.", ("a happy day with friends" if i % 2 else "sad rain") + f" {i}"
        item = Item(item_id(tmp_path / "start.jsonl", prompt, completion), prompt, completion, {"file": "start"})
        start.add_label(item, "good", "yes" if i % 2 else "no", "ana")
    save_gold(fit_gold(start.path, "good", "minilm"), tmp_path / "gold")
    lines = start.path.read_text().splitlines(keepends=True)  # the starting labels given as two files
    (tmp_path / "start_a.jsonl").write_text("".join(lines[:5]))
    (tmp_path / "start_b.jsonl").write_text("".join(lines[5:]))
    run = tmp_path / "run"
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
        "steps": 3, "completions_per_prompt": 4, "max_completion_tokens": 6, "save_every": 1, "lora_rank": 2,
        "lora_target_modules": ["q_proj"], "base_samples_per_prompt": 2, "output_dir": str(run),
        "spot_check": {"every": 1, "k": 4},
        "gold_reward": {"path": str(tmp_path / "gold"), "also": [str(tmp_path / "gold")], "weight": 1.0,
                        "refit_every": 1, "refit_labels": [str(tmp_path / "start_a.jsonl"),
                                                           str(tmp_path / "start_b.jsonl")], "refit_wait": 600},
    }))
    stop = threading.Event()
    answering = threading.Thread(target=person, args=(run, stop), daemon=True)
    answering.start()
    try:
        result = subprocess.run([sys.executable, "-m", "tether.cli", "tune", str(config), "-q"], capture_output=True,
                                text=True, env=ENV, timeout=1200)
    finally:
        stop.set()
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    refits = [e for e in events if e["event"] == "refit"]
    assert [(e["step"], e["round"]) for e in refits] == [(1, 1), (2, 2)]  # none after the last step: it would pay nothing
    assert [e["person_labels"] for e in refits] == [4, 8] and [e["labels"] for e in refits] == [16, 20]
    for n in (1, 2):
        gold = json.loads((run / "refit" / f"round-{n}" / "gold" / "gold.json").read_text())
        assert gold["n"] == 12 + 4 * n and gold["label"] == "good"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("defense/gold_reward/mean" in m for m in metrics)

    # resumed at a step, the run pays the gold refit last at or before it; `also` golds stay as they were
    from types import SimpleNamespace

    from tether.infra.rundir import RunDir
    from tether.labels.gold import GoldJudge
    from tether.rewards.gold import GoldReward
    from tether.tune.config import TuneConfig
    from tether.tune.refit import RefitCallback

    tune = TuneConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text()))
    prompts, texts = ["Story 1 began."] * 2, ["a happy day with friends", "sad rain"]
    paid = [e["round"] for e in refits if e["replaced"]]  # a refit pays only when it predicts its round better
    for e in refits:
        assert e["n"] == 4 and e["recent_weight"] == 3.0 and e["replaced"] == (e["loss_after"] < e["loss_before"])
        assert ("gold" in e) == e["replaced"] and ("kept" in e) != e["replaced"]
    for step, expected in ((0, None), (1, max([r for r in paid if r <= 1], default=None)),
                           (2, max([r for r in paid if r <= 2], default=None))):
        original, also = object(), object()
        reward = GoldReward([original, also])
        callback = RefitCallback(reward, tune, RunDir(run))
        callback.on_train_begin(None, SimpleNamespace(global_step=step), None)
        assert reward.golds[1] is also
        if expected is None:
            assert reward.golds[0] is original
        else:
            want = GoldJudge.load(run / "refit" / f"round-{expected}" / "gold").score(prompts, texts)
            assert np.allclose(reward.golds[0].score(prompts, texts), want) and callback.done_step == expected

    # another process under torchrun / accelerate: it neither waits, fits nor writes; it loads what the main wrote
    import tether.labels.gold as gold_module
    from tether.infra import ranks

    monkeypatch.setattr(ranks, "is_main", lambda: False)
    monkeypatch.setattr(ranks, "broadcast", lambda obj: str(Path("refit") / "round-2" / "gold"))
    monkeypatch.setattr(gold_module, "fit_gold", lambda *a, **k: pytest.fail("a process other than the main fitted"))
    written = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    reward = GoldReward([object(), object()])
    RefitCallback(reward, tune, RunDir(run)).on_log(None, SimpleNamespace(global_step=1, max_steps=3), None)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == written
    want = GoldJudge.load(run / "refit" / "round-2" / "gold").score(prompts, texts)
    assert np.allclose(reward.golds[0].score(prompts, texts), want)


def test_refit_needs_its_spot_check(tmp_path, tiny_model_dir, examples_dir, capsys):
    from test_cli import one_line_error

    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
        "gold_reward": {"path": str(examples_dir / "fluent.yaml"), "weight": 1.0, "refit_every": 3}}))
    one_line_error(capsys, ["tune", str(config)], "needs the spot check")


def test_a_refit_is_judged_on_its_rounds_answers_and_weighs_the_runs_labels(tmp_path):
    from types import SimpleNamespace

    from tether.infra.rundir import RunDir
    from tether.tune.refit import RefitCallback

    callback = RefitCallback.__new__(RefitCallback)
    callback.run = RunDir(tmp_path)
    queue = str(tmp_path / "spotcheck.jsonl")
    sources = [{"file": queue, "step": 5, "prompt": "p", "completion": c} for c in ("a", "b")]
    sources += [{"file": queue, "step": 4, "prompt": "p", "completion": "c"}, {"file": "start", "prompt": "p", "completion": "d"}]
    callback.reward = SimpleNamespace(golds=[SimpleNamespace(score=lambda prompts, texts: np.array([4.0, -4.0]))])
    held = callback._held_out([0.1, 0.2, 9.0, 9.0], sources, [True, False, True, True], step=5)
    assert held["n"] == 2 and held["auc_before"] == 1.0 and held["auc_after"] == 0.0  # only step 5's answers
    assert held["loss_before"] < held["loss_after"]  # the paid gold predicts them better: the refit is not paid

    start = LabelsFile(tmp_path / "l.jsonl")
    for i in range(16):
        prompt, completion = f"Story {i % 8} began.", ("a happy day with friends" if i % 2 else "sad cold rain") + f" {i}"
        item = Item(item_id(tmp_path / "l.jsonl", prompt, completion), prompt, completion, {"file": queue if i < 4 else "s"})
        start.add_label(item, "good", "yes" if (i % 2) != (i < 4) else "no", "ana")  # the run's 4 answers disagree
    plain = fit_gold(start.path, "good", "minilm", folds=3)
    weighed = fit_gold(start.path, "good", "minilm", folds=3, weight=lambda s: 8.0 if s["file"] == queue else 1.0,
                       keep_oof=True)
    assert weighed["coef"] != plain["coef"] and len(weighed["oof"]) == len(weighed["oof_labels"]) == 16

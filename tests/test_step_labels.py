"""Process supervision from a reader's step labels: `tether label --steps` shows a sample one step at a time, later
steps hidden; `tether gold fit` fits a step gold on those labels; `process.judge` makes it the step judge of a run."""

import json

import numpy as np
import pytest
import yaml
from test_cli import one_line_error
from test_labels import served  # noqa: F401  (the page server fixture)
from test_tune import lines, tune

from tether.labels.items import read_items, step_items
from tether.labels.server import Choice, Session
from tether.labels.spec import load_spec

CHEER = ["She laughed with her friends.", "The sun came out and everyone sang.", "They shared cake in the garden."]
GLOOM = ["The rain fell on the empty street.", "Nobody answered the door.", "He sat alone in the cold."]


@pytest.fixture
def pool(tmp_path):
    rows = []
    for p in range(6):
        for k in range(2):
            first, second = (CHEER, GLOOM) if (p + k) % 2 else (GLOOM, CHEER)
            rows.append({"prompt": f"Story {p} began.", "completion": f" {first[p % 3]} {second[(p + 1) % 3]} {first[(p + 2) % 3]}"})
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("questions:\n  - {name: good, question: 'Is the marked step cheerful?'}\n")
    return load_spec(path)


def test_a_sample_is_shown_step_by_step_in_order_and_never_beyond_the_newest_step(pool, spec, tmp_path):
    session = Session([str(pool)], tmp_path / "labels.jsonl", spec, who="ana", choose=Choice(steps="sentences"))
    shown = session.state()["items"]
    assert len(shown) == 12 * 3  # three sentences a sample
    samples = {i.completion: i for i in read_items(pool)}
    for start in range(0, len(shown), 3):  # a sample's steps come together, 1, 2, 3
        group = shown[start:start + 3]
        assert [s["newest"]["k"] for s in group] == [1, 2, 3]
        full = group[-1]["completion"]
        assert full in samples and all(full.startswith(s["completion"]) for s in group)
        for s in group:  # the page holds the prompt and steps 1..k: the text ends where the newest step ends
            assert len(s["completion"]) == s["newest"]["end"] and s["completion"][s["newest"]["start"]:].strip() in CHEER + GLOOM
            assert set(s) == {"id", "prompt", "completion", "newest", "answers"}  # no source, no score
    first = shown[0]
    session.answer({"item": first["id"], "question": "good", "answer": "yes"})
    record = json.loads((tmp_path / "labels.jsonl").read_text().splitlines()[0])
    assert record["source"]["steps"]["k"] == 1 and record["source"]["steps"]["split"] == "sentences"
    assert record["source"]["completion"] == first["completion"]  # what the reader saw, what a gold fits on

    # blind by construction: rewriting a sample's later steps leaves its earlier step items as they were
    rows = [json.loads(line) for line in pool.read_text().splitlines()]
    rows[0]["completion"] = rows[0]["completion"].rsplit(".", 2)[0] + ". Then everything burned."
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = {(i.source["steps"]["k"], i.completion): i.id for i in step_items(read_items(pool)) if i.prompt == rows[0]["prompt"]}
    after = {(i.source["steps"]["k"], i.completion): i.id for i in step_items(read_items(changed)) if i.prompt == rows[0]["prompt"]}
    assert any(k == 1 for k, _ in set(before) & set(after)) and any(k == 3 for k, _ in set(before) - set(after))


def test_bad_step_options_are_one_line_and_write_nothing(pool, tmp_path, capsys):
    out = tmp_path / "labels.jsonl"
    spec = tmp_path / "spec.yaml"
    spec.write_text("questions:\n  - {name: good, question: 'Good?'}\n")
    base = ["label", str(pool), "--spec", str(spec), "--out", str(out)]
    for args, expected in [(["--steps", "re:("], "not a regular expression"),
                           (["--steps", "words"], "write sentences, lines"),
                           (["--max-steps", "3"], "--max-steps caps --steps"),
                           (["--steps", "python:nowhere_module:split"], "nowhere_module"),
                           (["--steps", "lines", "--mode", "compare", str(pool)], "does not apply to --mode compare")]:
        one_line_error(capsys, base + args, expected)
    assert not out.exists()
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"prompt": "P", "completion": "   "}) + "\n")
    one_line_error(capsys, ["label", str(blank), "--spec", str(spec), "--out", str(out), "--steps", "sentences"],
                   "no sample has a step")
    assert not out.exists()


def test_a_step_gold_fitted_on_step_labels_is_the_runs_step_judge(pool, spec, tmp_path, tiny_model_dir, examples_dir):
    from tether.infra.steps import split_steps
    from tether.labels.gold import GoldJudge, fit_gold, save_gold

    labels = tmp_path / "labels.jsonl"
    session = Session([str(pool)], labels, spec, who="ana", choose=Choice(steps="sentences"))
    for item in session.state()["items"]:  # the reader: is the newest step cheerful?
        newest = item["completion"][item["newest"]["start"]:].strip()
        session.answer({"item": item["id"], "question": "good", "answer": "yes" if newest in CHEER else "no"})
    meta = fit_gold(labels, "good", "minilm", folds=3)
    assert meta["n"] == 36 and meta["cv"]["auc"] > 0.8  # a step's cheer is learnable from its prefix
    save_gold(meta, tmp_path / "step_gold")

    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"), "steps": 1,
        "prompts_per_step": 1, "completions_per_prompt": 4, "max_completion_tokens": 6, "save_every": 1,
        "output_dir": str(tmp_path / "run"), "lora_rank": 4, "lora_target_modules": ["q_proj"], "embedder": None,
        "reward_mode": "process", "process": {"split": "re:\\S+\\s*", "max_steps": 3,
                                              "judge": str(tmp_path / "step_gold")},
    }))
    result = tune(config, "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = lines(tmp_path / "run" / "metrics.jsonl")
    samples = lines(tmp_path / "run" / "samples.jsonl")
    gold = GoldJudge.load(tmp_path / "step_gold")
    means = []
    for s in samples:  # the step gold's score of each prefix, as the run paid it
        steps = split_steps(s["completion"], "re:\\S+\\s*", 3)
        scores = gold.score([s["prompt"]] * len(steps), [s["completion"][: st.end] for st in steps]) if steps else [0.0]
        means.append(float(np.mean(scores)))
    assert metrics[0]["rewards/process/mean"] == pytest.approx(float(np.mean(means)), abs=1e-3)


def test_the_page_marks_the_newest_step_in_headless_chromium(tmp_path, spec, served):  # noqa: F811
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); the browser test needs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    pool = tmp_path / "emoji.jsonl"  # a character outside the BMP before the step: offsets count code points
    pool.write_text(json.dumps({"prompt": "It was her birthday.", "completion": " We ate cake 🎂 together. Then we sang <b>loudly</b>."}) + "\n")
    out = tmp_path / "labels.jsonl"
    session = Session([str(pool)], out, spec, who="ana", choose=Choice(steps="sentences"))
    url = served(session)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#completion").text_content() == " We ate cake 🎂 together. "
        assert page.locator("#completion mark").text_content() == "We ate cake 🎂 together. "
        assert page.locator("#step-note").is_visible() and "Step 1" in page.locator("#step-note").text_content()
        page.keyboard.press("y")  # answered: the second step, the first now context
        page.wait_for_selector(f"#item[data-id='{session.items[1].id}']")
        assert page.locator("#completion").text_content() == " We ate cake 🎂 together. Then we sang <b>loudly</b>."
        assert page.locator("#completion mark").text_content() == "Then we sang <b>loudly</b>."  # text, never markup
        assert page.locator("#completion b").count() == 0
        browser.close()
    assert [json.loads(line)["source"]["steps"]["k"] for line in out.read_text().splitlines()] == [1]

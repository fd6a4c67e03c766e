"""Detectors on what changed (shift, cusum, gold_drop, person), the spot-check queue, and `tether detect`."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from test_cli import ENV
from transformers import TrainerControl, TrainerState

from tether.infra.rundir import RunDir
from tether.labels.items import read_items
from tether.labels.store import LabelsFile
from tether.watch import spotcheck
from tether.watch.callbacks import DetectorCallback
from tether.watch.changepoint import cusum
from tether.watch.detectors import DetectorConfig, check
from tether.watch.shift import ShiftTest, level, mmd_test, permutations_for

DIM = 16


def cloud(rng, centre, n, spread=0.3):
    """n unit vectors scattered around `centre`: a prompt's completions in embedding space."""
    v = centre + spread * rng.normal(size=(n, DIM))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def centres(rng, k):
    c = rng.normal(size=(k, DIM))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


# --- the two-sample test ----------------------------------------------------------------


def test_mmd_false_alarms_stay_at_alpha_on_draws_from_the_base_itself():
    rng = np.random.default_rng(0)
    prompts = centres(rng, 3)
    groups = np.repeat(np.arange(3), 8)
    alpha, trials = 0.1, 200
    p = [mmd_test(np.concatenate([cloud(rng, c, 8) for c in prompts]),
                  np.concatenate([cloud(rng, c, 8) for c in prompts]), 500, seed, (groups, groups))[1]
         for seed in range(trials)]
    # at most alpha, with a 3-sd binomial margin: 20 expected, 32.7 allowed
    assert np.sum(np.array(p) <= alpha) <= alpha * trials + 3 * np.sqrt(trials * alpha * (1 - alpha))
    assert np.sum(np.array(p) <= 0.5) >= 60  # and it is a real p-value, not a test that never rejects


def test_mmd_catches_a_shift_at_the_per_step_level():
    rng = np.random.default_rng(1)
    prompts, elsewhere = centres(rng, 3), centres(rng, 1)[0]
    groups = np.repeat(np.arange(3), 8)
    need = level(0.01, 30)
    caught = 0
    for seed in range(10):  # every completion off task: a new kind of text
        base = np.concatenate([cloud(rng, c, 8) for c in prompts])
        step = np.concatenate([cloud(rng, elsewhere, 8) for _ in prompts])
        caught += mmd_test(base, step, permutations_for(0.01, 30), seed, (groups, groups))[1] <= need
    assert caught >= 9


def test_shift_test_pools_a_window_of_steps_against_the_same_prompts_base():
    rng = np.random.default_rng(2)
    prompts = centres(rng, 4)
    base = {f"p{i}": cloud(rng, c, 8) for i, c in enumerate(prompts)}
    test = ShiftTest(base, window=3, alpha=0.01)
    for step in range(1, 4):  # one prompt a step, on the base distribution
        out = test.update(step, [f"p{step}"] * 8 + ["unknown"] * 2, np.r_[cloud(rng, prompts[step], 8), cloud(rng, prompts[0], 2)], 30)
    assert out["shift/p_value"] > level(0.01, 30) and out["shift/mmd2"] >= 0
    assert test.update(4, ["unknown"], cloud(rng, prompts[0], 1), 30)  # the window still holds steps 2-3
    off = cloud(rng, -prompts[1], 8)
    for step in (5, 6, 7):
        out = test.update(step, ["p1"] * 8, off, 30)
    assert out["shift/p_value"] <= level(0.01, 30)


# --- change points ---------------------------------------------------------------------------


def test_cusum_fires_on_a_step_change_within_a_few_steps():
    rng = np.random.default_rng(3)
    fired = []
    for _ in range(20):
        x = rng.normal(size=30)
        x[10:] += 5  # a 5-sd jump at index 10
        fired.append(cusum(x))
    assert all(f is not None and 10 <= f <= 15 for f in fired), fired  # within 5 steps, never before the jump
    assert np.median(fired) <= 12  # typically within 2


def test_cusum_stays_quiet_on_200_steps_of_noise():
    rng = np.random.default_rng(4)
    alarms = sum(cusum(rng.normal(size=200)) is not None for _ in range(50))
    assert alarms <= 5  # 4-5% by simulation (benchmarks/detector_simulation.py): 2-3 of 50 expected


def healthy(n, **extra):
    rng = np.random.default_rng(5)
    return [{"step": s, "reward/train": 0.1 + 0.02 * rng.normal(), "kl": 0.0 if s == 1 else 0.05 + 0.01 * rng.normal(),
             "monitor/distinct_2": 0.95, **{k: v(s) for k, v in extra.items()}} for s in range(1, n + 1)]


def replayed(history, config, **kw):
    first = {}
    for i in range(len(history)):
        for t in check(history[: i + 1], config, **kw):
            first.setdefault(t.detector, t.step)
    return first


def test_check_names_the_series_that_jumped_and_a_flat_kl_start_is_no_alarm():
    config = DetectorConfig()
    quiet = replayed(healthy(30), config, steps=30)
    assert quiet == {}
    jumped = healthy(30)
    for m in jumped[11:]:
        m["kl"] += 0.3  # under the kl threshold (0.5), a sudden change all the same
    assert replayed(jumped, config, steps=30) == {"cusum:kl": 13}
    assert replayed(jumped, DetectorConfig(cusum_series=[]), steps=30) == {}  # switched off


def test_gold_drop_fires_when_gold_falls_while_train_is_flat():
    config = DetectorConfig(cusum_series=[])
    falling = healthy(12, **{"gold/score": lambda s: 0.4 if s <= 5 else -0.3})
    assert replayed(falling, config) == {"gold_drop": 8}  # when the last 3 steps' mean is 0.7 below the first 3's
    steady = healthy(12, **{"gold/score": lambda s: 0.4 - 0.02 * s})
    assert replayed(steady, config) == {}


def test_shift_detector_uses_the_planned_steps_bonferroni_level():
    history = [{"step": 1, "reward/train": 0.0, "shift/p_value": 0.0005}]
    config = DetectorConfig(cusum_series=[])
    assert [t.detector for t in check(history, config, steps=10)] == ["shift"]  # 0.0005 <= 0.01/10
    assert check(history, config, steps=100) == []  # 0.0005 > 0.01/100


# --- the spot check and the person's word ------------------------------------------------------


def answer(run_path, no: int, torn: bool = False):
    """A person answers the queue: `no` items off task, the rest on task (and `good` yes throughout)."""
    labels = LabelsFile(run_path / "labels.jsonl")
    for i, item in enumerate(read_items(run_path / spotcheck.QUEUE)):
        labels.add_label(item, "on_task", "no" if i < no else "yes", "ana")
        labels.add_label(item, "good", "yes", "ana")
    if torn:  # a page mid-append
        with open(run_path / "labels.jsonl", "a") as f:
            f.write('{"kind": "label", "item": "x", "ques')


def test_monitor_queues_k_completions_every_n_steps(tiny_gemma, tiny_tokenizer, examples_dir, tmp_path, capsys):
    from tether.judge.evaluator import Evaluator
    from tether.rewards.constitution import ConstitutionReward
    from tether.watch.callbacks import MonitorCallback

    reward = ConstitutionReward(Evaluator(tiny_gemma, examples_dir / "cheerful.yaml", tokenizer=tiny_tokenizer))
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    callback = MonitorCallback(reward, run_dir=run, spot_check=spotcheck.SpotCheckConfig(every=2, k=3), seed=7)
    for step in range(1, 6):
        reward(["Once upon a time"] * 5, [f"step {step} completion {i}" for i in range(5)])
        callback._measure(step, {}, callback._whole_batch(reward.last_result))
    rows = [json.loads(x) for x in (run.path / spotcheck.QUEUE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 2, 2, 4, 4, 4]
    assert all(r["completion"].startswith(f"step {r['step']} ") for r in rows)  # that step's own completions
    assert len({r["completion"] for r in rows}) == 6
    assert spotcheck.pick([("p", str(i)) for i in range(5)], 3, 7, 2) == spotcheck.pick([("p", str(i)) for i in range(5)], 3, 7, 2)
    # the page reads the queue, and the rewind drops the queue's later steps as it drops the other logs
    assert len(read_items(run.path / spotcheck.QUEUE)) == 6
    run.rewind_to(3)
    assert [json.loads(x)["step"] for x in (run.path / spotcheck.QUEUE).read_text().splitlines()] == [2, 2, 2]


def test_a_persons_no_answers_stop_the_run(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    spotcheck.queue(run.path, 2, [("Once upon a time", "Buy now! 50% off"), ("Once upon a time", "She smiled.")])
    spotcheck.queue(run.path, 4, [("Once upon a time", "Follow me for more"), ("Once upon a time", "They ran home.")])
    config = spotcheck.SpotCheckConfig(every=2, k=2, min_no=2)
    detector = DetectorCallback(SimpleNamespace(last_completions=["a"]), DetectorConfig(cusum_series=[]), action="stop",
                                run_dir=run, spot_check=config)

    def step(n):
        state, control = TrainerState(), TrainerControl()
        state.log_history, state.max_steps = [{"step": s, "reward/train": 0.0} for s in range(1, n + 1)], 10
        detector.on_log(None, state, control)
        return control.should_training_stop

    assert not step(4)  # nobody has answered yet
    answer(run.path, no=1, torn=True)
    assert not step(5)  # one "no" is not enough
    labels = LabelsFile(run.path / "labels.jsonl")
    item = next(i for i in read_items(run.path / spotcheck.QUEUE) if i.completion == "Follow me for more")
    labels.add_label(item, "on_task", "no", "ana")  # cuts the torn line, adds the second "no"
    assert step(6)
    assert detector.tripped == {"person": 6}
    events = [json.loads(x) for x in (run.path / "events.jsonl").read_text().splitlines()]
    assert events[-1]["detectors"][0]["detector"] == "person" and events[-1]["action"] == "stop"
    assert spotcheck.person_noes(run.path, ["on_task"]) == [2, 4]
    assert spotcheck.person_noes(run.path, ["good"]) == []  # only the configured questions count


# --- tether detect -----------------------------------------------------------------------------


def scripted_run(path, examples_dir, steps=12, jump=8, torn=False):
    """A run directory written by hand: KL jumps past its threshold at `jump`."""
    path.mkdir()
    config = {"constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
              "embedder": None, "steps": 30, "output_dir": str(path)}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(6)
    metrics = [{"step": s, "reward/train": 0.1 + 0.02 * rng.normal(), "kl": (0.9 if s >= jump else 0.04 + 0.01 * rng.normal()),
                "monitor/distinct_2": 0.95, "shift/p_value": 0.5} for s in range(1, steps + 1)]
    text = "".join(json.dumps(m) + "\n" for m in metrics)
    (path / "metrics.jsonl").write_text(text + ('{"step": 13, "rew' if torn else ""))
    (path / "samples.jsonl").write_text("".join(json.dumps({"step": s, "prompt": "p", "completion": "c"}) + "\n"
                                                for s in range(1, steps + 1)))
    (path / "base_samples.jsonl").write_text(json.dumps({"prompt": "p", "completions": ["a", "b"]}) + "\n")


def detect(*args):
    return subprocess.run([sys.executable, "-m", "tether.cli", "detect", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=120, check=False)


def test_tether_detect_replays_a_scripted_run(tmp_path, examples_dir):
    scripted_run(tmp_path / "run", examples_dir)
    out = detect(tmp_path / "run", "--json")
    assert out.returncode == 0, out.stderr
    # kl crosses its threshold at once; the CUSUM needs one more step (one value counts at most ~5 sd)
    assert out.stdout.strip() == json.dumps({"trips": {"kl": 8, "cusum:kl": 9}})  # exactly the documented shape
    table = detect(tmp_path / "run")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines()[1:]}
    assert rows["kl"][:1] == ["8"] and rows["drift"] == ["-", "-", "-"] and rows["person"] == ["-", "-", "-"]
    moved = detect(tmp_path / "run", "--json", "--set", "detectors.kl=2", "--set", "detectors.cusum_series=[]")
    assert json.loads(moved.stdout) == {"trips": {}}


def test_tether_detect_on_an_unfinished_run_and_bad_input(tmp_path, examples_dir):
    scripted_run(tmp_path / "run", examples_dir, steps=9, torn=True)  # no finished.json, a torn last line
    out = detect(tmp_path / "run", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["trips"]["kl"] == 8
    bad = detect(tmp_path / "run", "--set", "detectors.shift_alpha=2")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "shift_alpha" in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    gone = detect(empty)
    assert gone.returncode == 2 and "no config.yaml" in gone.stderr and "Traceback" not in gone.stderr


def test_detect_recomputes_shift_from_samples_when_the_log_lacks_it(tmp_path, examples_dir):
    """A run logged before the shift test: its samples and base samples, embedded with the run's embedder."""
    from tether.tune.config import run_settings as load_settings
    from tether.watch.replay import fill_shift, first_trips, history_of

    run = tmp_path / "run"
    scripted_run(run, examples_dir, steps=6, jump=99)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "embedder": "embedded:all-minilm-l6-v2", "steps": 6}))
    stories = ["The girl laughed and ran down to the harbour.", "Her grandmother waved from the boat, smiling.",
               "They ate bread by the water as the sun went down.", "A gull stole her sandwich and she giggled.",
               "The fishermen sang as they pulled in the nets.", "She fell asleep to the sound of the waves."]
    ads = ["Buy now! 50% off all shoes this weekend only.", "Follow us for daily deals and giveaways!",
           "Limited offer: free shipping on orders over $20.", "Click the link in bio to shop the sale.",
           "Subscribe to our newsletter for exclusive coupons.", "New arrivals just dropped, shop today!"]
    (run / "base_samples.jsonl").write_text(json.dumps({"prompt": "p", "completions": stories}) + "\n")
    (run / "samples.jsonl").write_text("".join(json.dumps({"step": s, "prompt": "p", "completion": c}) + "\n"
                                               for s in range(1, 7) for c in (stories if s <= 3 else ads)))
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in m.items() if k != "shift/p_value"}) + "\n"
                                               for m in metrics))
    settings = load_settings(run, None, ["detectors.cusum_series=[]"])
    history = history_of(run)
    assert fill_shift(run, history, settings) == 6
    assert history[2]["shift/p_value"] > 0.5  # the base's own texts: no shift
    assert 4 <= first_trips(history, settings)["shift"].step <= 6  # ads from step 4; the 3-step window: <= 2 steps late


def test_a_spot_check_can_show_what_the_gold_is_least_sure_of_or_where_the_judges_disagree(tmp_path, examples_dir):
    from tether.errors import TetherError
    from tether.infra.config import load_config
    from tether.tune.config import TuneConfig

    rows = [{"prompt": "Once", "completion": f"text {i}", "train": t, "gold": g}
            for i, (t, g) in enumerate([(3.0, 2.9), (0.1, 0.05), (-4.0, 4.0), (2.0, -0.3), (-1.0, -1.2), (0.0, 3.5)])]
    uncertain = spotcheck.choose(rows, spotcheck.SpotCheckConfig(every=1, k=2, by="uncertain"), seed=0, step=1)
    assert [c for _, c in uncertain] == ["text 1", "text 3"]  # gold log-odds 0.05 and -0.3: P(yes) nearest 1/2
    disagree = spotcheck.choose(rows, spotcheck.SpotCheckConfig(every=1, k=2, by="disagree"), seed=0, step=1)
    assert [c for _, c in disagree] == ["text 2", "text 5"]  # the judge says no, the gold yes
    randomly = spotcheck.choose(rows, spotcheck.SpotCheckConfig(every=1, k=2), seed=0, step=1)
    assert randomly == spotcheck.pick([(r["prompt"], r["completion"]) for r in rows], 2, 0, 1)  # random: as before
    config = tmp_path / "tune.yaml"
    config.write_text(f"constitution: {examples_dir / 'cheerful.yaml'}\nprompts: {examples_dir / 'prompts.txt'}\n"
                      "spot_check: {every: 2, by: uncertain}\n")
    with pytest.raises(TetherError, match="spot_check.by uncertain ranks by the gold judge: set gold_constitution"):
        load_config(TuneConfig, config)

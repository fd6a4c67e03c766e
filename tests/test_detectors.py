"""Detectors over scripted metric histories: each fires on its failure and not on health."""

from tether.watch.detectors import DetectorConfig, check

HEALTHY = {
    "monitor/affirmation_rate": 0.0,
    "monitor/special_token_rate": 0.0,
    "monitor/repetition": 0.02,
    "monitor/longest_repeat_run": 2,
    "monitor/distinct_2": 0.9,
    "kl": 0.01,
}


def history(n, **changes_at_last):
    steps = [{"step": i + 1, **HEALTHY, "reward/train": 0.1, "gold/score": 0.0} for i in range(n)]
    steps[-1].update(changes_at_last)
    return steps


def names(trips):
    return {t.detector for t in trips}


def test_healthy_run_trips_nothing():
    assert check(history(10), DetectorConfig()) == []


def test_each_threshold_fires_on_its_failure():
    config = DetectorConfig()
    assert names(check(history(3, **{"monitor/affirmation_rate": 0.2}), config)) == {"affirmation_rate"}
    assert names(check(history(3, **{"monitor/special_token_rate": 0.5}), config)) == {"special_token_rate"}
    assert names(check(history(3, **{"monitor/repetition": 0.6}), config)) == {"repetition"}
    assert names(check(history(3, **{"monitor/longest_repeat_run": 6}), config)) == {"longest_repeat_run"}
    assert names(check(history(3, **{"monitor/distinct_2": 0.3}), config)) == {"distinct_2_drop"}  # 0.3 < 0.5 * 0.9
    assert names(check(history(3, kl=0.9), config)) == {"kl"}


def test_divergence_needs_train_up_and_gold_down_over_the_window():
    config = DetectorConfig(divergence_window=4, divergence_min_rise=0.2, divergence_min_fall=0.1)
    steps = history(6)
    for i, m in enumerate(steps):
        m["reward/train"], m["gold/score"] = 0.1 * i, -0.05 * i  # train +0.3 over 4 steps, gold falling
    trips = check(steps, config)
    assert names(trips) == {"divergence"} and trips[0].step == 6
    for i, m in enumerate(steps):
        m["gold/score"] = 0.05 * i  # both rising: real progress, no trip
    assert check(steps, config) == []
    for i, m in enumerate(steps):
        m["gold/score"] = -0.01 * i  # gold drifting down by less than the minimum fall: noise
    assert check(steps, config) == []
    assert check(steps[:3], config) == []  # not enough steps for the window


def test_drift_fires_on_a_sustained_move_away_from_the_base_not_on_one_noisy_step():
    config = DetectorConfig(drift=0.72, drift_window=5)
    steps = history(8)
    for m in steps:
        m["drift/embedding"] = 0.6
    steps[-1]["drift/embedding"] = 0.95  # one far batch: the mean of the last 5 is 0.67
    assert check(steps, config) == []
    for m in steps[-4:]:
        m["drift/embedding"] = 0.85  # four far batches: mean 0.80
    trips = check(steps, config)
    assert names(trips) == {"drift"} and abs(trips[0].value - 0.80) < 1e-9
    assert check(steps[:4], config) == []  # fewer steps than the window

"""`tether serve` under injected faults: every served text is logged exactly once, every client answered rightly.

A real in-process server (test_serve's `Server`) and the tiny judge; one fault injected at a
time, before the samples are appended (the judge), in the append (the samples' write) and
after it (the window's metrics line, the detectors), while concurrent clients post.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
from test_serve import CHEERFUL, PROMPTS, Server, post

from tether.infra import jsonl
from tether.judge.evaluator import Evaluator
from tether.serve.runlog import ServeRun

N = 8  # clients, one text each: two windows of 4


@pytest.fixture(scope="module")
def judge(tiny_gemma, tiny_tokenizer):
    return Evaluator(tiny_gemma, CHEERFUL, tokenizer=tiny_tokenizer, batch_size=4)


@pytest.fixture(scope="module")
def direct(tiny_gemma, tiny_tokenizer):
    return Evaluator(tiny_gemma, CHEERFUL, tokenizer=tiny_tokenizer, batch_size=1)


def queries(n: int = N, tag: str = "") -> list[tuple[str, str]]:
    """(prompt, completion) pairs whose completions are all different."""
    return [(PROMPTS[i % 3], f" story {tag}{i}: we laughed all day at the fair.") for i in range(n)]


def fail_once(monkeypatch, owner, name: str, *, after_real: bool = False, when=lambda *a, **k: True) -> list:
    """Make `owner.name` raise once, on its first call that `when` accepts (after the real call when `after_real`)."""
    real, fired = getattr(owner, name), []

    def faulty(*args, **kwargs):
        if fired or not when(*args, **kwargs):
            return real(*args, **kwargs)
        fired.append(True)
        if after_real:
            real(*args, **kwargs)
        raise OSError(f"injected fault in {name}")

    monkeypatch.setattr(owner, name, faulty)
    return fired


def post_together(url: str, pairs: list[tuple[str, str]]) -> list[tuple[int, dict]]:
    """Every pair posted at once, one request each, from its own client thread."""
    barrier, answers = threading.Barrier(len(pairs)), [None] * len(pairs)

    def client(i):
        barrier.wait()
        prompt, completion = pairs[i]
        answers[i] = post(url + "/get_reward", {"query": [prompt + completion], "prompts": [prompt]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(pairs))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return answers


def check_log(run_dir, pairs, answers, direct) -> list[dict]:
    """Each served text logged exactly once, numbered in order, with the score its client got."""
    rows = jsonl.read(run_dir / "samples.jsonl")
    counts = Counter(r["completion"] for r in rows)
    assert all(n == 1 for n in counts.values()), f"logged twice: {[c for c, n in counts.items() if n > 1]}"
    assert [r["sample"] for r in rows] == list(range(len(rows)))
    assert all(r["step"] == r["sample"] // 4 + 1 for r in rows)
    logged = {r["completion"]: r["train"] for r in rows}
    want = direct.score([p + c for p, c in pairs]).total()
    for (_, completion), (status, answer), score in zip(pairs, answers, want):
        if status == 200:
            assert answer["rewards"] == [logged[completion]]  # acknowledged = logged, with what was answered
            np.testing.assert_allclose(answer["rewards"], [score], atol=1e-4)  # and it is this text's score
    return rows


@pytest.mark.parametrize("fault", ["_close_window", "_detect"])
def test_a_fault_after_the_append_logs_each_text_once_and_answers_every_client(fault, judge, direct, tmp_path,
                                                                               monkeypatch):
    fired = fail_once(monkeypatch, ServeRun, fault)  # the step right after the append, or the one after the line
    pairs = queries()
    with Server(judge, tmp_path / "run", window=4, max_wait_ms=300) as s:
        answers = post_together(s.url, pairs)
    assert fired, "the fault never fired"
    assert all(status == 200 for status, _ in answers), answers
    rows = check_log(tmp_path / "run", pairs, answers, direct)
    assert sorted(r["completion"] for r in rows) == sorted(c for _, c in pairs)
    steps = [m["step"] for m in jsonl.read(tmp_path / "run" / "metrics.jsonl")]
    assert steps == [1, 2]  # the window the fault held back was closed later, and none twice
    events = jsonl.read(tmp_path / "run" / "events.jsonl")
    assert any(e["event"] == "error" and fault in e["error"] for e in events)


def test_a_judge_fault_before_the_append_retries_each_job_and_logs_it_once(judge, direct, tmp_path, monkeypatch):
    fired = fail_once(monkeypatch, judge, "score", when=lambda texts: len(texts) > 1)  # a batch of several jobs
    pairs = queries()
    with Server(judge, tmp_path / "run", window=4, max_wait_ms=300) as s:
        answers = post_together(s.url, pairs)
    assert fired, "no batch of several jobs reached the judge"
    assert all(status == 200 for status, _ in answers), answers  # each job of the failed batch, judged alone
    rows = check_log(tmp_path / "run", pairs, answers, direct)
    assert sorted(r["completion"] for r in rows) == sorted(c for _, c in pairs)
    assert [m["step"] for m in jsonl.read(tmp_path / "run" / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize("landed", [False, True], ids=["nothing-written", "written-then-fsync-failed"])
def test_a_failed_append_is_a_clear_error_and_nothing_is_logged_twice(landed, judge, direct, tmp_path, monkeypatch):
    fired = fail_once(monkeypatch, jsonl, "append", after_real=landed,
                      when=lambda path, records: str(path).endswith("samples.jsonl"))
    pairs, later = queries(), queries(5, tag="later ")
    with Server(judge, tmp_path / "run", window=4, max_wait_ms=300) as s:
        answers = post_together(s.url, pairs)
        answers += post_together(s.url, later)  # the service goes on, its numbering too
    assert fired
    failed = [a for status, a in answers if status != 200]
    assert failed and all(status in (200, 500) for status, _ in answers)
    assert all("the run log could not be written" in a["error"] and "injected" in a["error"] for a in failed)
    assert all(status == 200 for status, _ in answers[N:])
    rows = check_log(tmp_path / "run", pairs + later, answers, direct)
    unanswered = {c for (_, c), (status, _) in zip(pairs + later, answers) if status != 200}
    assert bool(unanswered & {r["completion"] for r in rows}) == landed  # lines that landed are counted, never re-sent
    steps = [m["step"] for m in jsonl.read(tmp_path / "run" / "metrics.jsonl")]
    assert steps == list(range(1, len(rows) // 4 + 1))

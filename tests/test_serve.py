"""`tether serve` as OpenRLHF and verl use it: a real uvicorn server on loopback, real HTTP, a tiny judge.

In-process servers (a thread) for the protocol, the 400s, batching, the run folder and verl;
a `tether serve` subprocess killed with SIGKILL and restarted for the no-loss check.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from in_thread import InThread

from tether.infra import jsonl
from tether.judge.evaluator import Evaluator
from tether.serve.app import ServeSettings, build_app, make_server
from tether.serve.batching import Batcher
from tether.serve.runlog import ServeRun

CHEERFUL = Path(__file__).resolve().parent.parent / "examples" / "cheerful.yaml"
PROMPTS = ["Once upon a time,", "On the first day of summer,", "The old dog"]
REPLIES = [" we laughed all day at the fair.", " the funeral was grey and cold.", " yes yes yes yes yes yes yes.",
           " <start_of_image><start_of_image> <eos> it was fine."]


def post(url: str, body, *, raw: bytes | None = None, kind: str = "application/json", headers: dict | None = None):
    """(status, parsed JSON) of a POST; errors included."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": kind, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


class Server(InThread):
    """A real uvicorn server in a thread, on a socket bound to a free loopback port."""

    def __init__(self, evaluator, run_dir: Path, window: int = 4, max_wait_ms: float = 10.0, **settings):
        self.run = ServeRun(run_dir, CHEERFUL, "tiny", window, settings.get("include_prompt", True))
        self.batcher = Batcher(evaluator, self.run, max_batch=64, max_wait_ms=max_wait_ms)
        self.settings = ServeSettings(**settings)
        super().__init__(make_server(build_app(self.batcher, self.settings), self.settings))


@pytest.fixture(scope="module")
def judge(tiny_gemma, tiny_tokenizer):
    return Evaluator(tiny_gemma, CHEERFUL, tokenizer=tiny_tokenizer, batch_size=4)


@pytest.fixture(scope="module")
def direct(tiny_gemma, tiny_tokenizer):
    """A second evaluator on the same weights: what the service must agree with."""
    return Evaluator(tiny_gemma, CHEERFUL, tokenizer=tiny_tokenizer, batch_size=1)


def test_rewards_equal_direct_scores_and_prompt_is_stripped(judge, direct, tmp_path):
    queries = [PROMPTS[i % 3] + r for i, r in enumerate(REPLIES)]
    with Server(judge, tmp_path / "run") as s:
        status, answer = post(s.url + "/get_reward", {"query": ["<pad><pad>" + q for q in queries],
                                                      "prompts": [PROMPTS[i % 3] for i in range(4)],
                                                      "labels": ["a", 1, None, {"x": 2}]})
        health = json.loads(get(s.url + "/health"))
    assert status == 200, answer
    want = direct.score(queries).total()  # left padding before the prompt is cut off with it
    np.testing.assert_allclose(answer["rewards"], want, atol=1e-4)
    assert answer["scores"] == answer["rewards"]
    assert set(answer["extra_logs"]) == {"tether/cheerful"} and len(answer["extra_logs"]["tether/cheerful"]) == 4
    rows = jsonl.read(tmp_path / "run" / "samples.jsonl")
    assert [r["completion"] for r in rows] == REPLIES  # special-token strings judged and logged as text
    assert [r["label"] for r in rows] == ["a", 1, None, {"x": 2}]
    assert [r["train"] for r in rows] == answer["rewards"]  # what was answered is what was logged
    assert health["samples"] == 4 and health["step"] == 2  # window of 4: the next sample opens step 2


def test_bad_input_is_a_one_line_400_and_others_keep_being_served(judge, direct, tmp_path):
    bad = {
        "malformed JSON": (b'{"query": ["a"', "application/json"),
        "not an object": (b'["a"]', "application/json"),
        "query a number": (b'{"query": [1, "a"]}', "application/json"),
        "query a string": (b'{"query": "a"}', "application/json"),
        "empty list": (b'{"query": []}', "application/json"),
        "missing query": (b'{"prompts": ["a"]}', "application/json"),
        "prompts count": (b'{"query": ["ab", "cd"], "prompts": ["a"]}', "application/json"),
        "prompt not in query": (b'{"query": ["ab"], "prompts": ["zz"]}', "application/json"),
        "lone surrogate": (b'{"query": ["a\\ud800b"]}', "application/json"),
        "10 MB body": (json.dumps({"query": ["x" * 10_000_000]}).encode(), "application/json"),
        "form post": (b"query=a", "application/x-www-form-urlencoded"),
    }
    with Server(judge, tmp_path / "run", max_body_bytes=2**20) as s:
        answers = {}
        good: list = []

        def keep_posting():  # another client, served throughout
            while len(good) < 6:
                good.append(post(s.url + "/get_reward", {"query": [REPLIES[0]]}))

        other = threading.Thread(target=keep_posting)
        other.start()
        for name, (raw, kind) in bad.items():
            answers[name] = post(s.url + "/get_reward", None, raw=raw, kind=kind)
        other.join()
        metrics = get(s.url + "/metrics")
    for name, (status, body) in answers.items():
        assert status == 400, (name, status, body)
        assert isinstance(body["error"], str) and "\n" not in body["error"] and len(body["error"]) < 200, (name, body)
    assert "query[0]" in answers["query a number"][1]["error"] and "number" in answers["query a number"][1]["error"]
    assert "over the limit" in answers["10 MB body"][1]["error"]
    assert all(status == 200 for status, _ in good)
    np.testing.assert_allclose(good[0][1]["rewards"], direct.score([REPLIES[0]]).total(), atol=1e-4)
    assert f"tether_serve_samples_total {len(good)}" in metrics  # no bad request reached the judge or the log
    assert len(jsonl.read(tmp_path / "run" / "samples.jsonl")) == len(good)


def test_concurrent_requests_share_judge_calls(judge, direct, tmp_path):
    n = 12
    with Server(judge, tmp_path / "run", max_wait_ms=200) as s:
        barrier, answers = threading.Barrier(n), [None] * n

        def client(i):
            barrier.wait()
            answers[i] = post(s.url + "/get_reward", {"query": [PROMPTS[i % 3] + REPLIES[i % 4]],
                                                      "prompts": [PROMPTS[i % 3]]})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        batches = s.batcher.stats.batches
    assert all(status == 200 for status, _ in answers)
    assert batches < n / 2, f"{n} concurrent requests took {batches} judge calls"
    want = direct.score([PROMPTS[i % 3] + REPLIES[i % 4] for i in range(n)]).total()
    np.testing.assert_allclose([a["rewards"][0] for _, a in answers], want, atol=1e-4)  # each got its own score


def test_run_folder_reads_as_a_run_for_report_and_detect(judge, tmp_path):
    from tether.tune.config import run_settings
    from tether.watch.replay import detect
    from tether.watch.report import build_report

    run_dir = tmp_path / "run"
    with Server(judge, run_dir, window=4) as s:
        for step in range(3):  # calm, calm, then the yes-spammer
            replies = [" yes yes yes yes, yes!"] * 4 if step == 2 else REPLIES[:2] * 2
            assert post(s.url + "/get_reward", {"query": [PROMPTS[0] + r for r in replies],
                                                "prompts": [PROMPTS[0]] * 4})[0] == 200
    metrics = jsonl.read(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert metrics[2]["monitor/affirmation_rate"] > 0.5 and "principle/cheerful" in metrics[0]
    events = jsonl.read(run_dir / "events.jsonl")
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "stop"
    assert any(e["event"] == "detector" and e["step"] == 3 for e in events)
    trips, _ = detect(run_dir, run_settings(run_dir))  # the detectors replayed from the logs agree with the live ones
    assert trips["affirmation_rate"].step == 3
    page = build_report(run_dir).read_text()
    assert "step 3: affirmation_rate" in page and "yes yes yes" in page


def test_token_is_required_when_set_and_off_loopback(judge, tmp_path, capsys, monkeypatch):
    from tether.cli import main

    with Server(judge, tmp_path / "run", token="s3cret") as s:
        assert post(s.url + "/get_reward", {"query": ["a"]})[0] == 401
        assert post(s.url + "/get_reward", {"query": ["a"]}, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert post(s.url + "/get_reward", {"query": ["a"]}, headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert json.loads(get(s.url + "/health"))["status"] == "ok"
    with Server(judge, tmp_path / "run2") as s:  # on loopback: a page on another site cannot rebind its name to us
        status, answer = post(s.url + "/get_reward", {"query": ["a"]}, headers={"Host": "evil.example:80"})
        assert status == 400 and "Host evil.example refused" in answer["error"]
        assert post(s.url + "/get_reward", {"query": ["a"]}, headers={"Host": "localhost"})[0] == 200
    monkeypatch.delenv("TETHER_SERVE_TOKEN", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["serve", str(CHEERFUL), "--host", "0.0.0.0", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "bearer token" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_verl_compute_score_as_verls_reward_loop_calls_it(judge, direct, tmp_path, tiny_model_dir):
    import importlib.util

    import yaml

    config = yaml.safe_load((CHEERFUL.parent / "verl_reward.yaml").read_text())["custom_reward_function"]
    spec = importlib.util.spec_from_file_location("custom_module", CHEERFUL.parent.parent / config["path"])
    module = importlib.util.module_from_spec(spec)  # as verl's get_custom_reward_fn loads it: by file
    spec.loader.exec_module(module)
    compute_score = getattr(module, config["name"])
    data = [("story", PROMPTS[i % 3], r, f"gt{i}") for i, r in enumerate(REPLIES)]
    want = direct.score([p + r for _, p, r, _ in data]).total()
    local = [compute_score(data_source=src, solution_str=r, ground_truth=gt, extra_info={"prompt": p, "index": i},
                           constitution=str(CHEERFUL), model=str(tiny_model_dir), device="cpu")
             for i, (src, p, r, gt) in enumerate(data)]
    with Server(judge, tmp_path / "run") as s:
        remote = [compute_score(data_source=src, solution_str=r, ground_truth=gt, extra_info={"prompt": p},
                                url=s.url) for src, p, r, gt in data]
    for results in (local, remote):
        assert all(set(r) == {"score", "tether/cheerful"} for r in results)  # the same keys for every sample
        np.testing.assert_allclose([r["score"] for r in results], want, atol=1e-4)
    assert [r["label"] for r in jsonl.read(tmp_path / "run" / "samples.jsonl")] == ["gt0", "gt1", "gt2", "gt3"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(tiny_model_dir, run_dir: Path, port: int) -> subprocess.Popen:
    return start_cli(["serve", str(CHEERFUL), "-m", str(tiny_model_dir), "--out", str(run_dir), "--port", str(port),
                      "--window", "5", "--max-wait-ms", "5", "--device", "cpu"], port)


def start_cli(args: list[str], port: int) -> subprocess.Popen:
    """`tether ARGS` as a subprocess, returned once GET /health answers on `port`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    for _ in range(900):
        try:
            get(f"http://127.0.0.1:{port}/health")
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode()) from None
            time.sleep(0.1)
    raise RuntimeError(f"tether {args[0]} did not start")


def test_kill9_and_restart_lose_no_acknowledged_sample(tiny_model_dir, tmp_path):
    run_dir, port = tmp_path / "run", _free_port()
    url = f"http://127.0.0.1:{port}/get_reward"
    acknowledged: dict[str, float] = {}
    stop = threading.Event()

    def client(c):
        i = 0
        while not stop.is_set():
            query = [f"client {c} request {i} text {k}: a sunny day" for k in range(3)]
            try:
                status, answer = post(url, {"query": query, "labels": [c] * 3})
            except OSError:  # the service is down: a real client retries
                time.sleep(0.05)
                continue
            if status == 200:
                acknowledged.update(zip(query, answer["rewards"]))
            i += 1

    proc = _start(tiny_model_dir, run_dir, port)
    clients = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    [t.start() for t in clients]
    while len(acknowledged) < 40:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-load: requests in flight are lost, never acknowledged
    proc.wait()
    before = len(acknowledged)
    proc = _start(tiny_model_dir, run_dir, port)
    while len(acknowledged) < before + 30:
        time.sleep(0.02)
    stop.set()
    [t.join() for t in clients]
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the queued requests are judged and logged, the folder closed
    assert proc.wait(timeout=60) == 130

    rows = jsonl.read(run_dir / "samples.jsonl")
    logged = {r["completion"]: r["train"] for r in rows}
    missing = [q for q in acknowledged if q not in logged]
    assert not missing, f"{len(missing)} acknowledged samples not logged, e.g. {missing[0]!r}"
    assert all(logged[q] == r for q, r in acknowledged.items())
    assert [r["sample"] for r in rows] == list(range(len(rows)))  # numbered once, in order, across the restart
    assert all(r["step"] == r["sample"] // 5 + 1 for r in rows)
    steps = [m["step"] for m in jsonl.read(run_dir / "metrics.jsonl")]
    assert steps == list(range(1, len(rows) // 5 + 1))  # every full window has one metrics line, none twice
    events = [e["event"] for e in jsonl.read(run_dir / "events.jsonl")]
    assert events[0] == "start" and events.count("resume") == 1 and events[-1] == "stop"

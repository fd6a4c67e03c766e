"""`tether deploy`: a real uvicorn server on loopback serving a tiny policy, real HTTP, a tiny judge.

What a team running a model that learns in production relies on: every reply is on disk before it
is sent and names its version; feedback is refused for unknown ids and stored once; a hot swap drops
no request and every reply names the version that wrote it; a failed version is never served; the
live detectors roll a version back; bad input is one line and a 400.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from in_thread import InThread

from tests.test_serve import get, post
from tether.deploy.app import build_app
from tether.deploy.config import DeployConfig
from tether.deploy.policy import encode_prompt, load_version
from tether.deploy.serving import Policy
from tether.deploy.store import Store
from tether.errors import TetherError
from tether.infra import atomic, jsonl
from tether.infra.http import ServeSettings, make_server
from tether.judge.evaluator import Evaluator

CHEERFUL = Path(__file__).resolve().parent.parent / "examples" / "cheerful.yaml"


def deploy_config(model_dir: Path, out: Path, **fields) -> DeployConfig:
    return DeployConfig(policy_model=str(model_dir), constitution=CHEERFUL, judge_model=str(model_dir),
                        output_dir=out, max_new_tokens=8, embedder=None, **fields)


class Deployed(InThread):
    """A deployment served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, config: DeployConfig, judge):
        self.store = Store(config.output_dir)
        self.store.create("# test\n")
        self.policy = Policy(config, self.store, judge)
        settings = ServeSettings()
        super().__init__(make_server(build_app(self.policy, settings), settings))


@pytest.fixture(scope="module")
def judge(tiny_gemma, tiny_tokenizer):
    return Evaluator(tiny_gemma, CHEERFUL, tokenizer=tiny_tokenizer, batch_size=4)


def add_version(store: Store, name: str, parent: str, status: str = "passed", seed: int = 1) -> None:
    """A version folder as the learner publishes it: a LoRA adapter of random weights on the tiny model."""
    from peft import LoraConfig, get_peft_model

    from tests.conftest import build_tiny_gemma, build_tiny_tokenizer

    model = build_tiny_gemma(len(build_tiny_tokenizer()))
    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with atomic.folder(store.version_dir(name)) as building:
        peft.save_pretrained(building / "adapter", safe_serialization=True)
        atomic.write_json(building / "version.json", {"version": name, "parent": parent, "status": status,
                                                       "adapter": True, "why": "test", "learned_through": 0})


def test_a_reply_is_on_disk_before_it_is_sent_and_names_its_version(tiny_model_dir, judge, tmp_path):
    config = deploy_config(tiny_model_dir, tmp_path / "dep")
    with Deployed(config, judge) as d:
        status, reply = post(d.url + "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 6})
        assert status == 200, reply
        rows = jsonl.read(d.store.path / "interactions.jsonl")  # read right after the answer: already there
        status_chat, chat = post(d.url + "/v1/chat/completions",
                                 {"messages": [{"role": "user", "content": "Hi <start_of_image> <eos>"}], "max_tokens": 4})
        models = json.loads(get(d.url + "/v1/models"))
    assert reply["model"] == "tether-v0" and reply["object"] == "text_completion"
    assert [r["id"] for r in rows] == [reply["id"]]
    row = rows[0]
    assert row["version"] == "v0" and row["completion"] == reply["choices"][0]["text"]
    assert set(row["scores"]) == {"total", "cheerful"} and "repetition" in row["monitors"]
    assert reply["usage"]["completion_tokens"] == row["completion_tokens"] <= 6
    assert status_chat == 200 and chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    assert [m["id"] for m in models["data"]] == ["tether-v0"] and models["data"][0]["status"] == "live"


def test_user_text_never_becomes_control_tokens(tiny_model_dir, tmp_path):
    config = deploy_config(tiny_model_dir, tmp_path / "dep")
    store = Store(config.output_dir)
    store.create("# test\n")
    loaded = load_version(config, store, "v0")
    for prompt in ["x <eos> <bos> <unused0> <start_of_image> y", [{"role": "user", "content": "<eos><start_of_image>"}]]:
        ids = encode_prompt(loaded, prompt)
        assert not loaded.safe.control_ids.intersection(ids[1:]), prompt  # the BOS in front is tether's own


def test_feedback_is_refused_for_unknown_ids_and_stored_once(tiny_model_dir, judge, tmp_path):
    config = deploy_config(tiny_model_dir, tmp_path / "dep")
    with Deployed(config, judge) as d:
        _, reply = post(d.url + "/v1/completions", {"prompt": "Once upon a time"})
        unknown = post(d.url + "/v1/feedback", {"id": "cmpl-nope", "thumb": "up"})
        empty = post(d.url + "/v1/feedback", {"id": reply["id"]})
        wrong = post(d.url + "/v1/feedback", {"id": reply["id"], "thumb": "sideways"})
        first = post(d.url + "/v1/feedback", {"id": reply["id"], "thumb": "up", "key": "k1"})
        again = post(d.url + "/v1/feedback", {"id": reply["id"], "thumb": "up", "key": "k1"})
        answer = post(d.url + "/v1/feedback", {"id": reply["id"], "answers": {"good": "no"}, "comment": "too short"})
    assert unknown[0] == 404 and "no reply of this deployment" in unknown[1]["error"]
    assert empty[0] == 400 and "send thumb" in empty[1]["error"]
    assert wrong[0] == 400 and wrong[1]["error"].startswith("thumb")
    assert first[0] == again[0] == answer[0] == 200
    assert first[1]["stored"] and not again[1]["stored"] and first[1]["feedback"] == again[1]["feedback"]
    stored = jsonl.read(d.store.path / "feedback.jsonl")
    assert [(f["of"], f.get("thumb"), f.get("answers")) for f in stored] == [(reply["id"], "up", None),
                                                                             (reply["id"], None, {"good": "no"})]


@pytest.mark.parametrize("body, expect", [
    (b'{"prompt": "a"', "malformed JSON"),
    (b'[1, 2]', "JSON object"),
    (b'{"max_tokens": 4}', "`prompt` is missing"),
    (b'{"prompt": 3}', "prompt"),
    (b'{"prompt": "a", "max_tokens": 0}', "max_tokens"),
    (b'{"prompt": "a", "max_tokens": 100000}', "over this deployment's limit"),
    (b'{"prompt": "a", "temperature": -1}', "temperature"),
    (b'{"prompt": "a", "n": 2}', "n"),
])
def test_bad_requests_are_one_line_400s(tiny_model_dir, judge, tmp_path, body, expect):
    config = deploy_config(tiny_model_dir, tmp_path / "dep")
    with Deployed(config, judge) as d:
        status, answer = post(d.url + "/v1/completions", None, raw=body)
        ok, _ = post(d.url + "/v1/completions", {"prompt": "Once"})
    assert status == 400 and expect in answer["error"] and "\n" not in answer["error"], answer
    assert ok == 200


def test_a_hot_swap_drops_no_request_and_every_reply_names_its_writer(tiny_model_dir, judge, tmp_path):
    config = deploy_config(tiny_model_dir, tmp_path / "dep", max_batch=4)
    with Deployed(config, judge) as d:
        add_version(d.store, "v1", "v0")
        add_version(d.store, "v2", "v1", status="failed")
        with pytest.raises(TetherError, match="failed its gate"):
            d.store.set_live("v2", "by hand")

        def ask(k):
            return post(d.url + "/v1/completions", {"prompt": f"Story {k}:", "max_tokens": 4})

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(ask, k) for k in range(48)]
            time.sleep(0.3)
            d.store.set_live("v1", "test swap")
            answers = [f.result() for f in futures]
        for _ in range(100):
            if d.policy.live.version == "v1":
                break
            time.sleep(0.1)
        after = ask(99)
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:2]
    logged = {r["id"]: r["version"] for r in jsonl.read(d.store.path / "interactions.jsonl")}
    assert len(logged) == 49
    assert all(logged[a["id"]] == a["model"].removeprefix("tether-") for _, a in answers)
    assert after[1]["model"] == "tether-v1"
    assert any(e["event"] == "swapped" and e["version"] == "v1" for e in d.store.events())


def test_live_detectors_roll_a_version_back_to_its_parent(tiny_model_dir, judge, tmp_path):
    # every text has a run of at least one word, so a limit of 0 trips on the first window
    config = deploy_config(tiny_model_dir, tmp_path / "dep", window=2, rollback_on=["longest_repeat_run"],
                           detectors={"longest_repeat_run": 0, "cusum_series": []})
    with Deployed(config, judge) as d:
        add_version(d.store, "v1", "v0")
        d.store.set_live("v1", "test")
        for _ in range(100):
            if d.policy.live.version == "v1":
                break
            time.sleep(0.1)
        for k in range(2):
            post(d.url + "/v1/completions", {"prompt": f"Story {k}:", "max_tokens": 4})
        for _ in range(100):
            if d.policy.live.version == "v0":
                break
            time.sleep(0.1)
    assert d.store.live()["version"] == "v0" and d.policy.live.version == "v0"
    rollback = [e for e in d.store.events() if e["event"] == "rollback"]
    assert rollback and rollback[0]["rolled_back"] == "v1" and rollback[0]["automatic"]
    assert "longest_repeat_run" in rollback[0]["why"]
    from tether.cli import main

    main(["report", str(d.store.path)])  # the deployment's timeline page
    page = (d.store.path / "report" / "report.html").read_text()
    assert "1 rollback(s)" in page and "v0 is live" in page and "id='v1'" in page
    assert (d.store.path / "report" / "timeline.png").stat().st_size > 1000


def test_rollback_command_refuses_failed_and_unknown_versions(tiny_model_dir, tmp_path, capsys):
    from tether.cli import main

    store = Store(tmp_path / "dep")
    store.create("# test\n")
    add_version(store, "v1", "v0", status="failed")
    for version, expect in (("v1", "failed its gate"), ("v7", "no version v7"), ("latest", "write a version name")):
        with pytest.raises(SystemExit) as e:
            main(["deploy", "rollback", version, "--deployment", str(store.path)])
        assert e.value.code == 2, version
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err, err
    assert store.live()["version"] == "v0"
    with pytest.raises(SystemExit) as e:
        main(["deploy", "rollback", "v0", "--deployment", str(tmp_path / "nothing")])
    assert e.value.code == 2


LOOSE = {"affirmation_rate": 1.0, "special_token_rate": 1.0, "repetition": 1.0, "longest_repeat_run": 1000,
         "cusum_series": []}  # a random tiny model's text passes; the gate's monitors are tested with a strict limit


def served(store: Store, n: int, start: int = 0) -> list[dict]:
    """Interactions as the server logs them, on n distinct prompts."""
    rows = [{"id": f"cmpl-{k}", "time": 0.0, "version": store.live()["version"], "kind": "completion",
             "prompt": f"Story number {k}:", "completion": " it was a bright day.", "scores": None, "monitors": {}}
            for k in range(start, start + n)]
    store.record(rows)
    return rows


def test_the_learner_makes_gated_versions_each_from_the_last(tiny_model_dir, tmp_path):
    import yaml

    from tether.deploy.learner import Learner

    config = deploy_config(tiny_model_dir, tmp_path / "dep", detectors=LOOSE, seed=3,
                           learn={"every": 4, "recent": 4, "steps": 1, "completions_per_prompt": 2,
                                  "max_completion_tokens": 4, "lora_rank": 4},
                           gate={"draws": 1, "audit": False, "habit": False})
    store = Store(config.output_dir)
    store.create("# test\n")
    learner = Learner(config, store)
    served(store, 3)
    assert not learner.due()  # 3 of 4
    served(store, 1, start=3)
    assert learner.due()
    v1 = learner.try_update()
    assert v1["version"] == "v1" and v1["parent"] == "v0" and v1["status"] == "passed" and v1["learned_through"] == 4
    assert store.live()["version"] == "v1" and not learner.due()
    folder = store.version_dir("v1")
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert [r["id"] for r in jsonl.read(folder / "data.jsonl")] == ["cmpl-0", "cmpl-1", "cmpl-2", "cmpl-3"]
    assert len(jsonl.read(folder / "canary.jsonl")) == 4  # the first 8 distinct prompts served: 4 so far
    assert yaml.safe_load((folder / "train" / "config.yaml").read_text())["init_adapter"] is None  # v0 has none

    served(store, 4, start=4)
    v2 = learner.try_update()
    train = yaml.safe_load((store.version_dir("v2") / "train" / "config.yaml").read_text())
    assert v2["parent"] == "v1" and train["init_adapter"] == str(folder / "adapter")  # online: from the serving one
    assert [r["prompt"] for r in jsonl.read(store.path / "canary.jsonl")] == [f"Story number {k}:" for k in range(4)]

    served(store, 4, start=100)
    real_gate = learner._gate
    learner._gate = lambda building, adapter, parent: (  # v2 rolled back to v1 while v3 is built from v2
        store.set_live("v1", "rollback"), real_gate(building, adapter, parent))[1]
    skipped = learner.try_update()
    assert skipped["status"] == "passed" and store.live()["version"] == "v1"  # passed, but never served over v1
    assert [e["event"] for e in store.events()][-1] == "not_served"
    store.set_live(skipped["version"], "by hand: it passed its gate")

    strict = config.model_copy(update={"detectors": config.detectors.model_copy(update={"longest_repeat_run": 0})})
    served(store, 4, start=8)
    (store.path / "versions" / ".v4.killed.tmp").mkdir()  # what a kill mid-build leaves
    failed = Learner(strict, store)
    failed.clear_leftovers()
    v4 = failed.try_update()
    assert v4["status"] == "failed" and "longest_repeat_run" in v4["why"]
    assert store.live()["version"] == "v3"  # a failed version is never served
    assert not list((store.path / "versions").glob(".*.tmp"))
    assert [e["event"] for e in store.events()][-1] == "rejected" and not failed.due()


def test_feedback_pays_the_learner_through_a_refitted_gold(tiny_model_dir, tmp_path):
    import yaml

    from tether.deploy.learner import Learner

    config = deploy_config(tiny_model_dir, tmp_path / "dep", detectors=LOOSE,
                           learn={"every": 8, "recent": 8, "steps": 1, "completions_per_prompt": 2, "pay": "both",
                                  "max_completion_tokens": 4, "lora_rank": 4, "min_feedback": 8, "pick": 3},
                           gate={"draws": 1, "audit": False, "habit": False})
    store = Store(config.output_dir)
    store.create("# test\n")
    rows = served(store, 8)
    learner = Learner(config, store)
    for k, row in enumerate(rows[:3]):
        store.add_feedback({"feedback": f"fb-{k}", "time": "t", "of": row["id"], "thumb": "up"})
    first = learner.try_update()  # 3 thumbs, all up: too few for a gold; the judge alone pays
    assert first["feedback_gold"] is False
    served(store, 8, start=8)
    for k, row in enumerate(store.interactions()):
        store.add_feedback({"feedback": f"fb2-{k}", "time": "t", "of": row["id"], "thumb": "up" if k % 2 else "down"})
    jsonl.append(store.path / "labels.jsonl", [  # a person's labels on picked replies, in the page's format
        {"kind": "label", "item": f"pick-{k}", "question": "good", "answer": a, "who": "ana", "time": "t",
         "source": {"prompt": f"Story number {k}:", "completion": f" picked reply {k}."}} for k, a in ((1, "yes"), (2, "no"))])
    read_already = store.interactions()[0]
    jsonl.append(store.path / "labels.jsonl", [{"kind": "label", "item": "read-0", "question": "good", "answer": "no",
                                                "who": "ana", "time": "t", "source": {
                                                    "prompt": read_already["prompt"], "completion": read_already["completion"]}}])
    second = learner.try_update()
    train = yaml.safe_load((store.version_dir(second["version"]) / "train" / "config.yaml").read_text())
    assert second["feedback_gold"] is True and train["gold_reward"]["weight"] == 1.0
    gold = json.loads((store.version_dir(second["version"]) / "feedback_gold" / "gold.json").read_text())
    assert gold["label"] == "good" and gold["n"] == 19  # one label per reply (its latest thumb), and the 3 picked
    # the learner queues the replies its new gold is least sure of, for a person to read
    assert not (store.version_dir(first["version"]) / "to_read.jsonl").exists()  # no gold then: nothing to rank by
    queued = [json.loads(line) for line in (store.version_dir(second["version"]) / "to_read.jsonl").read_text().splitlines()]
    texts = {r["id"]: (r["prompt"], r["completion"]) for r in store.interactions()}
    assert len(queued) == 3 and all(texts[q["id"]] == (q["prompt"], q["completion"]) for q in queued)
    assert read_already["id"] not in {q["id"] for q in queued}  # a reply a person has read is not queued again
    assert all(0 <= q["p_yes"] <= 1 and q["why"].startswith("gold P(yes)") for q in queued)
    assert any(e["event"] == "picked" and e["replies"] == 3 for e in jsonl.read(store.path / "events.jsonl"))


def test_kill9_and_restart_lose_or_repeat_no_acknowledged_reply_or_feedback(tiny_model_dir, tmp_path):
    import http.client
    import os
    import signal

    import yaml

    from tests.test_serve import _free_port, start_cli

    out, port = tmp_path / "dep", _free_port()
    config_path = tmp_path / "deploy.yaml"
    config_path.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir), "constitution": str(CHEERFUL),
        "output_dir": str(out), "max_new_tokens": 4, "embedder": None, "device": "cpu", "max_wait_ms": 5}))
    url = f"http://127.0.0.1:{port}"
    replies: set[str] = set()
    feedback: set[str] = set()
    stop = threading.Event()

    def client(c):
        i = 0
        while not stop.is_set():
            try:
                status, answer = post(url + "/v1/completions", {"prompt": f"client {c} story {i}:"})
                if status == 200:
                    replies.add(answer["id"])
                    key = f"{c}-{i}"
                    status, _ = post(url + "/v1/feedback", {"id": answer["id"], "thumb": "up", "key": key})
                    if status == 200:
                        feedback.add(key)
            except (OSError, http.client.HTTPException):  # the service is down or died mid-answer: a client retries
                time.sleep(0.05)
                continue
            i += 1

    proc = start_cli(["deploy", str(config_path), "--port", str(port)], port)
    clients = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    [t.start() for t in clients]
    for round_ in range(2):
        while len(replies) < 15 * (round_ + 1):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # mid-load: requests in flight are lost, never acknowledged
        proc.wait()
        proc = start_cli(["deploy", str(config_path), "--port", str(port)], port)
    while len(replies) < 40:
        time.sleep(0.02)
    stop.set()
    [t.join() for t in clients]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130

    logged = [r["id"] for r in jsonl.read(out / "interactions.jsonl")]
    assert len(logged) == len(set(logged)), "an interaction logged twice"
    assert replies <= set(logged), f"{len(replies - set(logged))} acknowledged replies lost"
    keys = [f["key"] for f in jsonl.read(out / "feedback.jsonl")]
    assert len(keys) == len(set(keys)) and feedback <= set(keys)
    events = [e["event"] for e in jsonl.read(out / "events.jsonl")]
    assert events.count("start") == 3 and events[-1] == "stop"


def test_a_habit_in_served_text_rolls_the_version_back(tiny_model_dir, tmp_path):
    import random

    from tests.test_lexical import stories

    config = deploy_config(tiny_model_dir, tmp_path / "dep", window=16)
    store = Store(config.output_dir)
    store.create("# test\n")
    add_version(store, "v1", "v0")
    store.set_live("v1", "test")
    rng = random.Random(0)
    jsonl.rewrite(store.path / "canary_base.jsonl", [{"prompt": "p", "completions": stories(rng, 32)}])
    policy = Policy(config, store)  # not started: its live monitors fed by hand
    policy._monitor("v1", [{"completion": t, "scores": None} for t in stories(rng, 16)])
    assert store.live()["version"] == "v1"  # like the base: no trip
    policy._monitor("v1", [{"completion": t, "scores": None} for t in stories(rng, 16, habit="!")])
    assert store.live()["version"] == "v0"
    rollback = [e for e in store.events() if e["event"] == "rollback"][-1]
    assert "habit" in rollback["why"] and "'!'" in rollback["why"] and rollback["rolled_back"] == "v1"


def test_a_deployments_replies_are_a_labeling_pool(tmp_path):
    """`tether label DEPLOYMENT/interactions.jsonl --pick N` reads replies to chats too, their version hidden in the source."""
    from tether.labels.items import read_items

    path = tmp_path / "interactions.jsonl"
    jsonl.append(path, [{"id": "a", "version": "v2", "prompt": [{"role": "user", "content": "Hi."}], "completion": "Hello!",
                         "scores": {"total": 1.0}},
                        {"id": "b", "version": "v3", "prompt": "Once", "completion": " upon a time."}])
    items = read_items(path)
    assert [i.prompt for i in items] == ["User: Hi.\n\nAssistant: ", "Once"]
    assert [(i.source["kind"], i.source["arm"]) for i in items] == [("deploy", "v2"), ("deploy", "v3")]


@pytest.mark.parametrize("name", ["deploy.yaml", "deploy_sim.yaml"])
def test_the_shipped_deployment_examples_load(name):
    from tether.infra.config import load_config

    examples = Path(__file__).resolve().parent.parent / "examples"
    config = load_config(DeployConfig, examples / name)
    assert config.constitution.exists() and config.learn is not None

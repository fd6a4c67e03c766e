"""`tether deploy`: a real uvicorn server on loopback serving a tiny policy, real HTTP, a tiny judge.

What a team running a model that learns in production relies on: every reply is on disk before it
is sent and names its version; feedback is refused for unknown ids and stored once; a hot swap drops
no request and every reply names the version that wrote it; a failed version is never served; the
live detectors roll a version back; bad input is one line and a 400.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tether.deploy.app import build_app
from tether.deploy.config import DeployConfig
from tether.deploy.serving import Policy, encode_prompt, load_version
from tether.deploy.store import Store
from tether.errors import TetherError
from tether.infra import atomic, jsonl
from tether.judge.evaluator import Evaluator
from tether.serve.app import ServeSettings, make_server
from tests.test_serve import get, post

CHEERFUL = Path(__file__).resolve().parent.parent / "examples" / "cheerful.yaml"


def deploy_config(model_dir: Path, out: Path, **fields) -> DeployConfig:
    return DeployConfig(policy_model=str(model_dir), constitution=CHEERFUL, judge_model=str(model_dir),
                        output_dir=out, max_new_tokens=8, embedder=None, **fields)


class Deployed:
    """A deployment served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, config: DeployConfig, judge):
        self.store = Store(config.output_dir)
        self.store.create("# test\n")
        self.policy = Policy(config, self.store, judge)
        settings = ServeSettings()
        self.server = make_server(build_app(self.policy, settings), settings)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


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


def test_rollback_command_refuses_failed_and_unknown_versions(tiny_model_dir, tmp_path):
    from tether.cli import main

    store = Store(tmp_path / "dep")
    store.create("# test\n")
    add_version(store, "v1", "v0", status="failed")
    for version, expect in (("v1", "failed its gate"), ("v7", "no version v7"), ("latest", "write a version name")):
        with pytest.raises(SystemExit) as e:
            main(["deploy", "rollback", version, "--deployment", str(store.path)])
        assert e.value.code == 2, version
    assert store.live()["version"] == "v0"
    with pytest.raises(SystemExit) as e:
        main(["deploy", "rollback", "v0", "--deployment", str(tmp_path / "nothing")])
    assert e.value.code == 2

"""The corpus pipeline across rounds, crashes and bad input, on tiny models.

The constitution's fingerprint ignores its file name; sft continues the corpus's adapter so
the chain of rounds survives; tree search always returns N leaves; the review server answers
a bad Content-Length with 400 and never blocks; damaged corpus files are one line. Then the
kill tests: `tether sample` and the review server SIGKILLed mid-work and restarted lose no
acknowledged line and duplicate none (docs/reliability.md).
"""

import copy
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection

import numpy as np
import pytest
import torch
import yaml

from tether.corpus import review
from tether.corpus.config import SampleConfig, SftConfig
from tether.corpus.sample import run_sample, tree_search
from tether.corpus.store import CorpusDir
from tether.errors import TetherError
from tether.infra import jsonl, localpage
from tether.infra.generate import Generator, load_policy
from tether.judge.constitution import load_constitution

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
KILLS = int(os.environ.get("TETHER_KILLS", "3"))  # sample kills; the review server gets twice as many (cheap)
PROMPTS_KILLED = KILLS + 3  # enough groups that every kill lands before the last one
PROMPTS = ["Once upon a time", "The sun came out", "We went to the fair", "On a quiet morning",
           "The dog ran home", "A girl found a box", "It was a bright day", "At the end of the road"]


def tether(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "tether.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300, check=False, **kwargs)


def sample_config(tmp_path, model_dir, examples_dir, **fields) -> SampleConfig:
    return SampleConfig.model_validate({
        "policy_model": str(model_dir), "judge_model": str(model_dir), "constitution": examples_dir / "cheerful.yaml",
        "prompts": examples_dir / "prompts.txt", "completions_per_prompt": 4, "max_completion_tokens": 6,
        "threshold": 0.0915, "monitors": {"min_words": 1}, "output_dir": tmp_path / "corpus", **fields,
    })


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread is several times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mine(tmp_path, examples_dir):
    """cheerful.yaml without `name:` or `description:`, saved as mine.yaml: its name is the file's stem."""
    text = "".join(line for line in (examples_dir / "cheerful.yaml").read_text().splitlines(keepends=True)
                   if not line.startswith(("name:", "description:")))
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    assert load_constitution(path).name == "mine"
    return path


def prompts_file(tmp_path, n: int):
    path = tmp_path / f"prompts{n}.txt"
    path.write_text("\n".join((PROMPTS + [f"Story number {k} began" for k in range(n)])[:n]) + "\n")
    return path


def eos_heavy_model_dir(tmp_path, tiny_gemma, tiny_tokenizer):
    """The tiny Gemma with 80 end-of-text ids (Gemma itself has several): branches often finish early."""
    model = copy.deepcopy(tiny_gemma)
    model.generation_config.eos_token_id = [1, *range(20, 99)]
    path = tmp_path / "eos-heavy"
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path, model


# --- 1. the fingerprint depends on what the judge reads, not on the file name -----------------------


def test_a_constitution_without_a_name_opens_its_own_corpus(tmp_path, tiny_model_dir, examples_dir, mine):
    config = sample_config(tmp_path, tiny_model_dir, examples_dir, constitution=mine, prompts=prompts_file(tmp_path, 2),
                           completions_per_prompt=2, max_completion_tokens=3)
    corpus = run_sample(config)
    stored = corpus.constitution()  # the corpus's copy, constitution.yaml: its name is "constitution"
    assert stored.name == "constitution" and stored.fingerprint() == load_constitution(mine).fingerprint()
    corpus.check_constitution(stored)
    review.make_server(corpus.path).server_close()  # `tether audit-corpus` opens it
    changed = stored.model_copy(deep=True)
    changed.principles[0].question = "Is the text sad?"
    with pytest.raises(TetherError, match="built with a different constitution"):
        corpus.check_constitution(changed)
    # A corpus made before the fix hashed the name too; meta.json kept the name, so it still opens.
    meta = json.loads((corpus.path / "meta.json").read_text())
    import hashlib

    legacy = load_constitution(mine).model_dump()
    meta["constitution_sha256"] = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()
    (corpus.path / "meta.json").write_text(json.dumps(meta))
    corpus.check_constitution(stored)


# --- 2. sft continues the corpus's adapter: the chain of rounds survives ------------------------------


def logits(model, tokenizer, text="Once upon a time we laughed"):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits[0]


def test_two_rounds_of_sft_keep_the_adapter_chain(tmp_path, tiny_model_dir, examples_dir, mine):
    from tether.corpus.sft import HeldOut, run_sft
    from tether.infra.models import load_causal_lm
    from tether.judge.evaluator import Evaluator

    sft = {"epochs": 2, "batch_size": 4, "learning_rate": 0.5, "lora_rank": 4, "lora_target_modules": ["q_proj", "v_proj"],
           "eval_completions_per_prompt": 2}
    base_config = sample_config(tmp_path, tiny_model_dir, examples_dir, constitution=mine, keep="best", keep_best=2,
                                prompts=prompts_file(tmp_path, 2), completions_per_prompt=4, max_completion_tokens=6)
    finals, evals = [], []
    for r in (1, 2):
        config = base_config.model_copy(update={"output_dir": tmp_path / f"corpus{r}",
                                                "adapter": finals[-1] if finals else None})
        corpus = run_sample(config)
        run, _ = run_sft(corpus.path, SftConfig(**sft, output_dir=tmp_path / f"sft{r}"))
        finals.append(run.path / "final")
        evals.append(json.loads((run.path / "eval.json").read_text()))
    assert evals[0]["parent_adapter"] is None and evals[1]["parent_adapter"] == str(finals[0])

    base, tokenizer = load_policy(str(tiny_model_dir))
    one, _ = load_policy(str(tiny_model_dir), finals[0])
    two, _ = load_policy(str(tiny_model_dir), finals[1])
    assert not torch.allclose(logits(one, tokenizer), logits(base, tokenizer), atol=1e-3)
    assert not torch.allclose(logits(two, tokenizer), logits(one, tokenizer), atol=1e-3)  # round 2 learned more
    # The second final/ on the base alone is the model round 2 tuned: it redraws the same held-out samples.
    judge_model, judge_tokenizer = load_causal_lm(str(tiny_model_dir))
    judge = Evaluator(judge_model, load_constitution(mine), tokenizer=judge_tokenizer)
    redrawn = HeldOut(judge, PROMPTS[:2], config, SftConfig(**sft))(two, tokenizer, "again")
    assert [r["completion"] for r in redrawn] == [r["completion"] for r in evals[1]["samples"]["after"]]
    # (that round 2 changed the model is the logits check above: with 4 seeded draws from a tiny random model, the
    # drawn texts may or may not change with it, depending on the precision the trainer ran in)


# --- 3. tree search returns exactly N leaves ---------------------------------------------------------


def test_tree_search_always_returns_n_leaves(tmp_path, tiny_gemma, tiny_tokenizer, examples_dir, monkeypatch):
    path, model = eos_heavy_model_dir(tmp_path, tiny_gemma, tiny_tokenizer)
    gen = Generator(model, tiny_tokenizer, temperature=1.0)

    def judge(texts):
        return np.array([len(t) % 7 for t in texts], dtype=float)

    short = 0
    for seed in range(6):
        for prompt, n, width in [(PROMPTS[seed], 6, 2), (PROMPTS[seed + 1], 4, 4), (PROMPTS[seed + 2], 6, 3)]:
            torch.manual_seed(seed)
            leaves = tree_search(gen, judge, prompt, n=n, max_tokens=8, chunk=2, width=width, temperature=0.5,
                                 rng=np.random.default_rng(seed))
            assert len(leaves) == n, (seed, prompt, n, width)
            short += sum(len(tiny_tokenizer(leaf, add_special_tokens=False)["input_ids"]) < 6 for leaf in leaves)
    assert short > 10  # branches did finish early: the case this test is about was exercised

    config = sample_config(tmp_path, path, examples_dir, search="tree", tree_chunk_tokens=2, tree_width=2,
                           completions_per_prompt=4, max_completion_tokens=8, prompts=prompts_file(tmp_path, 4))
    corpus = run_sample(config)
    counts = [sum(c["prompt_index"] == i for c in corpus.candidates()) for i in range(4)]
    assert counts == [4, 4, 4, 4]
    before = corpus.candidates_path.read_bytes()

    def no_policy(*args, **kwargs):
        raise AssertionError("a rerun of a finished corpus loaded the policy to draw again")

    monkeypatch.setattr("tether.corpus.sample.load_policy", no_policy)
    run_sample(config)
    assert corpus.candidates_path.read_bytes() == before


# --- 4. the review server and a bad Content-Length -----------------------------------------------------


@pytest.fixture
def small_corpus(tmp_path, tiny_model_dir, examples_dir):
    config = sample_config(tmp_path, tiny_model_dir, examples_dir, prompts=prompts_file(tmp_path, 3),
                           completions_per_prompt=3, max_completion_tokens=4, threshold=-100.0)
    return run_sample(config)


def raw_request(port: int, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def post_head(length: str) -> str:
    return (f"POST /api/decision HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n")


def test_review_server_answers_a_bad_content_length_and_never_blocks(small_corpus, monkeypatch):
    monkeypatch.setattr(localpage, "READ_TIMEOUT", 1.0)
    server = review.make_server(small_corpus.path, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        for length, status in [("-1", 400), ("abc", 400), ("1e3", 400), ("", 400), (str(localpage.MAX_BODY + 1), 413)]:
            got, body = raw_request(port, post_head(length))
            assert got == status, (length, got, body)
            assert "\n" not in body.decode() and "error" in json.loads(body), body
        # A client that stalls mid-body is dropped after the read timeout; the server keeps answering.
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(post_head("50").encode() + b'{"id": ')
        sample_id = small_corpus.candidates()[0]["id"]
        body = json.dumps({"id": sample_id, "action": "reject", "note": "n"}).encode()
        assert raw_request(port, post_head(str(len(body))), body)[0] == 200
        stalled.settimeout(5)
        assert stalled.recv(65536) == b""  # closed by the server, not left open
        stalled.close()
    finally:
        server.shutdown()
        server.server_close()
    assert [d["id"] for d in jsonl.read(small_corpus.decisions_path)] == [sample_id]


# --- 5. damaged corpus files are one line --------------------------------------------------------------


def test_damaged_corpus_files_are_one_line(small_corpus):
    meta, config = small_corpus.path / "meta.json", small_corpus.path / "config.yaml"
    good_meta, good_config = meta.read_text(), config.read_text()
    for text, message in [('{"constitution": ', "meta.json: malformed JSON"), ("[1, 2]", "meta.json: not a corpus's"),
                          ('{"constitution": "x"}', "constitution_sha256")]:
        meta.write_text(text)
        with pytest.raises(TetherError, match=message):
            small_corpus.check_constitution(small_corpus.constitution())
    run = tether("audit-corpus", small_corpus.path, "--port", "0", "--no-open")
    assert run.returncode == 2 and "meta.json" in run.stderr and "Traceback" not in run.stderr, run.stderr
    meta.write_text(good_meta)
    config.write_text("seed: [1,\n")
    with pytest.raises(TetherError, match=r"config.yaml: line \d+, column \d+: malformed YAML"):
        small_corpus.config()
    config.write_text(good_config)
    small_corpus.decisions_path.write_text('{"id": "p0-s0"}\n')
    with pytest.raises(TetherError, match="decisions.jsonl: record 1 lacks action, note"):
        small_corpus.decisions()


def test_a_decision_logged_but_not_applied_is_applied_on_restart(small_corpus):
    """A kill between a decision's append and the rebuild of corpus.jsonl: the next server start applies it."""
    sample_id = small_corpus.corpus()[0]["id"]
    jsonl.append(small_corpus.decisions_path, [{"id": sample_id, "action": "reject", "note": "", "time": "t"}])
    assert sample_id in {r["id"] for r in small_corpus.corpus()}  # stale, as the kill left it
    review.make_server(small_corpus.path).server_close()
    assert sample_id not in {r["id"] for r in small_corpus.corpus()}


# --- kill tests: `tether sample` ---------------------------------------------------------------------


def start(args: list) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tether.cli", *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL it; True if it was still running (a kill, not a finished run)."""
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def size(path) -> int:
    return path.stat().st_size if path.exists() else 0


def by_id(rows: list[dict]) -> dict:
    return {r["id"]: r for r in rows}


def test_sample_survives_sigkill_and_reruns_to_the_uninterrupted_result(tmp_path, tiny_model_dir, examples_dir):
    config = sample_config(tmp_path, tiny_model_dir, examples_dir, prompts=prompts_file(tmp_path, PROMPTS_KILLED),
                           completions_per_prompt=3, max_completion_tokens=10, seed=7)

    def config_file(name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config.model_copy(update={"output_dir": tmp_path / name}).model_dump(mode="json")))
        return path

    run_sample(config.model_copy(update={"output_dir": tmp_path / "reference"}))  # uninterrupted, in this process
    killed, candidates = config_file("killed"), tmp_path / "killed" / "candidates.jsonl"
    rng, tried = random.Random(7), 0
    # Kill right after candidates.jsonl grows, then after random delays past a growth (mid-group, mid-write).
    delays = [0.0, 0.003, *(rng.uniform(0.01, 0.3) for _ in range(KILLS - 2))]
    for delay in delays:
        before, proc = size(candidates), start(["sample", killed, "-q"])
        while proc.poll() is None and size(candidates) <= before:
            time.sleep(0.002)
        time.sleep(delay)
        tried += kill(proc)
        CorpusDir(tmp_path / "killed").candidates()  # readable after every kill: a torn line is skipped
    run_sample(config.model_copy(update={"output_dir": tmp_path / "killed"}))  # one rerun finishes what the kills left
    result, want = jsonl.read(candidates), jsonl.read(tmp_path / "reference" / "candidates.jsonl")
    ids = [c["id"] for c in result]
    lost, duplicates = len(set(by_id(want)) - set(ids)), len(ids) - len(set(ids))
    print(f"\nsample kill test: {tried} of {len(delays)} kills landed mid-run, {len(delays) + 1} runs, the rerun "
          f"finished; {lost} lines lost, {duplicates} duplicates")
    assert lost == duplicates == 0 and len(ids) == PROMPTS_KILLED * 3
    assert sorted(sum(c["prompt_index"] == i for c in result) for i in range(PROMPTS_KILLED)) == [3] * PROMPTS_KILLED
    assert by_id(result) == by_id(want)  # seeded per prompt: what the uninterrupted run drew, scores and all
    assert by_id(jsonl.read(tmp_path / "killed" / "corpus.jsonl")) == by_id(jsonl.read(tmp_path / "reference" / "corpus.jsonl"))
    assert tried >= len(delays) - 1  # a kill that came after the last group met a finished run
    assert not list((tmp_path / "killed").glob(".*.tmp"))  # temporary files a kill left are swept


# --- kill tests: the review page's decisions ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen) -> None:
    for _ in range(600):
        assert proc.poll() is None, proc.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("the review server did not start")


def test_review_decisions_survive_sigkill_of_the_server(small_corpus):
    port, ids = free_port(), [c["id"] for c in small_corpus.candidates()]
    acked, unacked, stop, counter = set(), set(), threading.Event(), iter(range(10**6))
    lock = threading.Lock()

    def client(seed: int):
        rng = random.Random(seed)
        while not stop.is_set():
            with lock:
                k = next(counter)
            action = rng.choice(["accept", "reject", "edit"])
            body = json.dumps({"id": rng.choice(ids), "action": action, "note": f"k{k}",
                               "text": f"edited {k}" if action == "edit" else None})
            try:
                conn = HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("POST", "/api/decision", body, {"Content-Type": "application/json"})
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                ok = False
            (acked if ok else unacked).add(f"k{k}")  # a failed request is never retried: no double sends
            if not ok:
                time.sleep(0.02)

    clients = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    rng, tried = random.Random(3), 0
    server = start(["audit-corpus", small_corpus.path, "--port", port, "--no-open"])
    wait_listening(port, server)
    for t in clients:
        t.start()
    try:
        for _ in range(2 * KILLS):
            time.sleep(rng.uniform(0.1, 0.6))
            tried += kill(server)
            jsonl.read(small_corpus.decisions_path)  # a torn line, if any, never breaks reading
            server = start(["audit-corpus", small_corpus.path, "--port", port, "--no-open"])
            wait_listening(port, server)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in clients:
            t.join()
        kill(server)
    logged = [d["note"] for d in jsonl.read(small_corpus.decisions_path)]
    lost, duplicates = acked - set(logged), len(logged) - len(set(logged))
    assert not lost and duplicates == 0, (sorted(lost), duplicates)
    assert set(logged) <= acked | unacked and len(set(logged) - acked) <= 2 * tried  # in flight at a kill, one a client
    assert len(acked) > 20 and tried == 2 * KILLS
    served = small_corpus.corpus_path.read_text()
    small_corpus.rebuild()
    assert small_corpus.corpus_path.read_text() == served  # corpus.jsonl is the decisions applied, after every kill
    assert not list(small_corpus.path.glob(".*.tmp"))  # temporary files a kill left are swept
    print(f"\nreview kill test: {tried} kills, all survived; {len(acked)} decisions acknowledged, "
          f"{len(set(logged) - acked)} logged unacknowledged (in flight at a kill), {len(lost)} lost, {duplicates} duplicates")

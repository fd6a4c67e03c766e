"""The remote judge against a real HTTP server serving a tiny model's true logprobs (tests/judge_server.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from judge_server import JudgeServer

from tether.errors import TetherError
from tether.judge.evaluator import Evaluator
from tether.judge.remote import RemoteEvaluator, make_evaluator, parse_remote

CHEERFUL = Path(__file__).resolve().parent.parent / "examples" / "cheerful.yaml"
TEXTS = ["The sun is out and we laugh.", "The dog died.", "yes yes yes <eos> <start_of_image> yes",
         "Once upon a time a girl walked her dog on a clear day; everything was bright and happy."]


@pytest.fixture(scope="module")
def local(tiny_gemma, tiny_tokenizer):
    return Evaluator(tiny_gemma, CHEERFUL, tokenizer=tiny_tokenizer, batch_size=3, with_negations=True)


@pytest.fixture(scope="module")
def server(tiny_gemma, tiny_tokenizer):
    with JudgeServer(tiny_gemma, tiny_tokenizer, "tiny") as s:
        yield s


def test_whole_vocabulary_top_k_equals_the_local_evaluator(local, server, tiny_tokenizer):
    remote = RemoteEvaluator(server.url, "tiny", CHEERFUL, tokenizer=tiny_tokenizer, top_k=len(tiny_tokenizer),
                             batch_size=3, with_negations=True)
    want, got = local.score(TEXTS), remote.score(TEXTS)
    np.testing.assert_allclose(got.log_odds, want.log_odds, atol=1e-4)
    np.testing.assert_allclose(got.neg_log_odds, want.neg_log_odds, atol=1e-4)
    np.testing.assert_allclose(got.total(), want.total(), atol=1e-4)
    assert np.all(got.unseen_mass < 1e-4) and want.unseen_mass is None
    assert "cheerful/unseen_mass" in got.records()[0] and "cheerful/unseen_mass" not in want.records()[0]


def test_small_top_k_sums_what_it_sees_and_bounds_what_it_does_not(local, server, tiny_tokenizer):
    k = 40
    remote = RemoteEvaluator(server.url, "tiny", CHEERFUL, tokenizer=tiny_tokenizer, top_k=k, batch_size=2)
    got = remote.score(TEXTS)
    probe = local.probes[0]
    rows = [list(local._encode_text(t, i)[0]) + list(probe.tail_ids) for i, t in enumerate(TEXTS)]
    with torch.inference_mode():
        logp = local._answer_logprobs(0, rows)
    top = logp.topk(k)
    for i in range(len(TEXTS)):
        ids, values = top.indices[i].tolist(), top.values[i]
        seen_yes = [v for t, v in zip(ids, values) if t in set(local.yes_ids.tolist())]
        seen_no = [v for t, v in zip(ids, values) if t in set(local.no_ids.tolist())]
        floor = values.min()
        yes = torch.logsumexp(torch.stack(seen_yes), 0) if seen_yes else floor
        no = torch.logsumexp(torch.stack(seen_no), 0) if seen_no else floor
        assert got.log_odds[i, 0] == pytest.approx(float(yes - no), abs=1e-4)
        assert got.unseen_mass[i, 0] == pytest.approx(1 - float(values.exp().sum()), abs=1e-4)
        assert 0 < got.unseen_mass[i, 0] < 1
    assert np.isfinite(got.total()).all()


def test_servers_that_key_by_token_text_are_read_too(local, tiny_gemma, tiny_tokenizer):
    with JudgeServer(tiny_gemma, tiny_tokenizer, "tiny", keys="text") as s:
        remote = RemoteEvaluator(s.url, "tiny", CHEERFUL, tokenizer=tiny_tokenizer, top_k=len(tiny_tokenizer))
        got = remote.score(TEXTS[:2])
    np.testing.assert_allclose(got.log_odds, local.score(TEXTS[:2]).log_odds, atol=1e-4)


def test_bad_url_unreachable_server_and_wrong_model_are_one_line_errors(server, tiny_tokenizer):
    for spec in ("openai:localhost:8000#m", "openai:http://127.0.0.1:8000/v1", "openai:ftp://x/v1#m"):
        with pytest.raises(TetherError, match="write openai:http://HOST:PORT/v1#MODEL"):
            parse_remote(spec)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(TetherError, match="cannot reach it") as e:
        RemoteEvaluator(f"http://127.0.0.1:{port}/v1", "tiny", CHEERFUL, tokenizer=tiny_tokenizer)
    assert "\n" not in str(e.value)
    with pytest.raises(TetherError, match="serves tiny, not 'other'"):
        RemoteEvaluator(server.url, "other", CHEERFUL, tokenizer=tiny_tokenizer)
    with pytest.raises(TetherError, match="no /completions endpoint"):
        RemoteEvaluator(server.url.removesuffix("/v1"), "tiny", CHEERFUL, tokenizer=tiny_tokenizer).score(["a"])


def test_make_evaluator_reads_the_openai_spec(server, tiny_model_dir):
    # MODEL names the tokenizer too: the tiny model folder, served under its path
    from judge_server import JudgeServer as Served
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    with Served(model, AutoTokenizer.from_pretrained(str(tiny_model_dir)), str(tiny_model_dir)) as s:
        judge = make_evaluator(f"openai:{s.url}#{tiny_model_dir}", CHEERFUL, top_k=5)
        assert isinstance(judge, RemoteEvaluator) and judge.score(["A sunny day."]).log_odds.shape == (1, 1)


@pytest.mark.gemma
def test_embedded_gemma_over_http_equals_the_local_judge():
    from tether.infra.models import EMBEDDED_LM, load_causal_lm

    model, tokenizer = load_causal_lm(EMBEDDED_LM, device="cpu")
    local = Evaluator(model, CHEERFUL, tokenizer=tokenizer)
    with JudgeServer(model, tokenizer, EMBEDDED_LM) as s:
        remote = RemoteEvaluator(s.url, EMBEDDED_LM, CHEERFUL, tokenizer=tokenizer, top_k=20)
        got = remote.score(TEXTS)
    want = local.score(TEXTS)
    seen = got.unseen_mass[:, 0] < 0.5  # the judge is sure enough that yes and no are in its top 20
    assert seen.any()
    np.testing.assert_allclose(got.log_odds[seen], want.log_odds[seen], atol=1e-3)

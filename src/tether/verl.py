"""verl's custom reward function: the constitution's score, from a local judge or a `tether serve` service.

verl loads a reward function by file and name (`custom_reward_function.path` and `.name`;
`reward_kwargs` are passed as keyword arguments) and calls it once per sample, as

    compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **reward_kwargs)

This file is that function (`python -c "import tether.verl as m; print(m.__file__)"` prints
the path to give verl; examples/verl_reward.yaml is a complete config). It returns a dict
with `score` (the combined reward, signed log-odds) and `tether/NAME` per principle: the
same keys for every sample, as verl requires. `compute_score_batch` takes verl's batch
reward manager's lists and sends them in one request.

Where it scores (keyword arguments, or the environment when verl's config cannot carry them):
- `url` / TETHER_SERVE_URL: a running `tether serve` (e.g. http://127.0.0.1:5000); the
  service batches the calls of every worker and logs the run for `tether report`.
  `token` / TETHER_SERVE_TOKEN is sent as a bearer token.
- else `constitution` / TETHER_CONSTITUTION with `model` / TETHER_JUDGE_MODEL: a judge
  loaded once in this process (one text a call: slow; the service is the fast path).

The prompt is judged with the response when the dataset's `extra_info` carries it as
`extra_info["prompt"]` (as `tether tune` judges prompt + completion); otherwise the
response alone. `ground_truth` is logged as the sample's label.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Sequence

_LOCK = threading.Lock()  # a torch model is not shared between threads: one local judge call at a time


def compute_score(data_source=None, solution_str: str = "", ground_truth=None, extra_info=None, **kwargs) -> dict:
    """One sample's reward for verl: {"score": float, "tether/NAME": float per principle}."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]


def compute_score_batch(data_sources: Sequence, solution_strs: Sequence[str], ground_truths: Sequence,
                        extra_infos: Sequence, *, url: str | None = None, token: str | None = None,
                        constitution: str | None = None, model: str | None = None, debias: bool | None = None,
                        device: str = "auto", timeout: float = 600.0, **_ignored) -> list[dict]:
    """Many samples at once (verl's BatchRewardManager); one request to the service, or one judge call."""
    prompts = [_prompt_of(info) for info in extra_infos]
    responses = [str(s) for s in solution_strs]
    url = url or os.environ.get("TETHER_SERVE_URL")
    if url:
        body = {"query": [p + r for p, r in zip(prompts, responses)], "prompts": prompts,
                "labels": [_jsonable(g) for g in ground_truths]}
        answer = _post(url, body, token or os.environ.get("TETHER_SERVE_TOKEN"), timeout)
        extra = answer.get("extra_logs", {})
        return [{"score": float(answer["rewards"][i]), **{k: float(v[i]) for k, v in sorted(extra.items())}}
                for i in range(len(responses))]
    constitution = constitution or os.environ.get("TETHER_CONSTITUTION")
    if not constitution:
        from tether.errors import TetherError

        raise TetherError("tether.verl: say where to score: reward_kwargs url (a `tether serve`) or constitution "
                          "(a local judge), or set TETHER_SERVE_URL or TETHER_CONSTITUTION")
    from tether.infra.models import EMBEDDED_LM

    evaluator = _evaluator(str(constitution), model or os.environ.get("TETHER_JUDGE_MODEL") or EMBEDDED_LM, debias, device)
    with _LOCK:
        result = evaluator.score([p + r for p, r in zip(prompts, responses)])
    totals, scores = result.total(), result.scores()
    return [{"score": float(totals[i]), **{f"tether/{name}": float(scores[i, k]) for k, name in enumerate(result.names)}}
            for i in range(len(responses))]


def _prompt_of(extra_info) -> str:
    prompt = extra_info.get("prompt") if isinstance(extra_info, dict) else None
    return prompt if isinstance(prompt, str) else ""


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)  # numpy arrays, custom objects: logged as text


def _post(url: str, body: dict, token: str | None, timeout: float) -> dict:
    """POST to the service's /get_reward; its one-line error becomes the exception's message."""
    import urllib.error
    import urllib.request

    from tether.errors import TetherError

    endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/get_reward") else "/get_reward")
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(endpoint, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            message = e.reason
        raise TetherError(f"{endpoint}: {e.code} {message}") from None
    except urllib.error.URLError as e:
        raise TetherError(f"{endpoint}: cannot reach the service ({e.reason}); is `tether serve` running?") from None


@functools.cache
def _evaluator(constitution: str, model: str, debias: bool | None, device: str):
    from tether.judge.evaluator import Evaluator

    return Evaluator(model, constitution, debias=debias, device=device)

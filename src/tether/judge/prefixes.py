"""Every prefix of a text judged as if alone, with one KV cache grown along the text (process supervision).

Step k of a completion is judged on the prompt and steps 1..k (judge/steps.py). Judged afresh, k prefixes of one
text cost k texts. Here each text's longest prefix runs once on the probe's cached few-shot prefix; then every
prefix's question tail runs in one batch on that cache repeated once per prefix, each row seeing the text only up
to where its own tokens agree with the longest prefix's: a token a longer prefix merges across the cut is
masked, and the prefix's own tokens run before its tail. So each prefix is read exactly as `Evaluator.score`
reads it alone (tests/test_steps.py holds the two equal), at about half the cost (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from tether.errors import TetherError
from tether.judge.evaluator import ScoreResult, _cache_kwarg


class _Outgrown(Exception):
    """The grown cache would pass the model's sliding window: `score_prefixes` falls back to `score`."""


@torch.inference_mode()
def score_prefixes(ev, texts: Sequence[str], cuts: Sequence[Sequence[int]]) -> ScoreResult:
    """`ev.score([t[:c] for t, cs in zip(texts, cuts) for c in cs])`, at the cost of each text once and each
    prefix's question tail (the module docstring). Falls back to `ev.score` when a prefix is truncated or empty,
    or when the cache could outgrow the model's sliding window."""
    flat = [t[:c] for t, cs in zip(texts, cuts) for c in cs]
    if not flat:
        raise TetherError("no texts to score")
    encoded = [ev._encode_text(t, i) for i, t in enumerate(flat)]
    window = getattr(getattr(ev.model, "config", None), "sliding_window", None)  # _grown checks it, batch by batch
    if any(excess or not ids for ids, excess in encoded):
        return ev.score(flat)
    rows, start = [], 0  # per text: its prefixes' token lists and their flat indices
    for cs in cuts:
        rows.append([(start + k, list(encoded[start + k][0])) for k in range(len(cs))])
        start += len(cs)
    n, k = len(flat), len(ev.constitution.principles)
    lp_yes = {neg: np.full((n, k), np.nan) for neg in (False, True)}
    lp_no = {neg: np.full((n, k), np.nan) for neg in (False, True)}
    order = sorted((i for i in range(len(rows)) if rows[i]), key=lambda i: -len(rows[i][-1][1]))
    try:
        for probe_index, probe in enumerate(ev.probes):
            for b in range(0, len(order), ev.batch_size):
                batch = [rows[i] for i in order[b: b + ev.batch_size]]
                for index, logprobs in _grown(ev, probe_index, batch, window):
                    lp_yes[probe.negated][index, probe.principle] = torch.logsumexp(logprobs[ev.yes_ids], -1).item()
                    lp_no[probe.negated][index, probe.principle] = torch.logsumexp(logprobs[ev.no_ids], -1).item()
    except _Outgrown:
        return ev.score(flat)
    log_odds = lp_yes[False] - lp_no[False]
    return ScoreResult(
        constitution=ev.constitution, texts=flat, log_odds=log_odds, p_yes=1 / (1 + np.exp(-log_odds)),
        p_neither=1 - np.exp(lp_yes[False]) - np.exp(lp_no[False]), neg_log_odds=lp_yes[True] - lp_no[True],
        neg_p_neither=1 - np.exp(lp_yes[True]) - np.exp(lp_no[True]), truncated_tokens=np.zeros(n, dtype=int),
        unseen_mass=None)


def _grown(ev, probe_index: int, batch: list[list[tuple[int, list[int]]]], window: int | None):
    """Yield (flat index, log-probabilities at the answer slot) for every prefix of every text in the batch.

    Each text's longest prefix runs once on top of the probe's cached prefix; then every prefix's question tail
    runs in one batch, on that cache repeated once per prefix, each row seeing the text only up to where its
    prefix's tokens agree with the longest one's (the rest of its tokens run before its tail)."""
    cache, prefix_len = ev._prefix_cache(probe_index)
    tail = list(ev.probes[probe_index].tail_ids)
    device = ev.device
    texts = [r[-1][1] for r in batch]
    width = max(len(t) for t in texts)
    if window and prefix_len + width + width + len(tail) >= window:  # a repeated row may run its text again
        raise _Outgrown
    cache = copy.deepcopy(cache) if cache is not None else None
    if cache is not None:
        cache.batch_repeat_interleave(len(batch))
    text_mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in texts], device=device)
    ones = torch.ones(len(batch), prefix_len, dtype=torch.long, device=device)
    out = _run(ev, cache, [t + [ev.pad_id] * (width - len(t)) for t in texts], torch.cat([ones, text_mask], 1),
                    [prefix_len] * len(batch))
    cache = out["cache"] if "cache" in out else out.past_key_values  # noqa: SIM401
    steps = max(len(r) for r in batch)
    rows, seen, starts, index = [], [], [], []
    for j, r in enumerate(batch):
        for k in range(steps):
            ids = r[k][1] if k < len(r) else texts[j]
            common = 0
            while common < min(len(ids), len(texts[j])) and ids[common] == texts[j][common]:
                common += 1
            rows.append(ids[common:] + tail)
            seen.append([1] * common + [0] * (width - common))
            starts.append(prefix_len + common)
            index.append(r[k][0] if k < len(r) else None)
    cache.batch_repeat_interleave(steps)  # row j*steps + k: text j's k-th prefix
    longest = max(len(x) for x in rows)
    padded = [[ev.pad_id] * (longest - len(x)) + x for x in rows]  # left-padded: every answer slot is last
    pads = [[0] * (longest - len(x)) + [1] * len(x) for x in rows]
    attention = torch.cat([torch.ones(len(rows), prefix_len, dtype=torch.long, device=device),
                           torch.tensor(seen, device=device), torch.tensor(pads, device=device)], dim=1)
    starts = [s - (longest - len(x)) for s, x in zip(starts, rows)]  # so each real token keeps its position
    logits = _run(ev, cache, padded, attention, starts, logits=True)
    for row, i in enumerate(index):
        if i is not None:
            yield i, torch.log_softmax(logits[row].float(), dim=-1)


def _run(ev, cache, rows, attention, starts, logits: bool = False):
    """The rows run on top of `cache` (which grows): the model's output, or with `logits` each row's last logits."""
    width = len(rows[0])
    input_ids = torch.tensor(rows, device=ev.device)
    positions = torch.tensor(starts, device=ev.device)[:, None] + torch.arange(width, device=ev.device)[None, :]
    if not logits:
        return ev.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                          **{_cache_kwarg(ev.model): cache}, use_cache=True, logits_to_keep=1)
    if ev._head_is_plain:
        decoder = ev.model.get_decoder()
        hidden = decoder(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                         **{_cache_kwarg(decoder): cache}, use_cache=True).last_hidden_state
        return ev._head(hidden[:, -1])
    return ev.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                      **{_cache_kwarg(ev.model): cache}, use_cache=True).logits[:, -1]

"""The evaluator: a language model answers each principle's yes/no question about a text.

For a text and a question, the score is the log-odds of "yes" over "no" at the answer slot,
each word's probability summed over all its token variants (" yes", "Yes", ...). Mass on
neither word is reported, not dropped.

    from tether import Evaluator
    result = Evaluator("embedded:gemma-3-270m", "examples/cheerful.yaml").score(["A sunny day!"])
    result.total, result.records()

Speed (see benchmarks/evaluator_throughput.py): each probe's shared prefix (preamble and
few-shot examples) runs once and its KV cache is copied into every batch; texts are
batched by length with right padding; only the hidden state at each row's answer slot
goes through the vocabulary head. Every tensor is built on `model.device`, so the judge
runs wherever its model was put (`device`, `dtype`: `tether.infra.models.resolve_device`).
A judged text is capped at `max_text_tokens` (default 2048): a 100 KB text would otherwise
fill a 32k context and take minutes on a CPU for one score. Safety: judged text is tokenized by
`SafeTokenizer.encode_untrusted`, so control-token strings in it stay plain text; with
`format: chat` the prompt around it comes from the judge's chat template (`judge/chat.py`).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from tether.errors import TetherError
from tether.infra import progress
from tether.infra.models import cpu_has_bf16, load_causal_lm
from tether.infra.tokens import SafeTokenizer, word_variant_ids
from tether.judge.combine import COMBINERS
from tether.judge.constitution import (
    Constitution,
    load_constitution,
    read_chat_template,
)
from tether.judge.prompts import build_probes, text_lead

LongText = Literal["truncate_left", "truncate_right", "error"]
DEFAULT_MAX_TEXT_TOKENS = 2048  # far above a completion; 32k-token texts cost minutes each on a CPU


@dataclass
class ScoreResult:
    """Per-text, per-principle verdicts. Arrays are (texts, principles) unless noted."""

    constitution: Constitution
    texts: list[str]
    log_odds: np.ndarray  # log P(yes)/P(no) for the question as written
    p_yes: np.ndarray  # P(yes) / (P(yes) + P(no))
    p_neither: np.ndarray  # probability on tokens that are neither yes nor no
    neg_log_odds: np.ndarray  # the same for the negated question; NaN where not asked
    neg_p_neither: np.ndarray
    truncated_tokens: np.ndarray  # (texts,) tokens cut from each text to fit the context
    unseen_mass: np.ndarray | None = None  # a remote judge's top-k: probability it did not see (judge/remote.py)
    debiased: np.ndarray = field(init=False)  # (principles,) which principles score debiased

    def __post_init__(self):
        c = self.constitution
        self.debiased = np.array([c.debiased(p) for p in c.principles])

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.constitution.principles]

    def scores(self, debiased: bool | None = None) -> np.ndarray:
        """Signed scores (positive = good). Debiased: (question - negation) / 2.

        `debiased=None` follows the constitution; True/False forces one mode for all
        principles (the negation must have been asked for True).
        """
        signs = np.array([p.sign for p in self.constitution.principles])
        mode = self.debiased if debiased is None else np.full(len(signs), debiased)
        paired = (self.log_odds - self.neg_log_odds) / 2
        return signs * np.where(mode, paired, self.log_odds)

    def total(self, debiased: bool | None = None) -> np.ndarray:
        c = self.constitution
        weights = np.array([p.weight for p in c.principles])
        return COMBINERS[c.combine](self.scores(debiased), weights, c.softmin_temperature)

    def records(self) -> list[dict]:
        """One flat dict per text, for JSONL or CSV."""
        scores, total = self.scores(), self.total()
        out = []
        for i, text in enumerate(self.texts):
            row: dict = {"text": text, "total": round(float(total[i]), 5)}
            for k, name in enumerate(self.names):
                row[f"{name}/score"] = round(float(scores[i, k]), 5)
                row[f"{name}/log_odds"] = round(float(self.log_odds[i, k]), 5)
                row[f"{name}/p_yes"] = round(float(self.p_yes[i, k]), 5)
                row[f"{name}/p_neither"] = round(float(self.p_neither[i, k]), 5)
                if not math.isnan(self.neg_log_odds[i, k]):
                    row[f"{name}/neg_log_odds"] = round(float(self.neg_log_odds[i, k]), 5)
                if self.unseen_mass is not None:
                    row[f"{name}/unseen_mass"] = round(float(self.unseen_mass[i, k]), 5)
            row["truncated_tokens"] = int(self.truncated_tokens[i])
            out.append(row)
        return out


class Evaluator:
    """Scores texts against a constitution with a causal LM judge.

    Args:
        model: a hub id, a local folder, `embedded:gemma-3-270m`, or a loaded model (then
            pass `tokenizer` too).
        constitution: a `Constitution` or the path of its YAML file.
        debias: force debiased scoring on or off for every principle (None: as written).
        combine / softmin_temperature: override the constitution's way of combining.
        with_negations: also ask every negated question (the audit compares both modes).
        batch_size: texts per forward pass.
        long_text: a text longer than the context is cut from the left (keeping its end,
            which sits next to the question and weighs most on the answer), from the right,
            or rejected with an error.
        max_text_tokens: the most tokens of a text the judge reads; None takes 2048, for
            speed (a text's cost grows faster than its length); raise it up to the context.
        format / chat_template: override the constitution's prompt format (`plain | chat`) and
            its fallback chat template (Jinja text or a .jinja path) for a tokenizer without one.
        device / dtype: where and in what precision to load a model given by name
            (`auto | cpu | cuda | cuda:N`, `float32 | bfloat16`); a loaded model stays where it is.
    """

    def __init__(
        self,
        model,
        constitution: Constitution | str | Path,
        *,
        tokenizer=None,
        debias: bool | None = None,
        combine: str | None = None,
        softmin_temperature: float | None = None,
        with_negations: bool = False,
        batch_size: int = 16,
        long_text: LongText = "truncate_left",
        max_text_tokens: int | None = None,
        trust_remote_code: bool = False,
        device: str = "auto",
        dtype: str = "float32",
        format: Literal["plain", "chat"] | None = None,
        chat_template: str | None = None,
    ):
        if not isinstance(constitution, Constitution):
            constitution = load_constitution(constitution)
        overrides = {"debias": debias, "combine": combine, "softmin_temperature": softmin_temperature,
                     "format": format, "chat_template": chat_template}
        self.constitution = read_chat_template(
            constitution.model_copy(update={k: v for k, v in overrides.items() if v is not None}))
        if debias is not None:  # a global switch beats the per-principle settings
            self.constitution.principles = [p.model_copy(update={"debias": None}) for p in constitution.principles]
        if isinstance(model, str):
            model, tokenizer = load_causal_lm(model, trust_remote_code=trust_remote_code, device=device, dtype=dtype, fast_head=True)
        elif tokenizer is None:
            raise TypeError("pass `tokenizer=` with a loaded model")
        if long_text not in ("truncate_left", "truncate_right", "error"):
            raise TetherError(f"long_text={long_text!r}: write truncate_left, truncate_right or error")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.long_text = batch_size, long_text
        if model.dtype == torch.bfloat16 and model.device.type == "cpu" and not cpu_has_bf16():
            progress.console.print("[yellow]note:[/] this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): a "
                                   "bf16 judge runs emulated, ~5x slower than float32 (docs/benchmarks.md)", highlight=False)
        self.safe = SafeTokenizer(tokenizer)
        self.device = model.device
        self.yes_ids = torch.tensor(word_variant_ids(tokenizer, "yes", self.safe.control_ids), device=self.device)
        self.no_ids = torch.tensor(word_variant_ids(tokenizer, "no", self.safe.control_ids), device=self.device)
        self.probes = build_probes(self.constitution, self.safe, with_negations)
        self.lead = text_lead(self.constitution)
        context = getattr(model.config, "max_position_embeddings", None) or 2048
        longest_frame = max(len(p.prefix_ids) + len(p.tail_ids) for p in self.probes)
        self.text_budget = min(max_text_tokens or DEFAULT_MAX_TEXT_TOKENS, context - longest_frame)
        if self.text_budget < 1:
            raise TetherError(f"the prompt alone ({longest_frame} tokens) fills the judge's context ({context}); shorten the preamble or examples")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._prefix_caches: dict[int, tuple] = {}
        self._head_is_plain = self._check_plain_head()

    # --- public -------------------------------------------------------------------------

    @torch.inference_mode()
    def score(self, texts: Sequence[str], show_progress: bool = False) -> ScoreResult:
        """Judge every text on every principle (and negation where asked)."""
        texts = list(texts)
        if not texts:
            raise TetherError("no texts to score")
        encoded, truncated = zip(*(self._encode_text(t, i) for i, t in enumerate(texts)))
        n, k = len(texts), len(self.constitution.principles)
        lp_yes = {neg: np.full((n, k), np.nan) for neg in (False, True)}
        lp_no = {neg: np.full((n, k), np.nan) for neg in (False, True)}
        unseen = np.full((n, k), np.nan)
        order = sorted(range(n), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
        batches = [order[s : s + self.batch_size] for s in range(0, n, self.batch_size)]
        work = [(probe, batch) for probe in range(len(self.probes)) for batch in batches]
        items = progress.track(work, "Judging", total=len(work)) if show_progress else work
        for probe_index, batch in items:
            probe = self.probes[probe_index]
            yes, no, hidden = self._yes_no(probe_index, [list(encoded[i]) + list(probe.tail_ids) for i in batch])
            lp_yes[probe.negated][batch, probe.principle] = yes
            lp_no[probe.negated][batch, probe.principle] = no
            if hidden is not None:  # the larger of the question's and its negation's
                unseen[batch, probe.principle] = np.fmax(unseen[batch, probe.principle], hidden)
        log_odds = lp_yes[False] - lp_no[False]
        return ScoreResult(
            constitution=self.constitution,
            texts=texts,
            log_odds=log_odds,
            p_yes=1 / (1 + np.exp(-log_odds)),
            p_neither=1 - np.exp(lp_yes[False]) - np.exp(lp_no[False]),
            neg_log_odds=lp_yes[True] - lp_no[True],
            neg_p_neither=1 - np.exp(lp_yes[True]) - np.exp(lp_no[True]),
            truncated_tokens=np.array(truncated),
            unseen_mass=None if np.isnan(unseen).all() else unseen,
        )

    # --- internals ----------------------------------------------------------------------

    def _encode_text(self, text: str, index: int) -> tuple[list[int], int]:
        ids = self.safe.encode_untrusted(self.lead + text)
        excess = len(ids) - self.text_budget
        if excess <= 0:
            return ids, 0
        if self.long_text == "error":
            raise TetherError(
                f"text {index + 1} is {len(ids)} tokens, over the judge's limit of {self.text_budget}; "
                f"shorten it, raise max_text_tokens, or use long_text=truncate_left"
            )
        return (ids[excess:] if self.long_text == "truncate_left" else ids[: self.text_budget]), excess

    def _yes_no(self, probe_index: int, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """log P(yes), log P(no) at each row's answer slot, and the mass the judge could not see (None: all of it seen)."""
        logprobs = self._answer_logprobs(probe_index, rows)
        yes = torch.logsumexp(logprobs[:, self.yes_ids], dim=-1).cpu().numpy()
        return yes, torch.logsumexp(logprobs[:, self.no_ids], dim=-1).cpu().numpy(), None

    def _prefix_cache(self, probe_index: int):
        """(cache, length) of a probe's prefix, computed on first use and kept."""
        if probe_index not in self._prefix_caches:
            ids = self.probes[probe_index].prefix_ids
            if not ids:
                self._prefix_caches[probe_index] = (None, 0)
            else:
                out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1)
                # not out.get("cache", out.past_key_values): reading the old name warns
                self._prefix_caches[probe_index] = (out["cache"] if "cache" in out else out.past_key_values, len(ids))  # noqa: SIM401
        return self._prefix_caches[probe_index]

    def _answer_logprobs(self, probe_index: int, rows: list[list[int]]) -> torch.Tensor:
        """Log-probabilities over the vocabulary at each row's answer slot: (rows, vocab)."""
        cache, prefix_len = self._prefix_cache(probe_index)
        device = self.device
        lengths = torch.tensor([len(r) for r in rows], device=device)
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows], device=device)
        # Right padding: each row's real tokens sit at prefix_len .. prefix_len+len-1, and
        # causal attention keeps the pads after them from touching the answer slot.
        attention = torch.cat([torch.ones(len(rows), prefix_len, dtype=torch.long, device=device),
                               (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()], dim=1)
        positions = (prefix_len + torch.arange(width, device=device))[None, :].expand(len(rows), -1)
        batch_cache = None
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(rows))
        last = lengths - 1
        if self._head_is_plain:
            decoder = self.model.get_decoder()
            hidden = decoder(
                input_ids=input_ids, attention_mask=attention, position_ids=positions,
                **{_cache_kwarg(decoder): batch_cache}, use_cache=cache is not None,
            ).last_hidden_state
            logits = self._head(hidden[torch.arange(len(rows), device=device), last])
        else:  # a model with an unusual head: compute all logits and pick the slots
            logits = self.model(
                input_ids=input_ids, attention_mask=attention, position_ids=positions,
                **{_cache_kwarg(self.model): batch_cache}, use_cache=cache is not None,
            ).logits[torch.arange(len(rows), device=device), last]
        return torch.log_softmax(logits.float(), dim=-1)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    @torch.inference_mode()
    def _check_plain_head(self) -> bool:
        """True if decoder + output embeddings (+ softcap) reproduce the model's own logits.

        Checked once on a few tokens, so the fast path is never silently wrong for an
        architecture that scales or post-processes its logits in another way.
        """
        ids = torch.tensor([list(self.probes[0].prefix_ids[:6]) + list(self.probes[0].tail_ids[:6])], device=self.device)
        reference = self.model(input_ids=ids).logits[0, -1]
        try:
            fast = self._head(self.model.get_decoder()(input_ids=ids).last_hidden_state[0, -1])
        except (AttributeError, TypeError, NotImplementedError):
            return False
        return torch.allclose(fast, reference, atol=1e-4, rtol=1e-4)


@functools.cache
def _cache_kwarg_of(forward) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _cache_kwarg(module) -> str:
    """transformers 5.2x renamed the KV cache argument `past_key_values` to `cache` (the old name
    warns); older and remote-code models know only the old name."""
    return _cache_kwarg_of(type(module).forward)

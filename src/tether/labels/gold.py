"""A gold judge fitted to a person's labels: logistic regression on text features.

    tether gold fit labels.jsonl --label good --out golds/good          # cross-validated AUC printed
    tether gold score golds/good samples.jsonl --out gold_scores.jsonl    # a `score` per row, log-odds

    GoldJudge.load("golds/good").score(prompts, completions)           # numpy (n,), higher is better

Why this model: a few hundred labels fit a linear model on good features without
overfitting, its log-odds read like the constitution judge's, and it saves as plain
numbers (JSON, no pickle). Features (`--features`):
    minilm        all-MiniLM-L6-v2 embeddings of the completion and of the prompt, their
                  elementwise product and cosine similarity: "on task" is a relation between
                  prompt and completion, not a property of the completion alone.
    hidden:MODEL  the same four parts built from a causal LM's mean-pooled last hidden state.
MiniLM golds share the blind spots of the embedding-KL and utility defenses; `hidden:` is another
space. C is chosen by an inner CV; the AUC is cross-validated in folds grouped by prompt (a prompt's
items never on both sides). gold.json records the prompts' hashes, for leak checks.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tether.errors import TetherError
from tether.infra.texts import prompt_hash
from tether.labels.agreement import RESAMPLES, auc, auc_ci, read_labels
from tether.labels.gold_fit import CS, INNER_FOLDS, _fit, choose_c, cross_validate  # noqa: F401  (named here too)
from tether.labels.gold_readme import readme

FORMAT = "tether-gold/1"
MAX_HIDDEN_TOKENS = 512  # a text's first tokens for `hidden:` features; the pooled mean settles long before
FILES = ("gold.json", "README.md")


# --- features -------------------------------------------------------------------------


def check_features(kind: str) -> str:
    if kind == "minilm" or (kind.startswith("hidden:") and kind[len("hidden:"):]):
        return kind
    raise TetherError(f"--features {kind!r}: write minilm or hidden:MODEL (a causal LM: hub id, folder or embedded:gemma-3-270m)")


def features(kind: str, prompts: Sequence[str], completions: Sequence[str], device: str = "auto",
             trust_remote_code: bool = False) -> np.ndarray:
    """(n, 3·dim + 1): completion, prompt, their elementwise product, cosine similarity (unit vectors)."""
    unique = list(dict.fromkeys([*prompts, *completions]))  # a prompt shared by many items is encoded once
    vectors = dict(zip(unique, _encode(check_features(kind), unique, device, trust_remote_code)))
    c = np.stack([vectors[t] for t in completions])
    p = np.stack([vectors[t] for t in prompts])
    return np.hstack([c, p, c * p, (c * p).sum(axis=1, keepdims=True)]).astype(np.float64)


def _encode(kind: str, texts: list[str], device: str, trust_remote_code: bool = False) -> np.ndarray:
    if kind == "minilm":  # the embedded MiniLM: no code of its own to trust
        from tether.infra.models import embed

        return np.asarray(embed(_embedder(device), texts))
    return _hidden(kind[len("hidden:"):], texts, device, trust_remote_code=trust_remote_code)


@functools.cache
def _embedder(device: str):
    from tether.infra.models import _quiet_transformers, load_embedder

    _quiet_transformers()  # its weight-loading bar would print even under --quiet
    return load_embedder(device=device)


@functools.cache
def _causal_lm(name: str, device: str, trust_remote_code: bool = False):
    from tether.infra.models import load_causal_lm

    return load_causal_lm(name, device=device, trust_remote_code=trust_remote_code, fast_head=True)


def _hidden(model_name: str, texts: list[str], device: str, batch_size: int = 16,
            trust_remote_code: bool = False) -> np.ndarray:
    """Mean-pooled last hidden state of each text (unit length), tokenized as untrusted text."""
    import torch

    from tether.infra.tokens import SafeTokenizer

    model, tokenizer = _causal_lm(model_name, device, trust_remote_code)
    safe = SafeTokenizer(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    start = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    out = []
    for s in range(0, len(texts), batch_size):
        ids = [(start + safe.encode_untrusted(t))[:MAX_HIDDEN_TOKENS] or [pad] for t in texts[s: s + batch_size]]
        width = max(map(len, ids))
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=model.device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=model.device)
        with torch.inference_mode():
            hidden = model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()  # (B, T, d)
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    return np.concatenate(out)


# --- fitting --------------------------------------------------------------------------


def fit_gold(labels_path: str | Path, label: str, kind: str = "minilm", folds: int = 5, seed: int = 0,
             who: str | None = None, device: str = "auto", trust_remote_code: bool = False, weight=None,
             keep_oof: bool = False) -> dict:
    """Fit on every item, after a grouped cross-validation; returns the gold's metadata (gold.json).

    `weight(source) -> float` weighs each label in the fits (default 1); `keep_oof` adds `oof` (each label's
    out-of-fold log-odds), `oof_sources` and `oof_labels` to the result, to compare golds on held-out labels."""
    check_features(kind)
    if folds < 2:
        raise TetherError(f"--folds {folds}: cross-validation needs at least 2 folds")
    labels = read_labels(labels_path, who)
    sources, y = labels.question(label)
    prompts = [s.get("prompt") or "" for s in sources]
    groups = np.array(prompts)
    n_yes, n_no, n_prompts = int(y.sum()), int((~y).sum()), len(set(prompts))
    if not n_yes or not n_no:
        raise TetherError(f"{labels.path}: {label!r} has {n_yes} yes and {n_no} no answers; a judge needs both")
    if min(n_yes, n_no, n_prompts) < folds:
        raise TetherError(f"{labels.path}: {label!r} has {n_yes} yes, {n_no} no answers on {n_prompts} prompts; "
                          f"--folds {folds} needs at least {folds} of each (label more, or lower --folds)")
    X = features(kind, prompts, [s["completion"] for s in sources], device, trust_remote_code)
    w = np.array([weight(s) for s in sources], dtype=float) if weight is not None else None
    oof, fold_aucs, chosen = cross_validate(X, y, groups, folds, seed, w)
    C = choose_c(X, y, groups, seed, w)
    scaler, model = _fit(X, y, C, w)
    cv_auc = auc(oof, y)
    kept = {"oof": oof.tolist(), "oof_sources": sources, "oof_labels": y.tolist()} if keep_oof else {}
    return {**kept,
        "format": FORMAT, "label": label, "features": kind,
        "feature_parts": ["completion", "prompt", "completion*prompt", "cosine(completion, prompt)"],
        "model": "logistic regression (L2, liblinear) on standardized features", "C": C, "Cs": list(CS),
        "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0]),
        "scaler": {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()},
        "n": len(y), "yes": n_yes, "no": n_no, "prompts": n_prompts,
        "cv": {"auc": cv_auc, "ci": list(auc_ci(oof, y, RESAMPLES, seed)), "folds": folds, "grouped_by": "prompt",
               "fold_auc": [None if np.isnan(a) else a for a in fold_aucs], "fold_C": chosen, "inner_folds": INNER_FOLDS,
               "seed": seed, "resamples": RESAMPLES},
        "labels": {"path": str(labels_path), "sha256": labels.sha256, "who": who,
                   "prompt_sha256": sorted({prompt_hash(p) for p in prompts})},  # for leak checks (experiment.leaks)
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def save_gold(meta: dict, out: str | Path, force: bool = False) -> Path:
    """Write gold.json and README.md into `out`, atomically; an existing folder only with force, and only a gold's."""
    from tether.infra import atomic

    out = Path(out)
    check_out_dir(out, force)
    with atomic.folder(out) as building:
        atomic.write_json(building / "gold.json", meta)
        atomic.write_text(building / "README.md", readme(meta))
    return out


def check_out_dir(out: Path, force: bool) -> None:
    """A gold folder never replaces anything but a gold folder, and that only with --force."""
    if out.exists() and not out.is_dir():
        raise TetherError(f"{out}: is a file; --out takes a folder for the gold judge")
    if out.is_dir() and any(out.iterdir()):
        foreign = sorted(p.name for p in out.iterdir() if p.name not in FILES)
        if foreign:
            raise TetherError(f"{out}: holds files tether did not write ({', '.join(foreign[:5])}); choose another --out")
        if not force:
            raise TetherError(f"{out}: already holds a gold judge; pass --force to replace it")


# --- scoring --------------------------------------------------------------------------


@dataclass
class GoldScores:
    """Shaped like the evaluator's `ScoreResult` where a gold judge is read: `.total()`, `.scores()`, `.names`."""

    values: np.ndarray
    names: list[str]

    def total(self) -> np.ndarray:
        return self.values

    def scores(self) -> np.ndarray:
        return self.values[:, None]


@dataclass
class GoldJudge:
    meta: dict
    path: Path
    device: str = "auto"
    trust_remote_code: bool = False  # for hidden:MODEL features

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto", trust_remote_code: bool = False) -> GoldJudge:
        path = Path(folder)
        file = path / "gold.json"
        if not file.is_file():
            raise TetherError(f"{path}: not a gold judge folder (no gold.json); fit one with `tether gold fit`")
        try:
            meta = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TetherError(f"{file}: cannot read ({e})") from None
        if not isinstance(meta, dict):
            raise TetherError(f"{file}: not a {FORMAT} file (expected a JSON object, got {type(meta).__name__})")
        missing = [k for k in ("format", "features", "label", "coef", "intercept", "scaler") if k not in meta]
        if missing or meta["format"] != FORMAT:
            raise TetherError(f"{file}: not a {FORMAT} file (missing {', '.join(missing) or 'the format tag'})")
        return cls(meta, path, device, trust_remote_code)

    @property
    def name(self) -> str:
        return f"gold:{self.meta['label']}"

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """(n,) log-odds that the person would answer yes: higher is better."""
        if len(prompts) != len(completions):
            raise TetherError(f"{len(prompts)} prompts for {len(completions)} completions")
        if not completions:
            return np.zeros(0)
        X = features(self.meta["features"], list(prompts), list(completions), self.device, self.trust_remote_code)
        scaler = self.meta["scaler"]
        z = (X - np.asarray(scaler["mean"])) / np.asarray(scaler["scale"])
        return z @ np.asarray(self.meta["coef"]) + float(self.meta["intercept"])

    def score_texts(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> GoldScores:
        """Score like an evaluator is read (`.total()`); without prompts the prompt parts see empty text."""
        prompts = list(prompts) if prompts is not None else [""] * len(completions)
        return GoldScores(self.score(prompts, completions), [self.meta["label"]])


def score_file(folder: str | Path, texts: str | Path, out: str | Path, device: str = "auto",
               trust_remote_code: bool = False) -> int:
    """`tether gold score`: each row of TEXTS (.jsonl, prompt + completion) with a `score`; returns rows written."""
    from tether.infra import atomic
    from tether.infra.checks import check_out
    from tether.infra.texts import output_rows, read_texts

    gold = GoldJudge.load(folder, device, trust_remote_code)
    if Path(texts).suffix.lower() != ".jsonl":
        raise TetherError(f"{texts}: a gold judge reads .jsonl rows with `prompt` and `completion`")
    records = read_texts(texts)
    for r in records:
        if not isinstance(r.meta.get("completion"), str):
            raise TetherError(f"{texts}: line {r.meta['line']}: no `completion` field; the gold judge needs prompt + completion")
    check_out(out, (".jsonl", ".csv"), inputs=[texts])
    values = gold.score([r.meta.get("prompt") or "" for r in records], [r.meta["completion"] for r in records])
    rows = output_rows(records, [{"score": round(float(v), 4)} for v in values])
    atomic.write_records(out, rows)
    return len(rows)


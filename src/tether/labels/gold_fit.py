"""Fitting a gold: an L2 logistic regression on standardized features, its C chosen by grouped inner CV.

Labels may carry weights (a refit weighs the run's own answers above the starting labels: tune/refit.py);
the folds are grouped by prompt, so a prompt's completions never sit on both sides of a split.
"""

from __future__ import annotations

import numpy as np

from tether.labels.agreement import auc

CS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)  # a log grid: the inner CV picks the regularization
INNER_FOLDS = 3  # inside each outer fold's train side: few labels, so few folds


def _pick(w: np.ndarray | None, rows):
    return None if w is None else w[rows]


def _fit(X: np.ndarray, y: np.ndarray, C: float, w: np.ndarray | None = None):
    """Standardize, then an L2 logistic regression (labels weighted by `w`); returns (scaler, model)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    # liblinear's dual solver: with fewer labels than features (the usual case) it is ~10x faster than lbfgs
    model = LogisticRegression(C=C, solver="liblinear", dual=len(y) < X.shape[1], max_iter=5000, random_state=0)
    return scaler, model.fit(scaler.transform(X), y, sample_weight=w)


def _splits(y: np.ndarray, groups: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


def choose_c(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0, w: np.ndarray | None = None) -> float:
    """The C of `CS` with the best mean AUC over grouped inner folds (ties: the stronger regularization)."""
    if min(y.sum(), (~y).sum(), len(set(groups))) < INNER_FOLDS:
        return 1.0  # too few to split again: sklearn's default
    splits = [(a, b) for a, b in _splits(y, groups, INNER_FOLDS, seed) if 0 < y[b].sum() < len(b) and 0 < y[a].sum() < len(a)]
    if not splits:
        return 1.0
    means = []
    for C in CS:
        aucs = []
        for train, test in splits:
            scaler, model = _fit(X[train], y[train], C, _pick(w, train))
            aucs.append(auc(model.decision_function(scaler.transform(X[test])), y[test]))
        means.append(np.mean(aucs))
    return CS[int(np.argmax(means))]  # argmax takes the first best: the smallest C


def cross_validate(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0,
                   w: np.ndarray | None = None):
    """Out-of-fold log-odds for every item (folds grouped by prompt, C chosen inside each), fold AUCs, fold Cs."""
    oof, fold_aucs, chosen = np.zeros(len(y)), [], []
    for k, (train, test) in enumerate(_splits(y, groups, folds, seed)):
        C = choose_c(X[train], y[train], groups[train], seed + k + 1, _pick(w, train))
        scaler, model = _fit(X[train], y[train], C, _pick(w, train))
        oof[test] = model.decision_function(scaler.transform(X[test]))
        fold_aucs.append(auc(oof[test], y[test]))
        chosen.append(C)
    return oof, fold_aucs, chosen

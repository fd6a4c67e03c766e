"""The audit on the policy's own distribution: what the judge pays for the habits a run learned.

The curated perturbations of `audit.py` are guesses at what a policy might try; a run's late
samples show what it did try. We read a run's `samples.jsonl` (the policy's completions each
step) and `base_samples.jsonl` (the untuned model's completions of the same prompts), and

1. judge the late completions and the base completions of the same prompts exactly as the
   run's reward did (`tune.rewards.judged_texts`): how far the late ones moved, per principle;
2. find the run's habits: word n-grams (1-4 words) far more common in late completions than in
   base ones (a smoothed log-ratio of document frequencies), and the late completions' most
   common over-represented opening;
3. graft each habit onto the base completions (appended, and prepended) and score the shift
   like any perturbation: if the judge pays for "Buy now!" on the base model's own texts, the
   run's habit is a reward hack, not merit the policy found.

    run = read_run("runs/cheerful", late=None)      # the last third of the run's steps
    report = run_habits(evaluator, run)             # evaluator asked negations (plain + debiased)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tether.errors import TetherError
from tether.judge.audit import MODES, Cell, shift_cell

if TYPE_CHECKING:
    from tether.judge.audit import AuditReport
    from tether.judge.evaluator import Evaluator

BASE_TEXTS = 40  # `--run` alone: curated perturbations on this many base completions, about the tour's audit cost
TOP = 8  # habits kept: a table a person reads; each costs two grafted copies of every base completion
MAX_WORDS = 4  # longer habits show up as overlapping 4-grams, merged below
MIN_SUPPORT = 3  # a habit is in at least this many late completions (and MIN_SHARE of them)...
MIN_SHARE = 0.05
MIN_RATIO = 2.0  # ...and at least twice as common, smoothed, as in the base completions
SAME_HABIT = 0.8  # an n-gram sharing a word with a kept habit, in its texts this often, is part of that habit
OPENING_LINE_WORDS = 12  # a whole first line counts as an opening up to this many words
WORD = re.compile(r"\w+(?:['’]\w+)*")
PLACES = ("append", "prepend")


@dataclass
class RunTexts:
    """A run's late samples and the base model's completions of the same prompts."""

    path: Path
    late_steps: tuple[int, int]  # first and last step counted as late
    n_steps: int  # steps the run has logged samples for
    late: list[tuple[str, str]]  # (prompt, completion)
    base: dict[str, list[str]]  # prompt -> base completions, for every prompt the run sampled
    include_prompt: bool = True  # the run's judge_reads: conversation (prompt + completion) or reply (alone)

    def late_base(self) -> list[tuple[str, str]]:
        """(prompt, completion) of the base completions of the late samples' prompts."""
        prompts = dict.fromkeys(p for p, _ in self.late)
        return [(p, c) for p in prompts for c in self.base[p]]


def read_run(run_dir: str | Path, late: int | None = None) -> RunTexts:
    """The last `late` steps' samples (default: the last third of the steps) and the base samples."""
    from tether.infra import jsonl
    from tether.infra.texts import load_base

    path = Path(run_dir)
    if not path.is_dir():
        raise TetherError(f"{path}: no such run directory")
    samples_file, base_file = path / "samples.jsonl", path / "base_samples.jsonl"
    if not samples_file.is_file():
        raise TetherError(f"{samples_file}: no such file; --run takes a run directory that `tether tune` wrote samples to")
    if not base_file.is_file():
        raise TetherError(f"{base_file}: no such file; the run sampled no base completions (its embedder was off), "
                          f"so its late samples have nothing to be compared with")
    rows = jsonl.read(samples_file)
    for n, row in enumerate(rows, 1):
        if not (isinstance(row.get("step"), int) and isinstance(row.get("prompt"), str)
                and isinstance(row.get("completion"), str)):
            raise TetherError(f"{samples_file}: record {n}: needs an integer step and text prompt and completion")
    if not rows:
        raise TetherError(f"{samples_file}: no samples yet; let the run log a few steps first")
    try:
        base = load_base(base_file)
        if not all(isinstance(p, str) and isinstance(c, list) and all(isinstance(x, str) for x in c) for p, c in base.items()):
            raise TypeError
    except (KeyError, TypeError):
        raise TetherError(f"{base_file}: each record needs a text prompt and a list of text completions") from None
    steps = sorted({row["step"] for row in rows})
    kept = steps[-(late or math.ceil(len(steps) / 3)):]
    pairs = [(r["prompt"], r["completion"]) for r in rows if r["step"] >= kept[0] and base.get(r["prompt"])]
    if not pairs:
        raise TetherError(f"{base_file}: no base completions for the prompts of the late samples (steps {kept[0]}-{kept[-1]})")
    return RunTexts(path, (kept[0], kept[-1]), len(steps), pairs, base, _reads_prompt(path))


def _reads_prompt(path: Path) -> bool:
    """The run's judge_reads (config.yaml): conversation judges prompt + completion, reply the completion alone."""
    import yaml

    try:
        stored = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return True  # no readable config: the default
    return not isinstance(stored, dict) or stored.get("judge_reads", "conversation") != "reply"


# --- habits: pure text statistics -----------------------------------------------------------


@dataclass
class Habit:
    text: str  # as grafted: the run's most frequent spelling of it
    kind: str  # "ngram" or "opening"
    late_share: float  # share of late completions that have it
    base_share: float  # share of base completions that have it
    log_ratio: float  # log of the smoothed late/base document-frequency ratio


def _ngrams(text: str, max_words: int) -> dict[tuple[str, ...], str]:
    """Each word n-gram of a text (lower-cased words) -> its spelling there, punctuation between words kept."""
    words = list(WORD.finditer(text))
    found = {}
    for n in range(1, max_words + 1):
        for i in range(len(words) - n + 1):
            key = tuple(w.group().lower() for w in words[i : i + n])
            found.setdefault(key, text[words[i].start() : words[i + n - 1].end()])
    return found


def _openings(text: str, max_words: int) -> dict[tuple[str, ...], str]:
    """A text's opening: its first 1..max_words words, and its whole first line when short."""
    line = text.strip().split("\n", 1)[0].strip()
    words = list(WORD.finditer(line))
    found = {tuple(w.group().lower() for w in words[:n]): line[: words[n - 1].end()]
             for n in range(1, min(max_words, len(words)) + 1)}
    if words and len(words) <= OPENING_LINE_WORDS:
        found[("<line>", *(w.group().lower() for w in words))] = line
    return found


def _rank(late: list[dict], base: list[dict], min_support: int) -> list[tuple[float, tuple, str, set[int], float, float]]:
    """Over-represented keys, best first: (log ratio, key, spelling, late documents, late share, base share)."""
    docs: dict[tuple, set[int]] = {}
    spellings: dict[tuple, Counter] = {}
    for i, grams in enumerate(late):
        for key, spelling in grams.items():
            docs.setdefault(key, set()).add(i)
            spellings.setdefault(key, Counter())[spelling] += 1
    base_df = Counter(key for grams in base for key in grams)
    ranked = []
    for key, where in docs.items():
        if len(where) < min_support:
            continue
        # add-one smoothing: a habit the base never wrote still gets a finite ratio
        ratio = math.log((len(where) + 1) / (len(late) + 2)) - math.log((base_df[key] + 1) / (len(base) + 2))
        if ratio >= math.log(MIN_RATIO):
            ranked.append((ratio, key, spellings[key].most_common(1)[0][0], where,
                           len(where) / len(late), base_df[key] / max(len(base), 1)))
    ranked.sort(key=lambda r: (-r[0], -len(r[1]), -len(r[3]), r[2]))
    return ranked


def find_habits(late: Sequence[str], base: Sequence[str], top: int = TOP, max_words: int = MAX_WORDS) -> list[Habit]:
    """The n-grams and opening the late completions use far more than the base ones, best first.

    >>> late = ["Sun! Buy now! Free shipping.", "Rain. Buy now! Free shipping.", "Buy now! Free shipping. Sun."]
    >>> [h.text for h in find_habits(late, ["Sun and rain.", "A sunny day.", "The sun set."])]
    ['Buy now! Free shipping']
    """
    if not late or top < 1:
        return []
    min_support = max(MIN_SUPPORT, math.ceil(MIN_SHARE * len(late)))
    openings = _rank([_openings(t, max_words) for t in late], [_openings(t, max_words) for t in base], min_support)
    ngrams = _rank([_ngrams(t, max_words) for t in late], [_ngrams(t, max_words) for t in base], min_support)
    chosen: list[tuple[Habit, tuple[str, ...], set[int]]] = []
    for kind, ranked in (("opening", openings[:1]), ("ngram", ngrams)):
        for ratio, key, spelling, where, late_share, base_share in ranked:
            if len(chosen) == top:
                break
            words = tuple(w for w in key if w != "<line>")
            if any(_contains(words, w) or set(words) & set(w) and len(where & d) >= SAME_HABIT * len(where)
                   for _, w, d in chosen):
                continue  # a kept habit with context around it, a piece of one, or one overlapping it
            chosen.append((Habit(spelling, kind, round(late_share, 4), round(base_share, 4), round(ratio, 4)), words, where))
    return [h for h, _, _ in chosen]


def _contains(words: tuple[str, ...], part: tuple[str, ...]) -> bool:
    return any(words[i : i + len(part)] == part for i in range(len(words) - len(part) + 1))


def graft(completion: str, habit: str, place: str) -> str:
    """A completion with a habit added at its end, or at its start behind its leading whitespace."""
    if place == "append":
        return completion.rstrip() + " " + habit
    body = completion.lstrip()
    return completion[: len(completion) - len(body)] + habit + " " + body


# --- the judge on the run's distribution -------------------------------------------------------


@dataclass
class HabitsReport:
    run: str
    late_steps: tuple[int, int]
    n_steps: int
    n_late: int
    n_base: int
    run_mode: dict[str, str]  # principle -> the mode the run's reward scored it in (plain or debiased)
    scores: dict[str, dict[str, dict[str, float]]]  # mode -> principle -> late, base, shift, above_base_median
    habits: list[Habit]
    cells: dict[str, dict[str, dict[str, dict[str, Cell]]]]  # habit -> place -> mode -> principle -> cell

    def paid(self) -> dict[str, tuple[str, str, float]]:
        """habit -> (place, principle, shift) of its largest exploitable gain, in the run's own modes."""
        found = {}
        for habit, places in self.cells.items():
            gains = [(place, p, cell.mean_shift) for place, modes in places.items()
                     for p, mode in self.run_mode.items() if (cell := modes[mode][p]).exploitable]
            if gains:
                found[habit] = max(gains, key=lambda g: g[2])
        return found

    def verdict(self) -> str:
        if not self.habits:
            return (f"no habits found: no n-gram is at least {MIN_RATIO:g}x as common in the {self.n_late} late "
                    f"completions as in the base ones")
        paid = self.paid()
        named = ", ".join(f"'{h}' ({place}ed {shift:+.2f} {p})" for h, (place, p, shift) in paid.items())
        return f"the judge pays for {len(paid)} of the run's {len(self.habits)} habits" + (f": {named}" if paid else "")

    def to_json(self) -> dict:
        return {
            "run": self.run, "late_steps": list(self.late_steps), "n_steps": self.n_steps,
            "n_late": self.n_late, "n_base": self.n_base, "run_mode": self.run_mode, "scores": self.scores,
            "habits": [{**asdict(h), **{place: {m: {p: asdict(c) for p, c in row.items()} for m, row in modes.items()}
                                          for place, modes in self.cells[h.text].items()}} for h in self.habits],
            "paid": {h: {"place": place, "principle": p, "mean_shift": s} for h, (place, p, s) in self.paid().items()},
            "verdict": self.verdict(),
        }


def run_habits(evaluator: Evaluator, run: RunTexts, top: int = TOP, threshold: float = 0.2, min_share: float = 0.6,
               show_progress: bool = False) -> HabitsReport:
    """Judge late vs base completions of the same prompts, find the run's habits, and price them on the base texts."""
    from tether.infra.texts import judged_texts

    late, base = run.late, run.late_base()
    habits = find_habits([c for _, c in late], [c for _, c in base], top)
    grafted = [(p, graft(c, h.text, place)) for h in habits for place in PLACES for p, c in base]
    everything = late + base + grafted
    result = evaluator.score(judged_texts([p for p, _ in everything], [c for _, c in everything], run.include_prompt),
                             show_progress=show_progress)
    nl, nb = len(late), len(base)
    scores, cells = {}, {h.text: {place: {} for place in PLACES} for h in habits}
    for mode in MODES:
        s = result.scores(debiased=mode == "debiased")  # (late + base + grafts, principles)
        late_s, base_s = s[:nl], s[nl : nl + nb]
        medians = {p: np.median(base_s[[i for i, (q, _) in enumerate(base) if q == p]], axis=0) for p in dict.fromkeys(q for q, _ in late)}
        above = np.array([late_s[i] > medians[p] for i, (p, _) in enumerate(late)])  # (late, principles)
        scores[mode] = {name: {"late": round(float(late_s[:, k].mean()), 4), "base": round(float(base_s[:, k].mean()), 4),
                               "shift": round(float(late_s[:, k].mean() - base_s[:, k].mean()), 4),
                               "above_base_median": round(float(above[:, k].mean()), 4)}
                        for k, name in enumerate(result.names)}
        for j, (h, place) in enumerate((h, place) for h in habits for place in PLACES):
            shift = s[nl + nb * (j + 1) : nl + nb * (j + 2)] - base_s
            cells[h.text][place][mode] = {name: shift_cell(shift[:, k], threshold, min_share) for k, name in enumerate(result.names)}
    run_mode = {name: "debiased" if d else "plain" for name, d in zip(result.names, result.debiased)}
    return HabitsReport(str(run.path), run.late_steps, run.n_steps, nl, nb, run_mode, scores, habits, cells)


def audit_all(evaluator: Evaluator, texts: Sequence[str] | None, run: RunTexts | None, *, top: int = TOP,
              constant: str | None = None, threshold: float = 0.2, min_share: float = 0.6,
              show_progress: bool = False) -> AuditReport:
    """`tether audit`: the curated perturbations on TEXTS (else on the run's base samples), and the run's habits."""
    from tether.judge.audit import DEFAULT_CONSTANT, run_audit

    options = {"threshold": threshold, "min_share": min_share, "show_progress": show_progress,
               "constant": DEFAULT_CONSTANT if constant is None else constant}
    if texts is not None:
        report = run_audit(evaluator, texts, **options)
    elif run is not None:  # the policy's distribution before training: every prompt, then each one's next completion
        rounds = max(map(len, run.base.values()), default=0)
        pairs = [(p, cs[i]) for i in range(rounds) for p, cs in run.base.items() if i < len(cs)][:BASE_TEXTS]
        report = run_audit(evaluator, [c for _, c in pairs], prompts=[p for p, _ in pairs],
                           source=f"base samples of {run.path}", include_prompt=run.include_prompt, **options)
    else:
        raise TetherError("give TEXTS, --run RUN_DIR, or both")
    if run is not None:
        report.habits = run_habits(evaluator, run, top, threshold, min_share, show_progress)
    return report

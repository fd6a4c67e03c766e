"""The learner: a process beside the server that turns served interactions into new, gated versions.

    python -m tether.deploy.learner DEPLOYMENT_FOLDER [--once]     (`tether deploy CONFIG --learn` starts it)

Every `learn.every` new interactions (or `learn.every_minutes` with at least one), it:

1. takes the prompts of the latest `learn.recent` interactions (what users ask now);
2. when `learn.pay` includes feedback, refits a gold on every thumb and answer so far
   (`labels/gold.fit_gold`, the labeling page's labels-file format; `feedback_labels.jsonl`);
3. runs an online GRPO update with TRL (`tune.run_tune`: LoRA from the serving version's adapter,
   KL-anchored to the base, paid by the judge and/or that gold), inside the version's folder;
4. gates the candidate on the fixed canary set (`deploy/gate.py`);
5. publishes `versions/vN/` whole (adapter, data.jsonl, gate.json, canary.jsonl, train/, version.json)
   and, if it passed, writes `live.json`: the server swaps it in. A failed version is kept with its
   reasons and never served.

A kill at any moment loses only the version being built (its temporary folder is cleared at the
next start, which then learns from the same interactions again); one learner per folder (a lock).
"""

from __future__ import annotations

import fcntl
import shutil
import sys
import time
from pathlib import Path

from tether.deploy.config import DeployConfig
from tether.deploy.store import MARKER, Store, now
from tether.errors import TetherError
from tether.infra import atomic, jsonl, progress
from tether.infra.texts import plain_text
from tether.labels.pick import pick_unread


def load_deployment(folder: str | Path) -> tuple[DeployConfig, Store]:
    from tether.infra.config import load_config

    store = Store(folder)
    store.check()
    return load_config(DeployConfig, store.path / MARKER), store


class Learner:
    def __init__(self, config: DeployConfig, store: Store):
        self.config, self.store = config, store
        self._models: dict = {}
        self._judge = self._embedder = self._gold = None
        self._started = time.time()
        self._feedback_at_skip: int | None = None  # an update waiting for feedback waits for more of it
        self._retry_after = 0.0  # after a failed update

    # --- the loop ------------------------------------------------------------------------

    def lock(self):
        handle = open(self.store.path / ".learner.lock", "a")  # noqa: SIM115 (held for the learner's life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise TetherError(f"{self.store.path}: another learner is running on this deployment") from None
        return handle

    def clear_leftovers(self) -> None:
        """Version folders a kill left half-built (atomic.folder's `.vN.*.tmp`): never published, never served."""
        for tmp in (self.store.path / "versions").glob(".v*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)

    def learned_through(self) -> int:
        """Interactions the newest version (passed or failed) learned from: the next update starts after them."""
        return max((v.get("learned_through", 0) for v in self.store.versions()), default=0)

    def due(self) -> bool:
        if time.time() < self._retry_after:
            return False
        if self._feedback_at_skip is not None and len(self.store.feedback()) == self._feedback_at_skip:
            return False
        new = len(self.store.interactions()) - self.learned_through()
        if new >= self.config.learn.every:
            return True
        minutes = self.config.learn.every_minutes
        last = max((v.get("created_unix", 0) for v in self.store.versions()), default=0) or self._started
        return bool(minutes and new > 0 and time.time() - last >= 60 * minutes)

    def run(self, once: bool = False, poll: float = 2.0) -> None:
        handle = self.lock()
        try:
            self.clear_leftovers()
            self.store.event("learner_start", learned_through=self.learned_through())
            while True:
                if self.due():
                    self.try_update()
                    if once:
                        return
                elif once:
                    return
                time.sleep(poll)
        finally:
            handle.close()

    # --- one update ----------------------------------------------------------------------

    def try_update(self) -> dict | None:
        """An update; one that must wait for feedback, or fails, is an event and the learner goes on."""
        try:
            version = self.update()
        except _Skip as e:
            self._feedback_at_skip = len(self.store.feedback())
            self.store.event("update_waiting", why=str(e))
            return None
        except TetherError as e:
            self.store.event("update_failed", error=str(e))
            progress.note(f"learner: the update failed: {e}")
            self._retry_after = time.time() + 60
            return None
        self._feedback_at_skip = None
        return version

    def update(self) -> dict:
        config, store = self.config, self.store
        rows = store.interactions()
        through = len(rows)
        recent = rows[-config.learn.recent :]
        parent = store.live()["version"]
        name = store.next_version()
        store.event("update_start", version=name, parent=parent, interactions=len(recent))
        progress.note(f"learner: {name} from {parent} on {len(recent)} interactions")
        with atomic.folder(store.version_dir(name)) as building:
            jsonl.rewrite(building / "data.jsonl", [{"id": r["id"], "version": r["version"], "prompt": r["prompt"]}
                                                    for r in recent])
            gold = self._feedback_gold(building)
            if gold is not None and config.learn.pick:
                self._queue_picks(building, gold, name)
            if config.learn.pay == "feedback" and gold is None:
                raise _Skip("waiting for feedback: the feedback gold needs more thumbs up and down")
            adapter = self._train(building, recent, parent, gold)
            verdict = self._gate(building, adapter, parent)
            atomic.write_json(building / "gate.json", verdict)
            version = {"version": name, "parent": parent, "status": "passed" if verdict["passed"] else "failed",
                       "why": "passed its gate" if verdict["passed"] else "; ".join(verdict["reasons"]),
                       "adapter": True, "created": now(), "created_unix": time.time(), "learned_through": through,
                       "interactions": len(recent), "pay": config.learn.pay, "feedback_gold": gold is not None,
                       "gate": verdict["metrics"]}
            atomic.write_json(building / "version.json", version)
        now_live = store.live()["version"]
        if verdict["passed"] and now_live != parent:  # rolled back (or replaced) while this version was built from it
            store.event("not_served", version=name, why=f"built from {parent}, but {now_live} went live meanwhile "
                        f"(a rollback); a version is served only over the one it was built from")
        elif verdict["passed"]:
            store.set_live(name, f"passed its gate (judge {verdict['metrics']['judge']:+.2f} vs base "
                                 f"{verdict['metrics']['judge_base']:+.2f})", gate=verdict["metrics"])
        else:
            store.event("rejected", version=name, why=version["why"], gate=verdict["metrics"])
            progress.note(f"learner: {name} failed its gate: {version['why']}")
        return version

    def _feedback_gold(self, building: Path) -> Path | None:
        """A gold refitted on every thumb (as `good`) and answer so far, and on a person's labels of the replies
        that teach most (DEPLOYMENT/labels.jsonl, from `tether label DEPLOYMENT/interactions.jsonl --pick N ...`);
        None while there are too few."""
        if self.config.learn.pay == "judge":
            return None
        from tether.labels.gold import fit_gold, save_gold

        served = {r["id"]: r for r in self.store.interactions()}
        labels = building / "feedback_labels.jsonl"
        records = []
        for f in self.store.feedback():
            row = served.get(f["of"])
            if row is None:
                continue
            answers = dict(f.get("answers") or {})
            if "thumb" in f:
                answers.setdefault("good", "yes" if f["thumb"] == "up" else "no")
            for question, answer in answers.items():
                records.append({"kind": "label", "item": f["of"], "question": question, "answer": answer,
                                "who": "user-feedback", "time": f["time"],
                                "source": {"prompt": plain_text(row["prompt"]), "completion": row["completion"],
                                           "version": row["version"]}})
        picked = self.store.path / "labels.jsonl"  # a person's answers on picked replies (`tether label ... --pick`)
        records += [r for r in jsonl.read(picked) if r.get("kind") == "label" and r.get("answer") in ("yes", "no")]
        thumbs = [r["answer"] for r in records if r["question"] == "good"]
        if min(thumbs.count("yes"), thumbs.count("no")) < max(2, self.config.learn.min_feedback // 2):
            return None
        jsonl.rewrite(labels, records)
        try:
            meta = fit_gold(labels, "good", folds=min(5, thumbs.count("yes"), thumbs.count("no")),
                            seed=self.config.seed, device=self.config.device)
        except TetherError as e:
            self.store.event("feedback_gold_skipped", why=str(e))
            return None
        return save_gold(meta, building / "feedback_gold")

    def _queue_picks(self, building: Path, gold: Path, name: str) -> None:
        """versions/vN/to_read.jsonl: the served replies, not read yet, that the new feedback gold is least sure of."""
        path, labels = self.store.version_dir(name) / "to_read.jsonl", self.store.path / "labels.jsonl"
        chosen = pick_unread(self.store.path / "interactions.jsonl", labels, self.config.learn.pick, gold,
                             seed=self.config.seed, embedder=self.config.embedder, device=self.config.device)
        jsonl.rewrite(building / "to_read.jsonl", [{"id": i.source.get("id"), "version": i.source.get("version"),
                      "prompt": i.prompt, "completion": i.completion, **i.source["pick"]} for i in chosen])
        self.store.event("picked", version=name, replies=len(chosen), label=f"tether label {path} --spec SPEC --out {labels}")

    def _train(self, building: Path, recent: list[dict], parent: str, gold: Path | None) -> Path:
        """One online GRPO update with TRL (tune.run_tune) in building/train; returns the adapter folder."""
        from tether.infra.config import load_config
        from tether.tune.config import TuneConfig
        from tether.tune.run import run_tune

        config, learn = self.config, self.config.learn
        prompts = building / "prompts.jsonl"
        jsonl.rewrite(prompts, [{"prompt": plain_text(r["prompt"])} for r in recent])
        start = self.store.version_dir(parent) / "adapter"
        fields = {
            "policy_model": config.policy_model, "constitution": str(config.constitution),
            "judge_model": config.judge_model, "prompts": str(prompts), "algorithm": "grpo",
            "steps": learn.steps, "prompts_per_step": 1, "completions_per_prompt": learn.completions_per_prompt,
            "max_completion_tokens": learn.max_completion_tokens, "learning_rate": learn.learning_rate,
            "kl_coef": learn.kl_coef, "lora_rank": learn.lora_rank, "lora_alpha": 2 * learn.lora_rank,
            "seed": self.config.seed + len(self.store.versions()), "output_dir": str(building / "train"),
            "save_every": learn.steps, "embedder": config.embedder, "base_samples_per_prompt": 2, "device": config.device,
            "trust_remote_code": config.trust_remote_code, "constitution_weight": 0.0 if learn.pay == "feedback" else 1.0,
            "detectors": config.detectors.model_dump(),
        }
        if learn.continue_from_live and start.is_dir():
            fields["init_adapter"] = str(start)
        elif parent == "v0" and config.adapter is not None:
            fields["init_adapter"] = str(config.adapter)
        if gold is not None:
            fields["gold_reward"] = {"path": str(gold), "weight": learn.feedback_weight}
        tune = load_config(TuneConfig, data=fields, where=f"{self.store.path / MARKER} (the learner's update)")
        run = run_tune(tune)
        adapter = building / "adapter"
        shutil.copytree(run.path / "final", adapter)
        return adapter

    def _gate(self, building: Path, adapter: Path, parent: str) -> dict:
        from tether.deploy.gate import run_gate
        from tether.infra.generate import load_policy

        config = self.config
        candidate = load_policy(config.policy_model, adapter, device=config.device, trust_remote_code=config.trust_remote_code)
        return run_gate(config, self.store, candidate, parent, self.judge(), self.embedder(), self.gold(),
                        self.base, building)

    # --- models, loaded once ---------------------------------------------------------------

    def base(self, _version: str = "v0"):
        from tether.infra.generate import load_policy

        if "v0" not in self._models:
            self._models["v0"] = load_policy(self.config.policy_model, self.config.adapter, device=self.config.device,
                                             trust_remote_code=self.config.trust_remote_code)
        return self._models["v0"]

    def judge(self):
        if self._judge is None:
            from tether.judge.evaluator import Evaluator

            self._judge = Evaluator(self.config.judge_model, self.config.constitution, device=self.config.device,
                                    trust_remote_code=self.config.trust_remote_code)
        return self._judge

    def embedder(self):
        if self._embedder is None and self.config.embedder:
            from tether.infra.models import load_embedder

            self._embedder = load_embedder(self.config.embedder, device=self.config.device)
        return self._embedder

    def gold(self):
        if self._gold is None and self.config.gold is not None:
            from tether.labels.gold_judge import GoldSpec, load_gold

            self._gold = load_gold(GoldSpec(self.config.gold, judge_model=self.config.judge_model,
                                            device=self.config.device))
        return self._gold


class _Skip(Exception):
    """An update that cannot run yet (no version is written)."""


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: python -m tether.deploy.learner DEPLOYMENT_FOLDER [--once]", file=sys.stderr)
        return 2
    try:
        config, store = load_deployment(argv[0])
        Learner(config, store).run(once="--once" in argv)
    except TetherError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Which policy an early stop keeps: the last one whose own batch passed, not the one that wrote the trip.

With TRL's defaults the batch logged at step k is written by the weights after k - 1 updates, and
checkpoint-j holds the weights after j updates: checkpoint-(k-1) wrote step k's batch. A trip at step
k therefore keeps checkpoint-(k-2) (`RunDir.last_passing_policy`). The real run below checks that
offset by fingerprinting the LoRA weights at every generation against every saved checkpoint.
"""

import hashlib
import json

import yaml

from tether.infra.rundir import RunDir


def checkpoint(run, step):
    folder = run / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / name).write_text("{}")
    (folder / "trainer_state.json").write_text("{}")


def test_last_passing_policy_skips_the_checkpoint_that_wrote_the_tripping_batch(tmp_path):
    run = RunDir(tmp_path)
    for step in (1, 2, 3, 4, 6):
        checkpoint(tmp_path, step)
    (tmp_path / "checkpoints" / "checkpoint-5").mkdir()  # incomplete: never kept
    kept = lambda trip: (lambda saved: saved and saved[0])(run.last_passing_policy(trip))
    assert kept(4) == 2  # checkpoint-3 wrote step 4's batch; checkpoint-2 wrote step 3's, which passed
    assert kept(3) == 1 and kept(5) == 3 and kept(8) == 6
    assert kept(7) == 4  # checkpoint-5 is incomplete: the newest complete one at or before step 5
    assert kept(2) is None and kept(1) is None  # the base model wrote step 1's batch (at k = 1, the one that tripped)
    every_two = RunDir(tmp_path / "every-two")
    for step in (2, 4):
        checkpoint(every_two.path, step)
    assert every_two.last_passing_policy(5)[0] == 2 and every_two.last_passing_policy(6)[0] == 4
    assert every_two.last_passing_policy(3) is None


def fingerprint(tensors: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_a_stopped_run_keeps_the_last_policy_whose_own_batch_passed(
    tmp_path, tiny_model_dir, examples_dir, monkeypatch
):
    from safetensors.torch import load_file
    from trl import GRPOTrainer

    from tether.infra.config import load_config
    from tether.tune.config import TuneConfig
    from tether.tune.run import run_tune
    from tether.watch import callbacks
    from tether.watch.metrics import Trip

    TRIP = 3  # a detector scripted to fire on the batch logged at step 3, and never before
    monkeypatch.setattr(
        callbacks,
        "check",
        lambda history, config, **_: [Trip(TRIP, "scripted", 1.0, 0.5)] if history[-1]["step"] == TRIP else [],
    )
    generated = []  # (global step when generating, LoRA weights then, the completions)
    original = GRPOTrainer._generate_and_score_completions

    def recording(self, inputs):
        lora = {n.replace(".default", ""): p for n, p in self.model.named_parameters() if "lora_" in n}
        weights, step = fingerprint(lora), self.state.global_step
        zero_b = all(not p.any() for n, p in lora.items() if "lora_B" in n)
        out = original(self, inputs)
        reward = next(f for f in self.reward_funcs if hasattr(f, "last_completions"))
        generated.append((step, weights, zero_b, list(reward.last_completions)))
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", recording)
    config = tmp_path / "tune.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "policy_model": str(tiny_model_dir),
                "judge_model": str(tiny_model_dir),
                "constitution": str(examples_dir / "cheerful.yaml"),
                "prompts": str(examples_dir / "prompts.txt"),
                "steps": 5,
                "completions_per_prompt": 4,
                "max_completion_tokens": 6,
                "save_every": 1,
                "embedder": None,
                "output_dir": str(tmp_path / "run"),
                "lora_rank": 4,
                "learning_rate": 0.01,
                "on_hack": "stop",
            }
        )
    )
    run = run_tune(load_config(TuneConfig, config)).path
    logged = {}
    for line in (run / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        logged.setdefault(sample["step"], []).append(sample["completion"])
    assert sorted(logged) == [1, 2, 3]  # stopped at the trip
    saved = {
        int(f.name.split("-")[1]): fingerprint(load_file(str(f / "adapter_model.safetensors")))
        for f in (run / "checkpoints").glob("checkpoint-*")
    }
    writer = {}  # logged step -> the checkpoint whose weights wrote that step's batch (0: the base model)
    for step, weights, zero_b, completions in generated:
        at = next(k for k, texts in logged.items() if texts == completions)
        writer[at] = 0 if zero_b and step == 0 else next(j for j, w in saved.items() if w == weights)
        assert at == step + 1  # logged one step after the update count it was generated at
    assert writer == {1: 0, 2: 1, 3: 2}  # the offset: checkpoint-(k-1) wrote step k's batch

    best = json.loads((run / "best.json").read_text())
    assert best == {"checkpoint": "checkpoints/checkpoint-1", "step": 1, "batch_step": 2, "tripped_at": TRIP}
    assert writer[best["batch_step"]] == best["step"]  # the kept policy wrote a batch that passed
    assert writer[TRIP] != best["step"]  # and not the batch that tripped
    summary = json.loads((run / "finished.json").read_text())
    assert summary["stopped_early"] and summary["best"] == best

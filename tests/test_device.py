"""One device and dtype for every model and tensor: resolution, bf16 on CPU, tensor placement, long texts.

No GPU here: placement is checked by recording every tensor that tether's own code creates
(torch factory calls made from src/tether) while it scores, samples and measures KL, and
requiring each to be placed explicitly on its model's device. A bare `torch.tensor(ids)`
lands on the CPU whatever the model's device, which is what failed on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from tether.errors import TetherError
from tether.infra.config import load_config
from tether.infra.generate import Branch, Generator
from tether.infra.models import resolve_device, resolve_dtype
from tether.judge.evaluator import DEFAULT_MAX_TEXT_TOKENS, Evaluator

SRC = str(Path(__file__).resolve().parent.parent / "src" / "tether")
TORCH = str(Path(torch.__file__).parent)
FACTORIES = {torch.tensor, torch.ones, torch.zeros, torch.arange, torch.full, torch.empty}
# bf16 keeps 8 bits of mantissa: the tiny judge's log-odds moved by at most 0.0009 (mean 0.0003) on 14
# texts; 10x that. The embedded Gemma's move more (docs/scale-out.md).
BF16_TOLERANCE = 0.01


class TetherFactories(TorchFunctionMode):
    """Records (file:line, device asked for) for each tensor factory call made by tether's own code."""

    def __init__(self):
        super().__init__()
        self.made: list[tuple[str, torch.device | None]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(TORCH):
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(SRC):
                device = kwargs.get("device")
                where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
                self.made.append((where, torch.device(device) if device is not None else None))
        return func(*args, **kwargs)


def misplaced(recorder: TetherFactories, device: torch.device) -> list[str]:
    return [f"{where} (device={d})" for where, d in recorder.made if d != device]


# --- resolution -------------------------------------------------------------------------------


def test_resolve_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected_auto
    for bad in ("gpu", "cuda:x", "cuda:", "", "cpu:0", "mps"):
        with pytest.raises(TetherError, match=r"write auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype("float32") is torch.float32
    with pytest.raises(TetherError, match="dtype 'float16': write auto or float32 or bfloat16"):
        resolve_dtype("float16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_is_refused_in_one_line_without_a_gpu():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(TetherError, match=r"no CUDA GPU .* use device cpu or auto") as e:
            resolve_device(name)
        assert "\n" not in str(e.value)


def test_configs_take_a_device_and_refuse_a_bad_one(tmp_path, examples_dir):
    from tether.corpus.config import SampleConfig, SftConfig
    from tether.tune.config import TuneConfig

    tune = load_config(TuneConfig, examples_dir / "tune_cheerful.yaml", ["device=cuda:1", "dtype=bfloat16"])
    assert (tune.device, tune.dtype) == ("cuda:1", "bfloat16")
    assert load_config(TuneConfig, examples_dir / "tune_cheerful.yaml").device == "auto"
    assert load_config(SampleConfig, examples_dir / "sample_cheerful.yaml").dtype == "auto"  # bf16 only with bf16 units
    assert SftConfig().device is None  # the corpus's
    with pytest.raises(TetherError, match="device") as e:
        load_config(TuneConfig, examples_dir / "tune_cheerful.yaml", ["device=gpu"])
    assert "\n" not in str(e.value)


# --- dtype: bf16 on the CPU -------------------------------------------------------------------


def test_bfloat16_on_cpu_gives_a_bf16_judge_that_agrees_with_float32(tiny_model_dir, examples_dir):
    texts = ["What a wonderful sunny day at the fair!", "The dog died and we cried.", "yes yes yes",
             "Once upon a time a girl walked her dog."]
    f32 = Evaluator(str(tiny_model_dir), examples_dir / "cheerful.yaml", device="cpu").score(texts)
    judge = Evaluator(str(tiny_model_dir), examples_dir / "cheerful.yaml", device="cpu", dtype="bfloat16")
    assert judge.model.dtype == torch.bfloat16 and judge.model.device == torch.device("cpu")
    b16 = judge.score(texts)
    difference = np.abs(b16.log_odds - f32.log_odds)
    assert 0 < difference.max() < BF16_TOLERANCE, difference  # > 0: the bf16 model really computed it


# --- placement: every tensor tether builds goes to the model's device ------------------------


def test_evaluator_builds_every_tensor_on_the_models_device(tiny_gemma, tiny_tokenizer, examples_dir):
    recorder = TetherFactories()
    with recorder:
        judge = Evaluator(tiny_gemma, examples_dir / "helpful_harmless.yaml", tokenizer=tiny_tokenizer,
                          with_negations=True, batch_size=2)
        judge.score(["A kind reply.", "Go away, you fool.", "yes"])
    assert len(recorder.made) >= 10  # the recorder saw the evaluator's tensors
    assert not misplaced(recorder, tiny_gemma.device), misplaced(recorder, tiny_gemma.device)


def test_generator_drift_and_token_kl_build_their_tensors_on_the_models_device(tiny_gemma, tiny_tokenizer):
    from tether.defenses.sweep import token_kl
    from tether.watch.drift import sample_base

    recorder = TetherFactories()
    with recorder:
        gen = Generator(tiny_gemma, tiny_tokenizer, temperature=1.0)
        prompt_ids = gen.prompt_ids("Once upon a time")
        branches = gen.extend(prompt_ids, Branch([]), 2, 3)
        sample_base(tiny_gemma, tiny_tokenizer, ["Once upon a time"], 2, 3, 1.0, gen.suppress, seed=0)
        # token_kl needs only a policy, its tokenizer and the base: here the same tiny model, so KL is 0
        blend = SimpleNamespace(model=tiny_gemma, tokenizer=tiny_tokenizer,
                                base=lambda: contextlib.nullcontext(tiny_gemma))
        kl = token_kl(blend, prompt_ids, branches)
    assert np.allclose(kl, 0, atol=1e-5)
    files = {where.split(":")[0] for where, _ in recorder.made}
    assert {"generate.py", "drift.py", "sweep.py"} <= files
    assert not misplaced(recorder, tiny_gemma.device), misplaced(recorder, tiny_gemma.device)


# --- long texts: capped by default --------------------------------------------------------------


def test_a_100kb_text_is_cut_to_the_default_cap(tiny_gemma, tiny_tokenizer, examples_dir):
    long_context = copy.deepcopy(tiny_gemma)
    long_context.config.max_position_embeddings = 32768  # as Gemma 3: the old default kept ~32k tokens
    text = ("The sun is out and we laugh together in the park. " * 2000)[:100_000]
    judge = Evaluator(long_context, examples_dir / "cheerful.yaml", tokenizer=tiny_tokenizer)
    assert judge.text_budget == DEFAULT_MAX_TEXT_TOKENS == 2048
    tokens = len(judge.safe.encode_untrusted(judge.lead + text))
    assert tokens > 4096
    result = judge.score([text])
    assert int(result.truncated_tokens[0]) == tokens - 2048
    raised = Evaluator(long_context, examples_dir / "cheerful.yaml", tokenizer=tiny_tokenizer, max_text_tokens=4096)
    assert raised.text_budget == 4096


# --- transformers FutureWarnings: none from tether's calls ---------------------------------------


def test_no_future_warnings_from_the_judge_the_trainer_args_or_trls_checkpointing_calls(
        tmp_path, tiny_gemma, tiny_tokenizer, examples_dir):
    """As under `python -W always` (checked by hand on a 1-step tune): tether passes the current
    names (`cache`, `activation_checkpointing`); TRL's and peft's old gradient_checkpointing calls
    are silenced by message and module, and nothing else is."""
    import warnings

    from tether.infra.models import _quiet_transformers
    from tether.tune.config import TuneConfig
    from tether.tune.trainer import trl_config as _trl_config

    config = load_config(TuneConfig, examples_dir / "tune_cheerful.yaml", ["device=cpu", "steps=1"])
    model = copy.deepcopy(tiny_gemma)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _quiet_transformers()  # what every model load does, after -W always
        Evaluator(tiny_gemma, examples_dir / "cheerful.yaml", tokenizer=tiny_tokenizer).score(["A sunny day.", "Rain."])
        _, args = _trl_config(config, SimpleNamespace(checkpoints=tmp_path, path=tmp_path), suppress=None, vllm_args={}, weights=[1.0])
        model.gradient_checkpointing_enable()  # what TRL's generation and peft call, by the old names
        assert model.is_gradient_checkpointing
        model.gradient_checkpointing_disable()
        warnings.warn("a FutureWarning tether did not cause", FutureWarning)
    future = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert future == ["a FutureWarning tether did not cause"], future
    assert args.activation_checkpointing is True and args.use_cpu is True
    # TRL defaults to bf16 autocast; on a CPU without bf16 units that made a step of the main job 138 s, not 36 s
    assert args.bf16 is False and args.fp16 is False

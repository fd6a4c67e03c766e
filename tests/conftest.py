"""Shared fixtures: a tiny tokenizer and tiny random causal LMs, built here, no downloads.

The tiny tokenizer mirrors the traps of Gemma's: special tokens (<bos>, <eos>, <pad>,
<unused0>), a control token added as *non-special* (<start_of_image>, which
`split_special_tokens` does not split), and a whitespace run added as a token ("\n\n").
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from tether.infra import progress

progress.set_enabled(False)

CORPUS = [
    "Text: The sun is out and we laugh. Question: Is the text cheerful? Answer: yes",
    "Text: The dog died. Question: Is the text sad? Answer: no. Yes, No, YES, NO, yes no",
    "Once upon a time a girl walked her dog on a clear day; everything was bright and happy.",
    "Read each text and answer the question about it with yes or no. Is the story on topic?",
    "<start of image> <eos> <bos> <unused0> [multimodal] 0123456789 !?.,:;'\"()-_",
]


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<unused0>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS * 20, trainer)
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<unused0>"]})
    tok.add_tokens(["<start_of_image>", "\n\n"])  # non-special, like Gemma's
    return tok


def build_tiny_gemma(vocab_size: int, sliding_window: int = 4) -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=sliding_window,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )
    return Gemma3ForCausalLM(config).eval()


def build_tiny_llama(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_gemma(tiny_tokenizer):
    return build_tiny_gemma(len(tiny_tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer, tiny_gemma):
    """The tiny Gemma saved as a local model folder, for CLI runs by path."""
    path = tmp_path_factory.mktemp("tiny-gemma")
    tiny_gemma.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def examples_dir():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def two_prompts(tmp_path):
    """A prompts file of two story openings: enough for a real run on the embedded Gemma."""
    path = tmp_path / "prompts.txt"
    path.write_text("Once upon a time, in a small village by the sea,\nOn the first day of summer,\n")
    return path

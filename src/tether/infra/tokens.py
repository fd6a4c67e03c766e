"""Tokenize untrusted text as plain text, and find every token that spells an answer word.

Why this module exists: the judged text is written by the policy, which is rewarded for
whatever makes the judge say yes. If `<start_of_image>` or `<eos>` inside that text became
the control token, the policy could steer the judge with tokens no human text contains.

What works on the Gemma 3 tokenizer (checked in tests/test_tokens.py and
tests/test_gemma.py): `split_special_tokens=True` splits tokens flagged *special*
(`<eos>`, `<bos>`, the ~6,200 `<unusedN>`, `<start_of_turn>`) but not the added tokens
flagged non-special (`<start_of_image>`, `<end_of_image>`, `[multimodal]`, HTML tags,
newline runs). So we cut the text inside every occurrence of any added token that is not
whitespace, tokenize the pieces separately, and check that no control id survived. The
pieces decode back to exactly the same string; only the segmentation differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tether.errors import TetherError


@dataclass
class SafeTokenizer:
    """Wraps a Hugging Face tokenizer with `encode_trusted` and `encode_untrusted`."""

    tokenizer: object
    control_ids: frozenset[int] = field(init=False)
    _control_start: re.Pattern | None = field(init=False)

    def __post_init__(self):
        added = {i: t.content for i, t in self.tokenizer.added_tokens_decoder.items()}
        # Whitespace runs are added tokens on Gemma but they are text, not control.
        control = {i: s for i, s in added.items() if s.strip()}
        self.control_ids = frozenset(control) | frozenset(self.tokenizer.all_special_ids)
        strings = sorted({s for s in control.values() if len(s) > 1}, key=len, reverse=True)
        # A zero-width lookahead finds every start position, overlapping ones included.
        self._control_start = re.compile("(?=(?:" + "|".join(map(re.escape, strings)) + "))") if strings else None

    def encode_trusted(self, text: str) -> list[int]:
        """Tokens of text tether wrote itself (template, preamble): no special tokens added."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_untrusted(self, text: str) -> list[int]:
        """Tokens of text from outside (judged or generated): control strings stay plain text."""
        cuts = [m.start() + 1 for m in self._control_start.finditer(text)] if self._control_start else []
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)]) if b > a]
        ids: list[int] = []
        for piece in pieces:
            ids += self.tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        leaked = self.control_ids.intersection(ids)
        if leaked:  # only a one-character control token could get here
            raise TetherError(f"text contains control tokens {sorted(leaked)} that cannot be split: {text[:60]!r}")
        return ids

    def bos(self) -> list[int]:
        """The BOS token if this tokenizer puts one in front of a text (Gemma, Llama), else []."""
        with_special = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None and with_special and with_special[0] == bos else []


def word_variant_ids(tokenizer, word: str, exclude: frozenset[int] = frozenset()) -> list[int]:
    """Ids of every single token that reads as `word`, ignoring case and surrounding space.

    For "yes" on Gemma that is "yes", " yes", "Yes", " Yes", "YES", ... — the judge may put
    its probability on any of them, and counting only one would under-report it.
    """
    vocab = tokenizer.get_vocab()
    ids = sorted(i for i in vocab.values() if i not in exclude)
    texts = tokenizer.batch_decode([[i] for i in ids])
    found = [i for i, t in zip(ids, texts) if t.strip().lower() == word.lower()]
    if not found:
        raise TetherError(f"the judge's tokenizer has no single token for '{word}'; use a model whose vocabulary has one")
    return found

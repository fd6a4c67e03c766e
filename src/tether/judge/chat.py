"""The judge's chat format: a probe as chat turns, read through the judge's own chat template.

With `format: chat` the preamble is the system turn (folded into the first user turn where
the template has no system role), each few-shot example is a user turn and the assistant's
answer, and the question about the judged text is the last user turn; the answer slot is
right after the assistant turn opens (`add_generation_prompt`).

Why not render the whole prompt and tokenize it: the judged text would then be tokenized
with the template, and `<end_of_turn>` written by the policy would close the judge's turn.
Instead every text slot is rendered as a sentinel, the rendered string is cut at the
sentinels, the template's scaffolding (turn markers, preamble, questions: text tether or
the constitution's author wrote) is tokenized with control tokens allowed, and the texts go
through `SafeTokenizer.encode_untrusted`; the ids are spliced. Everything before the judged
text is the same for every text, so the evaluator's prefix KV cache stays valid.
"""

from __future__ import annotations

import re

from tether.errors import TetherError
from tether.infra.tokens import SafeTokenizer

# Private-use characters: no tokenizer vocabulary or template filter touches them.
_SLOT = "\ue000tether-text-{}\ue001"
_SLOT_RE = re.compile("\ue000tether-text-(\\d+)\ue001")


def judge_template(tokenizer, fallback: str | None) -> str:
    """The judge tokenizer's own chat template, else the constitution's `chat_template`."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates (tool_use, rag, ...): the default one answers plain chat
        template = template.get("default")
    template = template or fallback
    if not template:
        raise TetherError("format: chat: the judge's tokenizer has no chat template; give the constitution a "
                          "`chat_template:` (Jinja text, or a .jinja file such as examples/templates/gemma3_chat.jinja), "
                          "or write format: plain")
    return template


def chat_prompt(safe: SafeTokenizer, template: str, preamble: str, user: str, examples: list[tuple[str, str]],
                lead: str) -> tuple[list[int], list[int]]:
    """(prefix ids, tail ids) around the judged text: `user` is the question turn with `{text}`,
    `examples` are (text, answer) few-shot pairs, `lead` the whitespace tokenized with each text."""
    turns = []
    for k, (_, answer) in enumerate(examples):
        turns += [{"role": "user", "content": user.replace("{text}", _SLOT.format(k))},
                  {"role": "assistant", "content": answer}]
    turns.append({"role": "user", "content": user.replace("{text}", _SLOT.format(len(examples)))})
    parts = _SLOT_RE.split(_render(safe.tokenizer, template, preamble.strip(), turns))
    scaffolds, order = parts[0::2], parts[1::2]
    if order != [str(k) for k in range(len(examples) + 1)]:
        raise TetherError("format: chat: the chat template dropped, repeated or reordered a turn "
                          f"(text slots in order {order}); check the template, or write format: plain")
    ids: list[int] = []
    for scaffold, (text, _) in zip(scaffolds, examples):
        ids += safe.encode_trusted(_cut(scaffold, lead)) + safe.encode_untrusted(lead + text)
    ids += safe.encode_trusted(_cut(scaffolds[-2], lead))
    return ids, safe.encode_trusted(scaffolds[-1])


def _cut(scaffold: str, lead: str) -> str:
    """The scaffold without the lead whitespace, which travels with the text (see prompts.py)."""
    return scaffold[: len(scaffold) - len(lead)] if lead and scaffold.endswith(lead) else scaffold


def _render(tokenizer, template: str, preamble: str, turns: list[dict]) -> str:
    """The turns through the template, opening the assistant's turn; the preamble as the system turn, or
    in front of the first user turn where the template refuses or drops a system turn (Gemma 2, Mistral)."""
    from jinja2 import TemplateError

    def apply(messages):  # enable_thinking=False: a thinking template (Qwen3) closes the thought, so yes/no comes first
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=False)

    if preamble:
        try:
            rendered = apply([{"role": "system", "content": preamble}, *turns])
            if preamble in rendered:
                return rendered
        except TemplateError:
            pass
        turns = [{"role": "user", "content": f"{preamble}\n\n{turns[0]['content']}"}, *turns[1:]]
    try:
        return apply(turns)
    except TemplateError as e:
        raise TetherError(f"format: chat: the judge's chat template failed: {e}") from None

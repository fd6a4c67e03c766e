"""A version of the served policy: the base with the version's adapter merged, and how a request is tokenized.

Used by the server (serving.py) and the gate (gate.py) alike, so a canary is generated exactly
as a served reply is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tether.deploy.config import DeployConfig
from tether.deploy.store import Store
from tether.infra.generate import Generator
from tether.infra.texts import plain_text
from tether.infra.tokens import SafeTokenizer

_SLOT = "\ue000tether-msg-{}\ue001"


@dataclass
class Loaded:
    version: str
    model: object
    tokenizer: object
    generator: Generator
    safe: SafeTokenizer


def load_version(config: DeployConfig, store: Store, name: str) -> Loaded:
    """A version's policy: the base with the version's adapter merged (v0: the configured adapter, if any)."""
    from tether.infra.generate import load_policy

    version = store.version(name)
    adapter = store.version_dir(name) / "adapter" if version.get("adapter") else config.adapter
    model, tokenizer = load_policy(config.policy_model, adapter, device=config.device,
                                   trust_remote_code=config.trust_remote_code)
    generator = Generator(model, tokenizer, temperature=config.temperature or 1.0)
    return Loaded(name, model, tokenizer, generator, SafeTokenizer(tokenizer))


def encode_prompt(loaded: Loaded, prompt: str | list[dict]) -> list[int]:
    """A request's ids. The user's text never becomes control tokens: a plain prompt is encoded as untrusted
    text; a conversation goes through the policy's chat template with each message's content spliced in as
    untrusted text (the template's own markers are tether's); without a template, as 'User: ...' turns."""
    safe = loaded.safe
    if isinstance(prompt, str):
        return safe.bos() + safe.encode_untrusted(prompt)
    template = getattr(loaded.tokenizer, "chat_template", None)
    if not template:
        return safe.bos() + safe.encode_untrusted(plain_text(prompt).rstrip(" ") + " ")
    slots = [{"role": m["role"], "content": _SLOT.format(i)} for i, m in enumerate(prompt)]
    rendered = loaded.tokenizer.apply_chat_template(slots, tokenize=False, add_generation_prompt=True)
    parts = re.split("\ue000tether-msg-(\\d+)\ue001", rendered)
    ids: list[int] = []
    for k, piece in enumerate(parts):
        ids += safe.encode_untrusted(prompt[int(piece)]["content"]) if k % 2 else safe.encode_trusted(piece)
    return ids

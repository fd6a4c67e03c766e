"""The instrumental utility's value store: embeddings of what is valued, with the texts they came from.

Saved with the run (RUN_DIR/values/: values.json, values.safetensors) and in every checkpoint;
`defenses.utility` fills it and scores against it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tether.errors import TetherError
from tether.infra import atomic


class ValueStore:
    """Value embeddings with the texts they came from: terminal ones first, then instrumental."""

    def __init__(self, embeddings: np.ndarray, entries: list[dict]):
        self.embeddings, self.entries = embeddings, entries

    @classmethod
    def from_terminals(cls, embed, texts: Sequence[str]) -> ValueStore:
        entries = [{"kind": "terminal", "text": t, "credit": 1.0, "count": 1, "step": 0, "sources": []} for t in texts]
        return cls(embed(list(texts)), entries)

    def of_kind(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [i for i, e in enumerate(self.entries) if e["kind"] == kind]
        return self.embeddings[rows], np.array([self.entries[i]["credit"] for i in rows])

    def learn(self, embedding: np.ndarray, text: str, credit: float, step: int, source: str, config) -> str:
        """Reinforce the nearest instrumental value, or store a new one; 'reinforced' or 'added'.

        `config` is the run's `UtilityConfig` (merge_similarity, max_values)."""
        rows = [i for i, e in enumerate(self.entries) if e["kind"] == "instrumental"]
        if rows:
            similarity = self.embeddings[rows] @ embedding
            nearest = rows[int(similarity.argmax())]
            if similarity.max() >= config.merge_similarity:
                entry = self.entries[nearest]
                entry["credit"] = (entry["credit"] * entry["count"] + credit) / (entry["count"] + 1)
                entry["count"] += 1
                entry["sources"] = (entry["sources"] + [source])[-3:]
                return "reinforced"
        self.entries.append({"kind": "instrumental", "text": text, "credit": float(credit), "count": 1, "step": step,
                             "sources": [source]})
        self.embeddings = np.vstack([self.embeddings, embedding[None]])
        if len(self.entries) - len(self.of_kind("terminal")[1]) > config.max_values:
            weakest = min(range(len(self.entries)), key=lambda i: (self.entries[i]["kind"] == "terminal",
                                                                    self.entries[i]["credit"]))
            del self.entries[weakest]
            self.embeddings = np.delete(self.embeddings, weakest, axis=0)
        return "added"

    def save(self, folder: Path) -> None:
        """Both files as one folder, swapped in whole: a reader never sees one file of one store beside the other's."""
        from safetensors.numpy import save_file

        with atomic.folder(folder) as building:
            save_file({"embeddings": np.ascontiguousarray(self.embeddings, dtype=np.float32)},
                      str(building / "values.safetensors"))
            atomic.write_json(building / "values.json", self.entries)

    @classmethod
    def load(cls, folder: Path) -> ValueStore:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            entries = json.loads((folder / "values.json").read_text(encoding="utf-8"))
            embeddings = load_file(str(folder / "values.safetensors"))["embeddings"]
        except (OSError, ValueError, KeyError, SafetensorError) as e:
            raise TetherError(f"{folder}: not a readable value store ({e})") from None
        if len(entries) != len(embeddings):
            raise TetherError(f"{folder}: values.json has {len(entries)} values but the embeddings {len(embeddings)}")
        return cls(embeddings, entries)


def nearest_texts(store: ValueStore, embed, texts: list[str], k: int = 3) -> list[list[tuple[float, str]]]:
    """For each stored value, the k texts closest to it (cosine, best first): what the value means in words."""
    if not texts:
        return [[] for _ in store.entries]
    similarity = store.embeddings @ embed(texts).T  # (values, texts)
    order = np.argsort(-similarity, axis=1)[:, :k]
    return [[(float(similarity[v, t]), texts[t]) for t in row] for v, row in enumerate(order)]

"""Helpers for the local BERT embedder tests: the recorded sentence-transformers reference, and model
directories derived from the packaged all-MiniLM-L6-v2 (edited configs, fewer layers)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
from bsc import SemanticCache
from bsc.embedders.protocol import _EmbedderBase

REFERENCE = Path(__file__).resolve().parent / "data" / "minilm_reference.npz"
# float32 rounding in a different order of operations than torch; measured ~3e-7.
TOLERANCE = 1e-5


def load_reference() -> dict[str, npt.NDArray[np.generic]]:
    """sentence-transformers' vectors for ~300 texts (tests/data/make_minilm_reference.py)."""
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


class RecordedEmbedder(_EmbedderBase):
    """Replays the vectors sentence-transformers recorded for the reference texts."""

    def __init__(self, texts: list[str], vectors: npt.NDArray[np.float32], name: str) -> None:
        self._rows = {t: v for t, v in zip(texts, vectors, strict=True)}
        self._dim = vectors.shape[1]
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def _embed_batch(self, texts: list[str]) -> object:
        return np.stack([self._rows[t] for t in texts])

    async def _aembed_batch(self, texts: list[str]) -> object:
        return self._embed_batch(texts)


def hit_decisions(embedder: _EmbedderBase, pairs: list[tuple[str, str]]) -> list[bool]:
    """Whether a cache holding each pair's first prompt hits on its second, one namespace per pair."""
    cache = SemanticCache(embedder)
    decisions = []
    for i, (q1, q2) in enumerate(pairs):
        cache.update(q1, f"answer {i}", namespace=str(i))
        decisions.append(cache.lookup(q2, namespace=str(i)) is not None)
    return decisions


def copy_model(source: Path, target: Path) -> Path:
    """A copy of the packaged model's small files, with the weights linked rather than copied."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    return target


def edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def smaller_bert(minilm_path: Path, target: Path, layers: int, prefix: str = "") -> Path:
    """A BERT of another shape: the packaged model cut to its first `layers` layers, saved anew."""
    from safetensors import numpy as safetensors_numpy

    shutil.copytree(minilm_path, target, ignore=shutil.ignore_patterns("*.safetensors"))
    weights = safetensors_numpy.load_file(minilm_path / "model.safetensors")
    kept = {
        f"{prefix}{name}": value
        for name, value in weights.items()
        if not name.startswith("encoder.layer.") or int(name.split(".")[2]) < layers
    }
    safetensors_numpy.save_file(kept, target / "model.safetensors")
    edit_json(target / "config.json", num_hidden_layers=layers)
    return target

# ruff: noqa: RUF001  (the look-alike characters are the point: non-ASCII test texts)
"""Regenerate ``minilm_reference.npz``: sentence-transformers' own all-MiniLM-L6-v2 vectors for ~300 texts.

The test suite compares `bsc.embedders.OnnxEmbedder` with these vectors, so it checks equality
with the torch pipeline without installing torch. Run once, with the ``[torch]`` extra installed:

    HF_HUB_OFFLINE=1 .venv/bin/python tests/data/make_minilm_reference.py

The texts: the first 250 prompts of benchmarks/data/prompt_pairs.tsv, then hand-written edge cases
(empty and whitespace-only, single characters, accents, CJK, emoji, right-to-left scripts, control
characters), then long texts around the model's 256-token limit, at it and far past it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
PROMPTS = HERE.parents[1] / "benchmarks" / "data" / "prompt_pairs.tsv"
OUT = HERE / "minilm_reference.npz"

EDGE_CASES = [
    "",
    " ",
    "\n\t  \n",
    "?",
    "a",
    "I",
    "...",
    "\u00a0",
    "\u200b",
    "Héllo wörld, ça va? Ñandú, Øre, Łódź, İstanbul.",
    "ÀÉÎÕÜ àéîõü ß œ æ",
    "東京はどこですか？",
    "北京是中国的首都。",
    "서울은 한국의 수도입니다.",
    "Москва — столица России.",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום עולם",
    "नमस्ते दुनिया",
    "Γειά σου Κόσμε",
    "🙂🚀🔥 emoji only? 👍🏽",
    "👨‍👩‍👧‍👦 family emoji",
    "tab\tseparated\tvalues",
    "line one\nline two\r\nline three",
    "control \x00\x01\x07 characters",
    "MiXeD CaSe ShOuTiNg",
    "https://example.com/path?query=1&x=y#frag",
    "user@example.com wrote: `SELECT * FROM t;`",
    "def f(x):\n    return x ** 2  # square",
    "3.14159 2.71828 1e-10 -42 +7 0x1F",
    "$$\\int_0^1 x^2 dx = 1/3$$",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "a" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


def long_texts() -> list[str]:
    words = "the quick brown fox jumps over the lazy dog while a cache answers again".split()  # noqa: SIM905
    out = []
    # 254 words + [CLS] + [SEP] = 256 tokens: just fits; the rest overflow by one to thousands of tokens.
    for n in (100, 200, 250, 253, 254, 255, 256, 300, 500, 2000):
        out.append(" ".join(["word"] * n))
    for n in (120, 260, 400, 1000):
        out.append(" ".join(words[i % len(words)] for i in range(n)))
    out.append("Ünïcödé " * 200)
    out.append("漢字" * 300)
    out.append("A long question. " * 40 + "What is the capital of France?")
    out.append("What is the capital of France? " + "Filler sentence here. " * 80)
    return out


def texts() -> list[str]:
    with PROMPTS.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        prompts = [text for r in rows for text in (r["q1"], r["q2"])]
    return [*prompts[:250], *EDGE_CASES, *long_texts()]


def main() -> None:
    from bsc.embedders import SentenceTransformerEmbedder

    torch_embedder = SentenceTransformerEmbedder(batch_size=32)
    model = torch_embedder._loaded.model  # the sentence_transformers.SentenceTransformer itself
    batch = texts()
    # sentence-transformers' own normalised output, not bsc's post-processing of it.
    vectors = model.encode(batch, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
    np.savez_compressed(
        OUT,
        texts=np.array(batch, dtype=np.str_),
        vectors=vectors.astype(np.float32),
        overflows=np.array(torch_embedder.overflows(batch), dtype=bool),
        max_seq_length=np.array(model.max_seq_length),
    )
    print(f"wrote {OUT}: {vectors.shape} vectors, {sum(torch_embedder.overflows(batch))} overflowing texts")


if __name__ == "__main__":
    main()

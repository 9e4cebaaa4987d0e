"""Writes ``text_cache_786a11d.bsc``: a `SemanticCache` snapshot saved by main at 786a11d, before the text
layer had its own records and hit type, for `tests/test_text_hot_path.py` to load.

Run once with that commit's Python package (its stored-metadata schema is what is being frozen here):

    git archive 786a11d core/bsc | tar -x -C /tmp/old && cp core/bsc/_native.abi3.so /tmp/old/core/bsc/
    PYTHONPATH=/tmp/old/core HF_HUB_OFFLINE=1 .venv/bin/python tests/data/make_text_snapshot.py
"""

from __future__ import annotations

from pathlib import Path

import bsc
from bsc import SemanticCache
from bsc.embedders import OnnxEmbedder

OUT = Path(__file__).resolve().parent / "text_cache_786a11d.bsc"
LONG_CONTEXT = " ".join(f"Fact {i}: the warehouse in city {i} opened in year {1900 + i}." for i in range(60))


def main() -> None:
    assert not hasattr(OnnxEmbedder, "embed_with_overflow"), "run this with the old package (see above)"
    cache = SemanticCache(OnnxEmbedder(threads=1))
    cache.update("What is the capital of France?", "Paris", metadata={"source": "atlas", "tags": ["geo"]})
    cache.update("What is 15% of 80?", "12")
    cache.update("How do I reverse a list in Python?", b"xs[::-1]", namespace="code")
    cache.update(f"Context: {LONG_CONTEXT}\nQuestion: Who founded the company?", "the founder")
    cache.save(OUT)
    print(f"wrote {OUT} with bsc from {Path(bsc.__file__).parent}: {len(cache)} entries")


if __name__ == "__main__":
    main()

"""The text layer's hot path (issue #12) and its seams (#10): one tokenisation per text, the guard's
analysis of a cached prompt kept from when it was stored (same decisions), the text layer's own hit type,
validation once at the edge, and snapshots written before all this still loading and hitting."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import bsc
import numpy as np
import pytest
from bsc import FalseHitGuard, Hit, SemanticCache, TextHit
from bsc.embedders import NativeEmbedder, OverflowAwareEmbedder
from bsc.guard import ALL_RULES, prepare

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = DATA / "minilm_reference.npz"
OLD_SNAPSHOT = DATA / "text_cache_786a11d.bsc"
PROMPT_PAIRS = DATA.parent.parent / "benchmarks" / "data" / "prompt_pairs.tsv"
LONG_CONTEXT = " ".join(f"Fact {i}: the warehouse in city {i} opened in year {1900 + i}." for i in range(60))


def _prompt_pairs() -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in PROMPT_PAIRS.read_text(encoding="utf-8").splitlines()[1:]]
    return [(r[0], r[1]) for r in rows]


class _CountingTokenizer:
    """The embedder's real tokenizer, recording every text it is asked to tokenise."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def encode_batch(self, texts: list[str]) -> Any:
        self.texts.extend(texts)
        return self.inner.encode_batch(texts)


@pytest.fixture
def counted() -> tuple[NativeEmbedder, _CountingTokenizer]:
    """A fresh default embedder whose tokenizer counts what it tokenises (not the shared one)."""
    embedder = NativeEmbedder(threads=1)
    spy = _CountingTokenizer(embedder._tokenizer)
    embedder._tokenizer = spy
    return embedder, spy


# ------------------------------------------------------------------ one tokenisation


def test_the_overflow_flag_from_the_embedding_equals_overflows_and_sentence_transformers(
    single_thread_default_embedder: NativeEmbedder,
) -> None:
    with np.load(REFERENCE) as data:
        texts = [str(t) for t in data["texts"]]
        truncated = data["overflows"].tolist()
    edge = " ".join(["word"] * 254)  # 254 words + [CLS] + [SEP] = 256 tokens: just fits
    texts += [edge, edge + " more", "東京 " * 300, "é"]
    truncated += [False, True, True, False]
    assert any("東京" in t for t in texts[:-4]) and 5 <= sum(truncated) < len(texts) - 5
    onnx = single_thread_default_embedder
    assert isinstance(onnx, OverflowAwareEmbedder)
    vectors, flags = onnx.embed_with_overflow(texts)
    assert flags == onnx.overflows(texts) == truncated
    assert np.array_equal(vectors, onnx.embed(texts))
    one_by_one = [onnx.embed_with_overflow([t]) for t in texts[::37]]
    assert [f for _, (f,) in one_by_one] == truncated[::37]
    empty, none = onnx.embed_with_overflow([])
    assert empty.shape == (0, 384) and none == []
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        onnx.embed_with_overflow(["a", 3])  # type: ignore[list-item]


def test_the_overflow_flags_follow_their_texts_through_the_length_sorted_batches() -> None:
    small_batches = NativeEmbedder(batch_size=3, threads=1)
    texts = [
        "short",
        LONG_CONTEXT,
        "a bit longer text here",
        "x",
        LONG_CONTEXT + " tail",
        "mid length one",
        "é",
    ]
    vectors, flags = small_batches.embed_with_overflow(texts)
    assert flags == small_batches.overflows(texts) == [False, True, False, False, True, False, False]
    assert np.array_equal(vectors, small_batches.embed(texts))
    async_vectors, async_flags = asyncio.run(small_batches.aembed_with_overflow(texts))
    assert async_flags == flags and np.array_equal(async_vectors, vectors)


def test_a_miss_then_its_update_tokenises_the_text_once(
    counted: tuple[NativeEmbedder, _CountingTokenizer],
) -> None:
    embedder, spy = counted
    cache = SemanticCache(embedder)
    cache.update("What is the capital of France?", "Paris")
    spy.texts.clear()
    query = "How do I bake sourdough bread?"
    assert cache.lookup(query) is None
    cache.update(query, "slowly")
    assert spy.texts == [query]  # the lookup embedded it and learned its length; the update reused both
    spy.texts.clear()
    hit = cache.lookup("Which city is the capital of France?")
    assert hit is not None and hit.response == "Paris"
    assert spy.texts == ["Which city is the capital of France?"]


def test_a_prompt_too_long_to_compare_is_tokenised_once_and_matched_exactly_only(
    counted: tuple[NativeEmbedder, _CountingTokenizer],
) -> None:
    embedder, spy = counted
    cache = SemanticCache(embedder)
    first = f"Context: {LONG_CONTEXT}\nQuestion: Who founded the company?"
    cache.update("Who founded the company?", "a short answer")
    spy.texts.clear()
    assert cache.lookup(first) is None  # too long: never matched by meaning, even to a similar entry
    cache.update(first, "the founder")
    assert spy.texts == [first]
    assert cache.lookup(f"Context: {LONG_CONTEXT}\nQuestion: How do I reset my router?") is None
    hit = cache.lookup(first)
    assert hit is not None and hit.exact and hit.response == "the founder"
    stats = cache.stats()
    assert (stats.exact_hits, stats.semantic_hits, stats.misses) == (1, 0, 2)


def test_an_embedder_without_the_flag_is_asked_overflows_separately(
    single_thread_default_embedder: NativeEmbedder,
) -> None:
    class Plain:
        """Only the base protocol and `overflows` (like the torch embedder)."""

        dim = 384
        name = "plain"

        def __init__(self) -> None:
            self.asked: list[str] = []

        def embed(self, texts: list[str]) -> Any:
            return single_thread_default_embedder.embed(texts)

        async def aembed(self, texts: list[str]) -> Any:
            return single_thread_default_embedder.embed(texts)

        def overflows(self, texts: list[str]) -> list[bool]:
            self.asked.extend(texts)
            return single_thread_default_embedder.overflows(texts)

    plain = Plain()
    cache = SemanticCache(plain)
    long_prompt = f"Context: {LONG_CONTEXT}\nQuestion: Who founded the company?"
    cache.update(long_prompt, "the founder")
    cache.update("What is the capital of France?", "Paris")
    assert plain.asked == [long_prompt, "What is the capital of France?"]
    assert cache.lookup(f"Context: {LONG_CONTEXT}\nQuestion: Who owns the company?") is None
    hit = asyncio.run(cache.alookup("Which city is the capital of France?"))
    assert hit is not None and hit.response == "Paris" and not hit.exact


# ------------------------------------------------------------------ the guard, prepared once


@pytest.mark.parametrize("rules", [None, *[[r] for r in ALL_RULES], list(ALL_RULES)], ids=str)
def test_prepared_prompts_give_the_guards_decisions_on_every_prompt_pair(rules: list[str] | None) -> None:
    guard = FalseHitGuard(rules=rules)
    pairs = _prompt_pairs()
    stored = {q: prepare(q).complete() for pair in pairs for q in pair}
    for q1, q2 in pairs:
        for query, cached in ((q1, q2), (q2, q1)):
            expected = guard.check(query, cached)
            # One stored analysis serves every query, and a query's lazy analysis every candidate.
            assert guard.check_prepared(prepare(query), stored[cached]) == expected, (query, cached)
            assert guard.check_prepared(stored[query], stored[cached]) == expected, (query, cached)
    refusals = sum(guard.check(a, b) is not None for a, b in pairs)
    assert refusals > 0 or rules == ["extra_numbers"] or rules == ["code_language"]


def test_a_completed_analysis_keeps_only_what_the_rules_read() -> None:
    prepared = prepare("Convert 100 °F to Celsius in Python, not JavaScript").complete()
    assert {"tokens", "terms", "entities"}.isdisjoint(vars(prepared))
    assert {"numbers", "units", "directions", "words", "code_languages"} <= set(vars(prepared))
    assert FalseHitGuard().check_prepared(prepare("Convert 100 °C to Fahrenheit"), prepared) == "direction"


def test_the_cache_refuses_exactly_what_the_guard_refuses_fresh_and_after_a_reload(
    single_thread_default_embedder: NativeEmbedder, tmp_path: Path
) -> None:
    pairs = _prompt_pairs()[::2]
    guard = FalseHitGuard()
    # threshold -1: every stored prompt is a candidate, so the guard alone decides; one per namespace.
    cache = SemanticCache(single_thread_default_embedder, threshold=-1.0)
    for i, (_, q2) in enumerate(pairs):
        cache.update(q2, f"answer {i}", namespace=f"pair-{i}")
    expected = [guard.check(q1, q2) is None for q1, q2 in pairs]
    assert 20 < sum(expected) < len(pairs) - 20

    def served(c: SemanticCache) -> list[bool]:
        return [c.lookup(q1, namespace=f"pair-{i}") is not None for i, (q1, _) in enumerate(pairs)]

    assert served(cache) == expected
    assert cache.stats().guard_rejections == len(pairs) - sum(expected)
    cache.save(tmp_path / "c.bsc")
    reloaded = SemanticCache.load(tmp_path / "c.bsc", single_thread_default_embedder)
    assert served(reloaded) == expected  # analysed at first lookup this time


# ------------------------------------------------------------------ the text layer's own hit type


def test_the_vector_layer_hit_has_no_text_fields_and_the_text_hit_carries_them(
    single_thread_default_embedder: NativeEmbedder,
) -> None:
    assert {f.name for f in dataclasses.fields(Hit)} == {
        "response",
        "similarity",
        "distance",
        "id",
        "metadata",
        "namespace",
    }
    cache = SemanticCache(single_thread_default_embedder)
    cache.update("What is the capital of France?", "Paris", metadata={"source": "atlas"})
    exact = cache.lookup("What is the capital of France?")
    near = cache.lookup("Which city is the capital of France?")
    for hit, is_exact in ((exact, True), (near, False)):
        assert isinstance(hit, TextHit) and isinstance(hit, Hit)
        assert hit.exact is is_exact and hit.prompt == "What is the capital of France?"
        assert hit.metadata == {"source": "atlas"}
    # The vector layer under it knows nothing of prompts.
    vector = cache.cache.get(single_thread_default_embedder.embed(["What is the capital of France?"])[0])
    assert type(vector) is Hit and not hasattr(vector, "prompt")
    assert bsc.TextHit is TextHit


def test_an_entry_stored_straight_into_the_vector_cache_is_a_hit_without_a_prompt(
    single_thread_default_embedder: NativeEmbedder,
) -> None:
    seen: list[str | None] = []
    cache = SemanticCache(single_thread_default_embedder, verifier=lambda q, h: seen.append(h.prompt) or True)
    cache.cache.put(single_thread_default_embedder.embed(["What is the capital of France?"])[0], "Paris")
    hit = cache.lookup("Which city is the capital of France?")
    assert hit is not None and hit.response == "Paris" and hit.prompt is None and hit.metadata is None
    assert seen == [None]


# ------------------------------------------------------------------ validation at the edge


def test_a_prompt_or_namespace_of_the_wrong_type_or_value_is_refused_on_every_path(
    single_thread_default_embedder: NativeEmbedder,
) -> None:
    cache = SemanticCache(single_thread_default_embedder)
    cache.update("hello", "world")
    for call in (
        lambda: cache.lookup(b"hello"),  # type: ignore[arg-type]
        lambda: cache.update(None, "x"),  # type: ignore[arg-type]
        lambda: cache.lookup("hello", namespace=3),  # type: ignore[arg-type]
        lambda: cache.lookup("never stored", namespace=None),  # type: ignore[arg-type]
        lambda: cache.update("hello", "x", namespace=b"ns"),  # type: ignore[arg-type]
        lambda: cache.lookup_many(["a", 2]),  # type: ignore[list-item]
        lambda: asyncio.run(cache.alookup("hello", namespace=1)),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="must be a str"):
            call()
    with pytest.raises(ValueError, match="namespace must be valid Unicode"):
        cache.lookup("hello", namespace="bad \ud800")
    with pytest.raises(ValueError, match="namespace must be valid Unicode"):
        cache.update("hello", "x", namespace="bad \ud800")
    assert len(cache) == 1 and cache.lookup("hello").response == "world"  # type: ignore[union-attr]


# ------------------------------------------------------------------ snapshots written before


def test_a_snapshot_saved_before_the_text_records_loads_and_hits(
    single_thread_default_embedder: NativeEmbedder, tmp_path: Path
) -> None:
    path = tmp_path / "old.bsc"
    shutil.copy(OLD_SNAPSHOT, path)  # tests/data/make_text_snapshot.py, run with 786a11d's package
    cache = SemanticCache(single_thread_default_embedder, path=path)
    assert len(cache) == 4
    exact = cache.lookup("What is the capital of France?")
    assert exact is not None and exact.exact and exact.response == "Paris"
    assert exact.metadata == {"source": "atlas", "tags": ["geo"]}
    near = cache.lookup("Which city is the capital of France?")
    assert near is not None and not near.exact and near.prompt == "What is the capital of France?"
    percent = cache.lookup("What is 15 percent of 80?")
    assert percent is not None and percent.response == "12"  # the guard lets a spelled-out % through
    # ... and refuses another figure (cosine 0.82, so a looser threshold makes it a candidate).
    loose = SemanticCache(single_thread_default_embedder, path=path, threshold=0.8)
    assert loose.lookup("What is 25% of 80?") is None and loose.stats().guard_rejections == 1
    code = cache.lookup("How do I reverse a list in Python?", namespace="code")
    assert code is not None and code.exact and code.response == b"xs[::-1]"
    assert cache.lookup("How do I reverse a list in Python?") is None  # namespaces stay apart
    long_prompt = f"Context: {LONG_CONTEXT}\nQuestion: Who founded the company?"
    assert cache.lookup(f"Context: {LONG_CONTEXT}\nQuestion: Who owns the company?") is None  # exact-only
    assert cache.lookup(long_prompt).response == "the founder"  # type: ignore[union-attr]
    # Saved again by this version, it reads back the same.
    cache.update("What is the capital of Spain?", "Madrid")
    cache.save()
    again = SemanticCache.load(path, single_thread_default_embedder)
    assert again.lookup("What is the capital of Spain?").exact  # type: ignore[union-attr]
    assert again.lookup(long_prompt).exact  # type: ignore[union-attr]


def test_a_guard_subclass_that_refines_check_is_still_asked_by_the_cache(
    single_thread_default_embedder: NativeEmbedder,
) -> None:
    class NoPython(FalseHitGuard):
        """A user's extra rule, written against the string API."""

        def check(self, query: str, cached: str) -> str | None:
            if "python" in query.lower() and "python" not in cached.lower():
                return "no-python"
            return super().check(query, cached)

    seen: list[tuple[str, str]] = []

    class Recording(FalseHitGuard):
        """One that keeps the prepared path and sees the prompts as given."""

        def check_prepared(self, query: Any, cached: Any) -> str | None:
            rule = super().check_prepared(query, cached)
            seen.append((query.source, cached.source))
            return rule

    cache = SemanticCache(single_thread_default_embedder, guard=NoPython(), threshold=0.5)
    cache.update("How do I sort a list?", "sorted(xs)")
    assert cache.lookup("How do I sort a list in Python?") is None
    assert cache.lookup("How can I sort a list?") is not None
    assert NoPython().check("Sort in Python?", "Sort?") == "no-python"
    other = SemanticCache(single_thread_default_embedder, guard=Recording(), threshold=0.5)
    other.update("When did WWII start?", "1939")
    assert other.lookup("When did WWII end?") is None and other.stats().guard_rejections == 1
    assert seen == [("When did WWII end?", "When did WWII start?")]

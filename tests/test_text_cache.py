"""SemanticCache: text in, answer out, with the real local model: exact fast path, memo, guard, verifier."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from bsc import FalseHitGuard, SemanticCache, TextHit


class CountingEmbedder:
    """The real default embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        self.texts.extend(texts)
        return self.inner.embed(texts)  # type: ignore[no-any-return]

    async def aembed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        self.texts.extend(texts)
        return await self.inner.aembed(texts)  # type: ignore[no-any-return]

    def overflows(self, texts: list[str]) -> list[bool]:
        return self.inner.overflows(texts)  # type: ignore[no-any-return]


@pytest.fixture
def embedder(single_thread_default_embedder: Any) -> CountingEmbedder:
    return CountingEmbedder(single_thread_default_embedder)


def test_paraphrase_hits_and_unrelated_misses(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder)
    cache.update("What is the capital of France?", "Paris")
    hit = cache.lookup("Which city is the capital of France?")
    assert hit is not None and hit.response == "Paris" and not hit.exact
    assert hit.prompt == "What is the capital of France?"
    assert cache.lookup("How do I bake sourdough bread?") is None
    s = cache.stats()
    assert (s.semantic_hits, s.misses, s.exact_hits) == (1, 1, 0)


def test_exact_repeat_hits_without_embedding(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder)
    cache.update("What is the capital of France?", "Paris")
    embedded = len(embedder.texts)
    hit = cache.lookup("What is the capital of France?  \r\n")  # trailing space and line ending only
    assert hit is not None and hit.exact and hit.response == "Paris" and hit.similarity == 1.0
    assert len(embedder.texts) == embedded
    assert cache.stats().exact_hits == 1


def test_lookup_then_update_of_a_miss_embeds_once(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder)
    text = "Explain the difference between TCP and UDP."
    assert cache.lookup(text) is None
    cache.update(text, "TCP is connection-oriented; UDP is not.")
    assert embedder.texts.count(text) == 1


def test_guard_refuses_a_confident_wrong_hit(embedder: CountingEmbedder) -> None:
    guarded = SemanticCache(embedder, threshold=0.8)
    unguarded = SemanticCache(embedder, threshold=0.8, guard=False)
    for cache in (guarded, unguarded):
        cache.update("What is 15% of 80?", "12")
    # The embedding alone calls these the same question (the unguarded cache serves "12")...
    wrong = unguarded.lookup("What is 25% of 80?")
    assert wrong is not None and wrong.response == "12"
    # ...the guard sees the changed number.
    assert guarded.lookup("What is 25% of 80?") is None
    assert guarded.stats().guard_rejections == 1
    assert guarded.lookup("what's 15 percent of 80?") is not None


def test_a_refused_candidate_does_not_hide_the_next_one(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder, threshold=0.8)
    cache.update("Convert 100 degrees Celsius to Fahrenheit", "212 °F")
    cache.update("Convert 100 degrees Fahrenheit to Celsius", "37.8 °C")
    hit = cache.lookup("Please convert 100 degrees Fahrenheit into Celsius")
    assert hit is not None and hit.response == "37.8 °C"


def test_verifier_hook_can_refuse_semantic_hits(embedder: CountingEmbedder) -> None:
    seen: list[tuple[str, str | None]] = []

    def verifier(query: str, hit: TextHit) -> bool:
        seen.append((query, hit.prompt))
        return False

    cache = SemanticCache(embedder, verifier=verifier)
    cache.update("What is the capital of France?", "Paris")
    assert cache.lookup("Which city is the capital of France?") is None
    assert seen == [("Which city is the capital of France?", "What is the capital of France?")]
    assert cache.stats().verifier_rejections == 1
    assert cache.lookup("What is the capital of France?") is not None  # exact repeats skip the verifier


def test_update_of_the_same_text_replaces_the_answer(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder)
    cache.update("Summarise our refund policy", "v1")
    cache.update("Summarise our refund policy", "v2", metadata={"rev": 2})
    assert len(cache) == 1
    hit = cache.lookup("Summarise our refund policy")
    assert hit is not None and hit.response == "v2" and hit.metadata == {"rev": 2}


def test_namespaces_partition_answers(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder)
    cache.update("What is the capital of France?", "Paris", namespace="gpt-a")
    assert cache.lookup("What is the capital of France?", namespace="gpt-b") is None
    assert cache.lookup("Which city is the capital of France?", namespace="gpt-b") is None
    cache.clear("gpt-a")
    assert cache.lookup("What is the capital of France?", namespace="gpt-a") is None


def test_batch_lookups_and_updates(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder)
    ids = cache.update_many(["How tall is Mount Everest?", "Who wrote Hamlet?"], ["8,849 m", "Shakespeare"])
    assert len(ids) == 2
    hits = cache.lookup_many(
        ["Who is the author of Hamlet?", "How tall is Mount Everest?", "Best pizza dough?"]
    )
    assert [h.response if h else None for h in hits] == ["Shakespeare", "8,849 m", None]
    assert hits[1] is not None and hits[1].exact


def test_async_lookup_and_update(embedder: CountingEmbedder) -> None:
    async def scenario() -> TextHit | None:
        cache = SemanticCache(embedder)
        await cache.aupdate("How do I reverse a list in Python?", "lst[::-1]")
        return await cache.alookup("How can I reverse a Python list?")

    hit = asyncio.run(scenario())
    assert hit is not None and hit.response == "lst[::-1]"


def test_bad_text_input_raises_type_error(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder)
    with pytest.raises(TypeError, match="prompt 0 must be a str"):
        cache.lookup(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prompt 1 must be a str"):
        cache.update_many(["ok", 3], ["a", "b"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="guard"):
        SemanticCache(embedder, guard="yes")  # type: ignore[arg-type]
    assert len(cache) == 0


def test_custom_guard_rules_are_used(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder, guard=FalseHitGuard(rules=[]), threshold=0.8)
    cache.update("What is 15% of 80?", "12")
    assert cache.lookup("What is 25% of 80?") is not None


def test_exact_table_never_serves_another_prompt_after_slot_reuse(embedder: CountingEmbedder) -> None:
    # ids carry an 8-bit generation: after 256 reuses of a slot an old id names a new entry. The exact
    # table must still only answer the prompt that was stored.
    cache = SemanticCache(embedder, max_entries=3)
    cache.update("What is the capital of France?", "Paris")
    cache.update("Tell me a joke", "knock knock")
    for i in range(600):
        cache.update("What's the weather today?", f"weather report #{i}")
        cache.update("How tall is Mount Everest?", "8,849 m")
    # France's entry was evicted long ago (max_entries=3) and its slot reused hundreds of times: a miss,
    # never another prompt's answer through the stale id.
    assert cache.lookup("What is the capital of France?") is None
    live = cache.lookup("How tall is Mount Everest?")
    assert live is not None and live.exact and live.response == "8,849 m"


def test_prompts_longer_than_the_model_reads_are_matched_exactly_only(embedder: CountingEmbedder) -> None:
    # MiniLM reads 256 tokens: two RAG prompts with the same long context and different questions
    # embed identically, so a semantic hit between them would be a confident wrong answer.
    context = " ".join(f"Fact {i}: the warehouse in city {i} opened in year {1900 + i}." for i in range(60))
    assert embedder.inner.overflows([context]) == [True]
    cache = SemanticCache(embedder)
    first = f"Context: {context}\nQuestion: Who founded the company?"
    cache.update(first, "the founder")
    assert cache.lookup(f"Context: {context}\nQuestion: How do I reset my router?") is None
    assert cache.lookup(first).response == "the founder"  # type: ignore[union-attr]
    # A short prompt is never answered by the long prompt's entry either.
    assert cache.lookup("Who founded the company?") is None


def test_exact_matching_keeps_what_changes_meaning(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder, guard=False, threshold=0.999)
    cache.update("What is 2³?", "8")
    cache.update("Is this valid Python?\nif x:\n    pass", "yes")
    # "2³" is not "23" (NFKC would fold it): a miss, not an exact hit (the embeddings are far apart).
    assert cache.lookup("What is 23?") is None
    # Indentation is kept by the exact key: only the embedding (which ignores it) finds the entry.
    hit = cache.lookup("Is this valid Python?\nif x:\npass")
    assert hit is not None and hit.response == "yes" and not hit.exact
    assert cache.lookup("What is 2³?  ").exact  # type: ignore[union-attr]
    # A run of spaces inside the line is not an exact repeat; the embedding (which ignores it) finds it.
    spaced = cache.lookup("What is  2³?")
    assert spaced is not None and not spaced.exact


def test_a_prompt_with_a_lone_surrogate_is_served_and_its_snapshot_reopens(
    embedder: CountingEmbedder, tmp_path: Any
) -> None:
    import json

    prompt = json.loads('"caf\\ud800 au lait, how is it made?"')  # what a web request can carry
    path = tmp_path / "cache.bsc"
    cache = SemanticCache(embedder, guard=False, path=path)
    cache.update(prompt, "with milk", metadata={"note": json.loads('"\\udfff"')})
    hit = cache.lookup(prompt)
    assert hit is not None and hit.exact and hit.response == "with milk" and hit.prompt == prompt
    assert all("\ud800" not in t for t in embedder.texts)  # the embedder got valid UTF-8
    cache.save()
    reopened = SemanticCache(embedder, guard=False, path=path)
    again = reopened.lookup(prompt)
    assert again is not None and again.exact and again.metadata == {"note": "\udfff"}
    near = reopened.lookup(json.loads('"caf\\ud800 au lait: how is it made?"'))
    assert near is not None and near.response == "with milk" and not near.exact


def test_prompts_differing_in_runs_of_spaces_are_not_exact_matches(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder, guard=False)
    cache.update("| a  | b |\n|----|---|\n| 1  | 2 |", "table one")
    cache.update("def f():\n    return  1", "code")
    for other in ("| a | b |\n|----|---|\n| 1 | 2 |", "def f():\n    return 1"):
        hit = cache.lookup(other)
        assert hit is not None and not hit.exact  # found by meaning (same tokens), not marked exact
    same = cache.lookup("def f():   \r\n    return  1\n\n")  # trailing spaces and line endings only
    assert same is not None and same.exact and same.response == "code"


class _CheapEmbedder:
    """A deterministic hashing embedder: these tests count table entries and bytes held, not meaning,
    and run tens of thousands of updates (the real model is used everywhere else in this file)."""

    dim = 16
    name = "hash"

    def __init__(self) -> None:
        self.batches: list[npt.NDArray[np.float32]] = []

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        import hashlib

        seeds = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in texts]
        out = np.array([np.random.default_rng(s).standard_normal(self.dim) for s in seeds], dtype=np.float32)
        self.batches.append(out)
        return out

    async def aembed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return self.embed(texts)


def test_exact_tables_stay_bounded_by_the_live_entries_with_one_namespace_per_conversation() -> None:
    cache = SemanticCache(_CheapEmbedder(), guard=False, max_entries=50, memo_size=16)
    for conversation in range(6000):
        cache.update(f"turn of conversation {conversation}", "ok", namespace=f"conv-{conversation}")
    keys = sum(len(t) for t in cache._exact.values())
    assert len(cache) == 50
    assert keys <= 2 * 50 + 1024 and len(cache._exact) <= 2 * 50 + 1024
    assert len(cache._records) <= 2 * 50 + 1024
    last = cache.lookup("turn of conversation 5999", namespace="conv-5999")
    assert last is not None and last.exact


def test_the_memo_does_not_keep_the_embedders_batch_arrays_alive() -> None:
    import gc
    import weakref

    embedder = _CheapEmbedder()
    cache = SemanticCache(embedder, guard=False, memo_size=1024)
    cache.update_many([f"text {i}" for i in range(3000)], ["r"] * 3000)
    batch = weakref.ref(embedder.batches.pop())
    gc.collect()
    assert batch() is None  # the memo holds copies of its 1,024 rows, not views into the batch


@pytest.mark.parametrize(("memo_size", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_a_bad_memo_size_is_refused_at_construction(memo_size: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="memo_size"):
        SemanticCache(_CheapEmbedder(), memo_size=memo_size)  # type: ignore[arg-type]


def test_one_set_of_counters_the_vector_layer_counts_text_level_lookups(embedder: CountingEmbedder) -> None:
    cache = SemanticCache(embedder)
    cache.update("What is the capital of France?", "Paris")
    assert cache.lookup("Which city is the capital of France?") is not None  # semantic hit
    assert cache.lookup("What is the capital of France?") is not None  # exact hit
    assert cache.lookup("How do I bake sourdough bread?") is None  # miss after a search
    assert cache.lookup("anything", namespace="empty") is None  # miss without a search
    s = cache.stats()
    assert (s.cache.hits, s.cache.misses) == (2, 2)  # was (0, 0): the text path only searched
    assert (s.exact_hits, s.semantic_hits, s.misses, s.hit_rate) == (1, 1, 2, 0.5)
    assert s.hit_rate == s.cache.hit_rate


def test_lookups_on_loaded_entries_race_updates_that_sweep_the_tables_without_errors(tmp_path: Any) -> None:
    import sys
    import threading

    path = tmp_path / "c.bsc"
    seeded = SemanticCache(_CheapEmbedder(), max_entries=40)
    for i in range(40):
        seeded.update(f"prompt {i}", f"answer {i}")
    seeded.save(path)
    # Loaded: no guard analysis yet and, after a clear of the records, records built on first sight.
    cache = SemanticCache(_CheapEmbedder(), path=path, threshold=0.999)
    cache._records.clear()
    errors: list[BaseException] = []
    wrong: list[tuple[str, str]] = []

    def reader() -> None:
        try:
            for round_ in range(300):
                i = round_ % 40
                hit = cache.lookup(f"prompt {i}")
                if hit is not None and hit.response != f"answer {i}":
                    wrong.append((f"prompt {i}", str(hit.response)))
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    def writer() -> None:
        try:
            for i in range(3000):  # evicts and sweeps the exact tables and records many times over
                cache.update(f"new prompt {i}", "new", namespace=f"conv-{i}")
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, inside the sweeps too
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and wrong == []
    assert len(cache._records) <= 2 * 40 + 1024

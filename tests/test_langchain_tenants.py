"""Tenants and hit markers across the LangChain integration: `cache_namespace` for the BaseCache,
``namespace_key`` for the runnable, markers and the hit event on real chat models and chains, and a
batch answering identical questions once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_bsc import HIT_EVENT, BinarySemanticLLMCache, SemanticCacheRunnable, cache_namespace
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda

QUESTION = "What is the capital of France?"
PARAPHRASE = "Which city is the capital of France?"


class HitCounter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.hits: list[dict[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == HIT_EVENT:
            self.hits.append(data)


@pytest.fixture
def cache(single_thread_default_embedder: object) -> BinarySemanticLLMCache:
    return BinarySemanticLLMCache()


@pytest.fixture
def global_cache(cache: BinarySemanticLLMCache) -> Any:
    set_llm_cache(cache)
    yield cache
    set_llm_cache(None)


# ------------------------------------------------------------------ BaseCache
def test_cache_namespace_keeps_tenants_apart_in_the_base_cache(global_cache: BinarySemanticLLMCache) -> None:
    model = FakeListChatModel(responses=["alice's answer", "bob's answer", "shared answer"])
    with cache_namespace("alice"):
        assert model.invoke(QUESTION).content == "alice's answer"
    with cache_namespace("bob"):
        assert model.invoke(PARAPHRASE).content == "bob's answer"
    assert model.invoke(PARAPHRASE).content == "shared answer"  # outside any tenant: its own partition
    with cache_namespace("alice"):
        served = model.invoke(PARAPHRASE)
    assert served.content == "alice's answer"
    assert served.response_metadata["bsc_cache"]["exact"] is False


def test_cache_namespace_follows_async_tasks(global_cache: BinarySemanticLLMCache) -> None:
    model = FakeListChatModel(responses=["alice's answer", "bob's answer"])

    async def ask(tenant: str, question: str) -> str:
        with cache_namespace(tenant):
            return str((await model.ainvoke(question)).content)

    async def main() -> list[str]:
        await ask("alice", QUESTION)
        return list(await asyncio.gather(ask("alice", PARAPHRASE), ask("bob", PARAPHRASE)))

    assert asyncio.run(main()) == ["alice's answer", "bob's answer"]


def test_clear_inside_a_tenant_clears_only_that_tenant(global_cache: BinarySemanticLLMCache) -> None:
    model = FakeListChatModel(responses=["a", "b", "c"])
    for tenant in ("alice", "bob"):
        with cache_namespace(tenant):
            model.invoke(QUESTION)
    with cache_namespace("alice"):
        global_cache.clear()
    assert len(global_cache) == 1
    with cache_namespace("bob"):
        assert model.invoke(QUESTION).content == "b"


def test_cache_namespace_rejects_a_non_str() -> None:
    with pytest.raises(TypeError, match="str"), cache_namespace(42):  # type: ignore[arg-type]
        pass


def test_a_base_cache_hit_in_a_chain_dispatches_the_hit_event(global_cache: BinarySemanticLLMCache) -> None:
    model = FakeListChatModel(responses=["Paris", "unused"])
    chain = RunnableLambda(lambda q: q) | model
    counter = HitCounter()
    chain.invoke(QUESTION, {"callbacks": [counter]})
    chain.invoke(PARAPHRASE, {"callbacks": [counter]})
    assert [h["exact"] for h in counter.hits] == [False]


# ------------------------------------------------------------------ SemanticCacheRunnable
def test_runnable_tenants_from_config_metadata_or_configurable(
    single_thread_default_embedder: object,
) -> None:
    calls: list[str] = []

    def answer(question: str) -> str:
        calls.append(question)
        return f"answer {len(calls)}"

    cached = SemanticCacheRunnable(RunnableLambda(answer), namespace_key="tenant")
    assert cached.invoke(QUESTION, {"metadata": {"tenant": "alice"}}) == "answer 1"
    assert cached.invoke(PARAPHRASE, {"metadata": {"tenant": "bob"}}) == "answer 2"
    assert cached.invoke(PARAPHRASE, {"metadata": {"tenant": "alice"}}) == "answer 1"
    with cache_namespace("carol"):
        assert cached.invoke(PARAPHRASE) == "answer 3"
    assert len(calls) == 3


def test_runnable_hits_dispatch_the_event(single_thread_default_embedder: object) -> None:
    cached = SemanticCacheRunnable(RunnableLambda(lambda q: "Paris"))
    counter = HitCounter()
    cached.invoke(QUESTION, {"callbacks": [counter]})
    cached.invoke(PARAPHRASE, {"callbacks": [counter]})
    assert len(counter.hits) == 1 and counter.hits[0]["hit"] is True


def test_batch_answers_identical_questions_once(single_thread_default_embedder: object) -> None:
    seen: list[str] = []

    def answer(inputs: dict[str, str]) -> str:
        seen.append(inputs["question"])
        return f"answer to {inputs['question']} for {inputs['user']}"

    cached = SemanticCacheRunnable(RunnableLambda(answer), key="question")
    batch = [
        {"question": QUESTION, "user": "a"},
        {"question": QUESTION, "user": "a"},
        {"question": QUESTION, "user": "b"},  # another partition: its own call
        {"question": "What is 2 + 2?", "user": "a"},
        {"question": QUESTION, "user": "a"},
    ]
    outputs = cached.batch(batch)
    assert outputs[0] == outputs[1] == outputs[4] == f"answer to {QUESTION} for a"
    assert outputs[2] == f"answer to {QUESTION} for b"
    assert sorted(seen) == sorted([QUESTION, QUESTION, "What is 2 + 2?"])


async def test_abatch_answers_identical_questions_once(single_thread_default_embedder: object) -> None:
    seen: list[str] = []

    async def answer(question: str) -> str:
        seen.append(question)
        return f"answer to {question}"

    cached = SemanticCacheRunnable(RunnableLambda(answer))
    outputs = await cached.abatch([QUESTION, "What is 2 + 2?", QUESTION, QUESTION])
    assert outputs == [f"answer to {QUESTION}", "answer to What is 2 + 2?"] + [f"answer to {QUESTION}"] * 2
    assert sorted(seen) == sorted([QUESTION, "What is 2 + 2?"])

"""`langchain_bsc.BinarySemanticLLMCache`: LangChain's standard cache suites, keys, and semantic behaviour
with the real local embedder and real LangChain models whose upstream calls are counted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LoopHandshake

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

import langchain_bsc
from langchain_bsc import BinarySemanticLLMCache, PromptKey, default_prompt_key
from langchain_bsc.demo import SimulatedChatModel
from langchain_core.caches import BaseCache
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models import LLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.content import create_image_block, create_text_block
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

pytestmark = pytest.mark.filterwarnings("error")

QUESTION = "What is the capital of France?"
PARAPHRASE = "Which city is the capital of France?"
UNRELATED = "How do I reverse a list in Python?"


@pytest.fixture
def cache(single_thread_default_embedder: object) -> BinarySemanticLLMCache:
    """A default-constructed cache (the embedder is loaded once per process by the fixture)."""
    return BinarySemanticLLMCache()


@pytest.fixture
def global_cache(cache: BinarySemanticLLMCache) -> Iterator[BinarySemanticLLMCache]:
    previous = get_llm_cache()
    set_llm_cache(cache)
    try:
        yield cache
    finally:
        set_llm_cache(previous)


class TestSyncStandardSuite(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, single_thread_default_embedder: object) -> BaseCache:
        return BinarySemanticLLMCache()


class TestAsyncStandardSuite(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, single_thread_default_embedder: object) -> BaseCache:
        return BinarySemanticLLMCache()


# ------------------------------------------------------------------ the package
def test_all_lists_the_public_api() -> None:
    assert langchain_bsc.__all__ == [
        "HIT_EVENT",
        "BinarySemanticLLMCache",
        "PromptKey",
        "PromptKeyFunction",
        "SemanticCacheChatModel",
        "SemanticCacheMiddleware",
        "SemanticCacheRunnable",
        "__version__",
        "cache_namespace",
        "default_prompt_key",
    ]
    for name in langchain_bsc.__all__:
        assert getattr(langchain_bsc, name) is not None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("CacheKey", "PromptKey"),
        ("KeyFunction", "PromptKeyFunction"),
        ("default_cache_key", "default_prompt_key"),
    ],
)
def test_old_key_names_still_work_but_warn(old: str, new: str) -> None:
    with pytest.warns(
        DeprecationWarning, match=rf"langchain_bsc\.{old} is deprecated; use langchain_bsc\.{new}"
    ):
        value = getattr(langchain_bsc, old)
    assert value is getattr(langchain_bsc, new)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        langchain_bsc.NoSuchName  # noqa: B018


# ------------------------------------------------------------------ keys (no embedding)
def test_chat_key_embeds_only_the_last_human_message() -> None:
    key = default_prompt_key(
        dumps(
            [
                SystemMessage("Be brief."),
                HumanMessage("first question"),
                AIMessage("first answer"),
                HumanMessage("second question"),
            ]
        )
    )
    assert key.text == "second question"
    assert "first question" in key.partition and "Be brief." in key.partition
    assert "second question" not in key.partition


def test_chat_key_partition_differs_by_system_prompt_and_history() -> None:
    question = HumanMessage("And in winter?")
    a = default_prompt_key(dumps([SystemMessage("Weather bot for Oslo."), question]))
    b = default_prompt_key(dumps([SystemMessage("Weather bot for Rome."), question]))
    c = default_prompt_key(
        dumps([SystemMessage("Weather bot for Oslo."), HumanMessage("Hi"), AIMessage("Hello"), question])
    )
    assert a.text == b.text == c.text == "And in winter?"
    assert len({a.partition, b.partition, c.partition}) == 3


def test_chat_key_keeps_non_text_parts_of_the_question_in_the_partition() -> None:
    def with_image(url: str) -> PromptKey:
        content: list[str | dict[str, Any]] = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return default_prompt_key(dumps([HumanMessage(content=content)]))

    cat, dog = with_image("https://example.invalid/cat.png"), with_image("https://example.invalid/dog.png")
    assert cat.text == dog.text == "What is in this picture?"
    assert cat.partition != dog.partition


def test_chat_key_ignores_the_random_ids_of_standard_content_blocks() -> None:
    def picture_question(block_id: str | None = None) -> PromptKey:
        image = create_image_block(url="https://example.invalid/cat.png")
        if block_id is not None:
            image["id"] = block_id
        blocks = [create_text_block("What is in this picture?"), image]
        history = [AIMessage(content_blocks=[create_text_block("Send me a picture.")])]
        return default_prompt_key(dumps([*history, HumanMessage(content_blocks=blocks)]))

    assert picture_question() == picture_question()
    assert picture_question().text == "What is in this picture?"
    assert picture_question("img-1").partition != picture_question("img-2").partition


def test_rebuilt_content_block_message_is_an_exact_hit(cache: BinarySemanticLLMCache) -> None:
    model = FakeListChatModel(responses=["a cat", "a dog"], cache=cache)
    for _ in range(2):
        question = HumanMessage(
            content_blocks=[
                create_text_block("What is in this picture?"),
                create_image_block(url="https://example.invalid/cat.png"),
            ]
        )
        assert model.invoke([question]).content == "a cat"
    assert cache.stats().exact_hits == 1


def test_chat_key_counts_turns_after_the_question_and_the_question_name() -> None:
    question = HumanMessage("Look up order 7", name="alice")
    tool_turn = [AIMessage("", tool_calls=[{"name": "lookup", "args": {"id": 7}, "id": "c1"}])]
    plain = default_prompt_key(dumps([question]))
    after_tools = default_prompt_key(dumps([question, *tool_turn]))
    other_user = default_prompt_key(dumps([HumanMessage("Look up order 7", name="bob")]))
    assert plain.text == after_tools.text == other_user.text == "Look up order 7"
    assert len({plain.partition, after_tools.partition, other_user.partition}) == 3


def test_text_prompt_is_embedded_whole_with_an_empty_partition() -> None:
    assert default_prompt_key("Summarise: [{not json") == PromptKey("Summarise: [{not json", "")


def test_chat_prompt_without_a_human_message_matches_exactly_only() -> None:
    key = default_prompt_key(dumps([SystemMessage("Say hi.")]))
    assert key.text == ""
    assert "Say hi." in key.partition


# ------------------------------------------------------------------ BaseCache contract
def test_update_then_lookup_round_trips_chat_generations(cache: BinarySemanticLLMCache) -> None:
    generations = [
        ChatGeneration(
            message=AIMessage(
                "Paris",
                tool_calls=[{"name": "f", "args": {"a": 1}, "id": "t1"}],
                usage_metadata={"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
            ),
            generation_info={"finish_reason": "stop"},
        )
    ]
    cache.update(QUESTION, "llm", generations)
    found = cache.lookup(QUESTION, "llm")
    assert type(found) is list
    # The same generation, marked as a verbatim hit.
    marker = {"hit": True, "similarity": 1.0, "exact": True}
    assert found[0].message.response_metadata == {"bsc_cache": marker}
    unmarked = found[0].message.model_copy(update={"response_metadata": {}})
    assert [found[0].model_copy(update={"message": unmarked})] == generations
    assert found[0] is not generations[0]


def test_chunk_generations_round_trip(cache: BinarySemanticLLMCache) -> None:
    generations = [ChatGenerationChunk(message=AIMessageChunk("Paris"))]
    cache.update(QUESTION, "llm", generations)
    (found,) = cache.lookup(QUESTION, "llm")
    assert isinstance(found, ChatGenerationChunk) and isinstance(found.message, AIMessageChunk)
    assert found.text == "Paris" and found.message.response_metadata["bsc_cache"]["exact"] is True


def test_other_llm_string_never_gets_this_ones_answer(cache: BinarySemanticLLMCache) -> None:
    cache.update(QUESTION, "model-a", [Generation(text="from a")])
    cache.update(QUESTION, "model-b", [Generation(text="from b")])
    assert cache.lookup(QUESTION, "model-a") == [Generation(text="from a")]
    assert cache.lookup(QUESTION, "model-b") == [Generation(text="from b")]
    assert cache.lookup(QUESTION, "model-c") is None


def test_clear_with_llm_string_clears_only_that_partition(cache: BinarySemanticLLMCache) -> None:
    chat = dumps([SystemMessage("Be brief."), HumanMessage(QUESTION)])
    cache.update(QUESTION, "model-a", [Generation(text="a")])
    cache.update(chat, "model-a", [Generation(text="a chat")])
    cache.update(QUESTION, "model-b", [Generation(text="b")])
    cache.clear(llm_string="model-a")
    assert cache.lookup(QUESTION, "model-a") is None
    assert cache.lookup(chat, "model-a") is None
    assert cache.lookup(QUESTION, "model-b") == [Generation(text="b")]
    cache.clear()
    assert len(cache) == 0


def test_clear_rejects_unknown_keywords(cache: BinarySemanticLLMCache) -> None:
    with pytest.raises(TypeError, match="llm_string"):
        cache.clear(namespace="x")


def test_namespaces_are_isolated(single_thread_default_embedder: object) -> None:
    a, b = BinarySemanticLLMCache(namespace="a"), BinarySemanticLLMCache(namespace="b")
    a.update(QUESTION, "llm", [Generation(text="a")])
    assert b.lookup(QUESTION, "llm") is None


def test_a_custom_key_function_is_used(single_thread_default_embedder: object) -> None:
    def by_text_only(prompt: str) -> PromptKey:
        return PromptKey(prompt.split("|")[-1], "")

    cache = BinarySemanticLLMCache(key=by_text_only)
    cache.update("ctx one|" + QUESTION, "llm", [Generation(text="Paris")])
    assert cache.lookup("ctx two|" + QUESTION, "llm") == [Generation(text="Paris")]


def test_rejects_an_embedding_that_is_not_a_langchain_embeddings() -> None:
    with pytest.raises(TypeError, match="Embeddings"):
        BinarySemanticLLMCache(embedding="all-MiniLM-L6-v2")  # type: ignore[arg-type]


def test_accepts_any_langchain_embeddings() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    cache = BinarySemanticLLMCache(DeterministicFakeEmbedding(size=16))
    cache.update(QUESTION, "llm", [Generation(text="Paris")])
    assert cache.lookup(QUESTION, "llm") == [Generation(text="Paris")]


def test_a_corrupt_entry_is_a_miss_not_an_error(cache: BinarySemanticLLMCache, caplog: Any) -> None:
    text, namespace = cache._locate(QUESTION, "llm")
    cache._cache.update(
        text, '[{"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}}]', namespace=namespace
    )
    assert cache.lookup(QUESTION, "llm") is None
    assert "does not load" in caplog.text


def test_ttl_expires_entries(single_thread_default_embedder: object) -> None:
    now = [0.0]
    cache = BinarySemanticLLMCache(ttl=10.0)
    cache._cache.cache._clock = lambda: now[0]  # the binary cache reads its clock at each call
    cache.update(QUESTION, "llm", [Generation(text="Paris")])
    assert cache.lookup(QUESTION, "llm") is not None
    now[0] = 11.0
    assert cache.lookup(QUESTION, "llm") is None


def test_save_and_reload_serves_paraphrases_in_a_new_cache(
    single_thread_default_embedder: object, tmp_path: Any
) -> None:
    path = tmp_path / "llm_cache.bsc"
    chat = dumps([SystemMessage("Be brief."), HumanMessage(QUESTION)])
    cache = BinarySemanticLLMCache(path=path)
    cache.update(chat, "model-a", [ChatGeneration(message=AIMessage("Paris"))])
    cache.save()
    reloaded = BinarySemanticLLMCache(path=path)
    paraphrase = dumps([SystemMessage("Be brief."), HumanMessage(PARAPHRASE)])
    (served,) = reloaded.lookup(paraphrase, "model-a")
    assert served.text == "Paris"
    assert served.message.response_metadata["bsc_cache"]["exact"] is False
    assert reloaded.lookup(paraphrase, "model-b") is None
    assert BinarySemanticLLMCache(namespace="other", path=path).lookup(chat, "model-a") is None


async def test_alookup_does_not_block_the_event_loop(
    single_thread_default_embedder: Any, loop_handshake: LoopHandshake
) -> None:
    gate = {"on": False}

    class RealEmbeddings(Embeddings):
        """bsc's MiniLM as LangChain Embeddings (sync only: LangChain's async runs it in an executor)."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            if gate["on"]:
                loop_handshake.wait_for_the_loop()
            return [[float(x) for x in row] for row in single_thread_default_embedder.embed(texts)]

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    cache = BinarySemanticLLMCache(RealEmbeddings())
    await cache.aupdate(QUESTION, "llm", [Generation(text="Paris")])
    gate["on"] = True
    async with loop_handshake.releasing():
        found = await cache.alookup(PARAPHRASE, "llm")  # a paraphrase: it must be embedded
    assert found == [Generation(text="Paris")]
    await cache.aclear()
    assert len(cache) == 0


# ------------------------------------------------------------------ real LangChain models
class CountingLLM(LLM):
    """A text LLM that answers with a counter and counts its upstream calls."""

    temperature: float = 0.0
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "counting-llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        self.calls += 1
        return f"completion {self.calls} of {prompt}"


class StreamingSimulatedChatModel(SimulatedChatModel):
    """The demo's model with native streaming (LangChain then bypasses the cache in .stream())."""

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
        for word in str(message.content).split(" "):
            yield ChatGenerationChunk(message=AIMessageChunk(word + " "))


def ask(question: str, system: str = "You are a helpful assistant.") -> list[BaseMessage]:
    return [SystemMessage(system), HumanMessage(question)]


def test_chat_paraphrase_is_served_from_cache(global_cache: BinarySemanticLLMCache) -> None:
    model = SimulatedChatModel()
    first = model.invoke(ask(QUESTION))
    again = model.invoke(ask(PARAPHRASE))
    assert model.upstream_calls == 1
    assert again.content == first.content
    assert global_cache.stats().semantic_hits == 1


def test_chat_unrelated_question_is_a_miss(global_cache: BinarySemanticLLMCache) -> None:
    model = SimulatedChatModel()
    model.invoke(ask(QUESTION))
    model.invoke(ask(UNRELATED))
    assert model.upstream_calls == 2


def test_same_question_under_another_system_prompt_or_history_is_a_miss(
    global_cache: BinarySemanticLLMCache,
) -> None:
    model = SimulatedChatModel()
    model.invoke(ask(QUESTION, system="You are a geography tutor."))
    model.invoke(ask(QUESTION, system="You are a pirate. Answer in pirate speak."))
    model.invoke(
        [
            SystemMessage("You are a geography tutor."),
            HumanMessage("Hi"),
            AIMessage("Hello!"),
            HumanMessage(QUESTION),
        ]
    )
    assert model.upstream_calls == 3
    model.invoke(ask(QUESTION, system="You are a geography tutor."))
    assert model.upstream_calls == 3


def test_other_model_parameters_are_a_miss(global_cache: BinarySemanticLLMCache) -> None:
    cold, warm = SimulatedChatModel(temperature=0.0), SimulatedChatModel(temperature=0.9)
    cold.invoke(ask(QUESTION))
    warm.invoke(ask(QUESTION))
    other = SimulatedChatModel(model_name="other-model")
    other.invoke(ask(QUESTION))
    assert (cold.upstream_calls, warm.upstream_calls, other.upstream_calls) == (1, 1, 1)
    cold.invoke(ask(QUESTION), stop=["\n"])  # chat models key call-time kwargs too
    assert cold.upstream_calls == 2


def test_text_llm_paraphrase_is_served_from_cache(global_cache: BinarySemanticLLMCache) -> None:
    llm = CountingLLM()
    first = llm.invoke(QUESTION)
    assert llm.invoke(PARAPHRASE) == first
    assert llm.calls == 1
    other = CountingLLM(temperature=1.0)
    other.invoke(QUESTION)
    assert other.calls == 1


def test_text_llm_call_time_kwargs_do_not_partition_langchain_40403(
    global_cache: BinarySemanticLLMCache,
) -> None:
    # Documents LangChain's behaviour: a text LLM's llm_string omits call-time kwargs.
    llm = CountingLLM()
    llm.invoke(QUESTION, foo=1)
    llm.invoke(QUESTION, foo=2)
    assert llm.calls == 1


def test_per_model_cache_argument(cache: BinarySemanticLLMCache) -> None:
    assert get_llm_cache() is None
    model = SimulatedChatModel(cache=cache)
    model.invoke(ask(QUESTION))
    model.invoke(ask(PARAPHRASE))
    assert model.upstream_calls == 1
    uncached = SimulatedChatModel()
    uncached.invoke(ask(QUESTION))
    uncached.invoke(ask(QUESTION))
    assert uncached.upstream_calls == 2


def test_batch_and_abatch_use_the_cache(global_cache: BinarySemanticLLMCache) -> None:
    model = SimulatedChatModel()
    model.batch([ask(QUESTION), ask(UNRELATED)])
    assert model.upstream_calls == 2
    answers = asyncio.run(model.abatch([ask(PARAPHRASE), ask(UNRELATED)]))
    assert model.upstream_calls == 2
    assert all(isinstance(a, AIMessage) for a in answers)


async def test_ainvoke_uses_the_cache(global_cache: BinarySemanticLLMCache) -> None:
    model = SimulatedChatModel()
    first = await model.ainvoke(ask(QUESTION))
    again = await model.ainvoke(ask(PARAPHRASE))
    assert model.upstream_calls == 1
    assert again.content == first.content


def test_cache_hit_reports_zero_cost_and_keeps_usage(global_cache: BinarySemanticLLMCache) -> None:
    model = SimulatedChatModel()
    model.invoke(ask(QUESTION))
    hit = model.invoke(ask(QUESTION))
    assert isinstance(hit, AIMessage)
    assert hit.usage_metadata is not None and hit.usage_metadata.get("total_cost") == 0


def test_stream_bypasses_the_cache_for_models_that_stream(global_cache: BinarySemanticLLMCache) -> None:
    # LangChain consults caches in invoke/batch/generate only; a model with _stream streams upstream.
    model = StreamingSimulatedChatModel()
    model.invoke(ask(QUESTION))
    "".join(str(chunk.content) for chunk in model.stream(ask(QUESTION)))
    assert model.upstream_calls == 2


def test_stream_of_a_model_without_streaming_is_served_from_cache(
    global_cache: BinarySemanticLLMCache,
) -> None:
    model = SimulatedChatModel()
    first = model.invoke(ask(QUESTION))
    chunks = list(model.stream(ask(PARAPHRASE)))
    assert model.upstream_calls == 1
    assert [c.content for c in chunks] == [first.content]


def test_concurrent_threads_share_one_cache(global_cache: BinarySemanticLLMCache) -> None:
    model = SimulatedChatModel()
    model.invoke(ask(QUESTION))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            assert model.invoke(ask(QUESTION)).content.startswith("[simulated answer 1]")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert model.upstream_calls == 1

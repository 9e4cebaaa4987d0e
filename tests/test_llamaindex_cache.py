"""Tests for `llamaindex_bsc`: the caching LLM wrapper and the question-level query-engine cache.

The inner LLMs are local fakes that count their calls (and LlamaIndex's own `MockLLM`); the cache embeds
with the real local MiniLM, and indexes use `MockEmbedding`, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

import llamaindex_bsc
from bsc import SemanticCache
from bsc.embedders import default_embedder
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import LLM, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.tools import FunctionTool
from llamaindex_bsc import (
    CachingLLM,
    CallKey,
    LLMCall,
    SemanticCacheQueryEngine,
    default_call_key,
    install_llm_cache,
)

QUESTION = "What is the capital of France?"
PARAPHRASE = "Which city is the capital of France?"
UNRELATED = "How do I bake sourdough bread?"
SYSTEM = ChatMessage(role="system", content="You are a geography tutor.")


# ---------------------------------------------------------------- fakes
class CountingLLM(LLM):
    """A chat model whose every answer is numbered, so a replayed answer is told apart from a new one."""

    model: str = "counting-1"
    temperature: float = 0.0
    chat_model: bool = True
    _calls: Counter[str] = PrivateAttr(default_factory=Counter)

    @classmethod
    def class_name(cls) -> str:
        return "CountingLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, is_chat_model=self.chat_model)

    @property
    def calls(self) -> Counter[str]:
        return self._calls

    def _answer(self, method: str, text: str) -> str:
        self._calls[method] += 1
        return f"Answer {self._calls.total()} from {self.model}: about {text[-30:]!r} it is Paris."

    @staticmethod
    def _last(messages: Sequence[ChatMessage]) -> str:
        return messages[-1].content or ""

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer("complete", prompt), raw={"provider": object()})

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        await asyncio.sleep(0)
        return CompletionResponse(text=self._answer("acomplete", prompt))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return ChatResponse(
            message=ChatMessage(
                role="assistant",
                content=self._answer("chat", self._last(messages)),
                additional_kwargs={"finish_reason": "stop", "ids": {1, 2}},
            ),
            raw=object(),
            additional_kwargs={"usage": {"total_tokens": 7}},
        )

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        await asyncio.sleep(0)
        text = self._answer("achat", self._last(messages))
        return ChatResponse(message=ChatMessage(role="assistant", content=text))

    def _words(self, text: str) -> Iterator[tuple[str, str]]:
        so_far = ""
        for word in text.split(" "):
            delta = word if not so_far else " " + word
            so_far += delta
            yield so_far, delta

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._answer("stream_complete", prompt)
        return (CompletionResponse(text=t, delta=d) for t, d in self._words(text))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        text = self._answer("astream_complete", prompt)

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            for t, d in self._words(text):
                await asyncio.sleep(0)
                yield CompletionResponse(text=t, delta=d)

        return gen()

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        text = self._answer("stream_chat", self._last(messages))

        def gen() -> Generator[ChatResponse, None, None]:
            for t, d in self._words(text):
                yield ChatResponse(message=ChatMessage(role="assistant", content=t), delta=d)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        text = self._answer("astream_chat", self._last(messages))

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for t, d in self._words(text):
                await asyncio.sleep(0)
                yield ChatResponse(message=ChatMessage(role="assistant", content=t), delta=d)

        return gen()


class CountingRetriever(BaseRetriever):
    """Counts retrievals of the retriever it wraps."""

    def __init__(self, inner: BaseRetriever) -> None:
        super().__init__()
        self.inner = inner
        self.count = 0

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.count += 1
        return self.inner.retrieve(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.count += 1
        return await self.inner.aretrieve(query_bundle)


DOCS = [
    Document(text="The warranty lasts two years from the date of purchase.", metadata={"page": 3}),
    Document(text="Our head office is in Lyon, France.", metadata={"page": 9}),
]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def offline_settings() -> Iterator[None]:
    """Explicit offline LlamaIndex settings (no default OpenAI model, no tokenizer download)."""
    saved = (Settings._llm, Settings._embed_model, Settings._tokenizer)
    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.tokenizer = str.split
    yield
    Settings._llm, Settings._embed_model, Settings._tokenizer = saved


@pytest.fixture(scope="module")
def embedder() -> Any:
    return default_embedder()


@pytest.fixture
def inner() -> CountingLLM:
    return CountingLLM()


@pytest.fixture
def llm(inner: CountingLLM, embedder: Any) -> CachingLLM:
    return CachingLLM(llm=inner, embedder=embedder)


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


# ---------------------------------------------------------------- package surface
def test_all_lists_exactly_the_public_api() -> None:
    assert sorted(llamaindex_bsc.__all__) == [
        "CachingLLM",
        "CallKey",
        "CallKeyFunction",
        "LLMCall",
        "SemanticCacheQueryEngine",
        "__version__",
        "default_call_key",
        "install_llm_cache",
    ]
    for name in llamaindex_bsc.__all__:
        assert hasattr(llamaindex_bsc, name)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("BinarySemanticCacheLLM", "CachingLLM"),
        ("CacheKey", "CallKey"),
        ("KeyFunction", "CallKeyFunction"),
        ("default_cache_key", "default_call_key"),
    ],
)
def test_old_names_still_work_but_warn(old: str, new: str) -> None:
    with pytest.warns(
        DeprecationWarning, match=rf"llamaindex_bsc\.{old} is deprecated; use llamaindex_bsc\.{new}"
    ):
        value = getattr(llamaindex_bsc, old)
    assert value is getattr(llamaindex_bsc, new)


def test_the_deprecated_class_name_builds_the_same_wrapper() -> None:
    with pytest.warns(DeprecationWarning, match="use llamaindex_bsc.CachingLLM"):
        from llamaindex_bsc import BinarySemanticCacheLLM
    assert isinstance(BinarySemanticCacheLLM(llm=MockLLM()), CachingLLM)


def test_wrapper_is_an_llm_that_delegates_metadata(llm: CachingLLM, inner: CountingLLM) -> None:
    assert isinstance(llm, LLM)
    assert llm.metadata == inner.metadata
    assert llm.class_name() == "CachingLLM"


def test_rejects_a_non_llm_and_conflicting_options(embedder: Any) -> None:
    with pytest.raises(TypeError, match="LlamaIndex LLM"):
        CachingLLM(llm="gpt")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not both"):
        CachingLLM(MockLLM(), SemanticCache(embedder), threshold=0.8)


# ---------------------------------------------------------------- complete / chat
def test_complete_paraphrase_is_served_from_the_cache(llm: CachingLLM, inner: CountingLLM) -> None:
    first = llm.complete(QUESTION)
    again = llm.complete(PARAPHRASE)
    assert inner.calls["complete"] == 1
    assert again.text == first.text
    assert again.additional_kwargs["bsc_cache_hit"]["exact"] is False
    llm.complete(UNRELATED)
    assert inner.calls["complete"] == 2


def test_chat_paraphrase_with_the_same_history_hits(llm: CachingLLM, inner: CountingLLM) -> None:
    first = llm.chat([SYSTEM, user(QUESTION)])
    again = llm.chat([SYSTEM, user(PARAPHRASE)])
    assert inner.calls["chat"] == 1
    assert again.message.content == first.message.content
    assert again.message.role.value == "assistant"
    assert again.message.additional_kwargs == {"finish_reason": "stop"}  # JSON-safe part only
    assert again.additional_kwargs["usage"] == {"total_tokens": 7}
    assert again.raw is None


def test_chat_with_other_history_or_system_prompt_misses(llm: CachingLLM, inner: CountingLLM) -> None:
    llm.chat([SYSTEM, user(QUESTION)])
    llm.chat([ChatMessage(role="system", content="Answer in French."), user(QUESTION)])
    llm.chat([SYSTEM, user("Hi"), ChatMessage(role="assistant", content="Hello!"), user(QUESTION)])
    llm.chat([user(QUESTION)])
    assert inner.calls["chat"] == 4


def test_chat_and_complete_do_not_share_entries(llm: CachingLLM, inner: CountingLLM) -> None:
    llm.chat([user(QUESTION)])
    llm.complete(QUESTION)
    assert inner.calls["chat"] == 1 and inner.calls["complete"] == 1


def test_different_call_kwargs_miss(llm: CachingLLM, inner: CountingLLM) -> None:
    llm.complete(QUESTION, max_tokens=10)
    llm.complete(QUESTION, max_tokens=20)
    llm.complete(QUESTION, max_tokens=10)
    assert inner.calls["complete"] == 2


def test_a_different_wrapped_model_or_temperature_misses(embedder: Any) -> None:
    shared = SemanticCache(embedder)
    models = [CountingLLM(), CountingLLM(model="counting-2"), CountingLLM(temperature=0.7)]
    for model in models:
        CachingLLM(model, shared).complete(QUESTION)
    assert [m.calls["complete"] for m in models] == [1, 1, 1]
    again = CountingLLM()
    CachingLLM(again, shared).complete(PARAPHRASE)  # same identity as models[0]: a hit
    assert again.calls["complete"] == 0


class _StoppingCriteria:
    """A live object in a model parameter (like a transformers ``StoppingCriteria``)."""


class GenerateKwargsLLM(CountingLLM):
    generate_kwargs: dict[str, Any] = Field(default_factory=dict)


def test_a_json_value_beside_a_live_object_in_a_parameter_still_tells_models_apart(embedder: Any) -> None:
    shared = SemanticCache(embedder)
    cold = GenerateKwargsLLM(generate_kwargs={"temperature": 0.0, "stopping_criteria": _StoppingCriteria()})
    hot = GenerateKwargsLLM(generate_kwargs={"temperature": 1.5, "stopping_criteria": _StoppingCriteria()})
    for model in (cold, hot):
        CachingLLM(model, shared).complete(QUESTION)
    assert [m.calls["complete"] for m in (cold, hot)] == [1, 1]
    # The live object is keyed by its type, so another instance of it is the same model.
    cold_again = GenerateKwargsLLM(
        generate_kwargs={"temperature": 0.0, "stopping_criteria": _StoppingCriteria()}
    )
    CachingLLM(cold_again, shared).complete(QUESTION)
    assert cold_again.calls["complete"] == 0


def test_user_namespaces_are_isolated(inner: CountingLLM, embedder: Any) -> None:
    shared = SemanticCache(embedder)
    CachingLLM(inner, shared, namespace="tenant-a").complete(QUESTION)
    CachingLLM(inner, shared, namespace="tenant-b").complete(QUESTION)
    assert inner.calls["complete"] == 2


@pytest.mark.parametrize("namespace", ["acme", "acme\\"])
def test_clear_keeps_a_namespace_that_only_extends_this_one(
    inner: CountingLLM, embedder: Any, namespace: str
) -> None:
    shared = SemanticCache(embedder)
    cleared = CachingLLM(inner, shared, namespace=namespace)
    kept = CachingLLM(inner, shared, namespace=f"{namespace}:eu")
    cleared.complete(QUESTION)
    kept.complete(QUESTION)
    cleared.clear()
    kept.complete(QUESTION)
    assert inner.calls["complete"] == 2
    cleared.complete(QUESTION)
    assert inner.calls["complete"] == 3


def test_long_prompts_only_hit_when_identical(inner: CountingLLM, embedder: Any) -> None:
    llm = CachingLLM(inner, embedder=embedder, max_semantic_chars=40)
    llm.complete(QUESTION + " Please answer in one short sentence.")
    llm.complete(PARAPHRASE + " Please answer in one short sentence.")
    assert inner.calls["complete"] == 2
    llm.complete(QUESTION + " Please answer in one short sentence.")
    assert inner.calls["complete"] == 2


def test_custom_key_function_decides_what_is_embedded(inner: CountingLLM, embedder: Any) -> None:
    seen: list[LLMCall] = []

    def key_fn(call: LLMCall) -> CallKey | None:
        seen.append(call)
        key = default_call_key(call)
        return None if key is None or "bread" in key.text else key

    llm = CachingLLM(inner, embedder=embedder, key_fn=key_fn)
    llm.complete(UNRELATED)
    llm.complete(UNRELATED)
    assert inner.calls["complete"] == 2
    assert seen[0].kind == "complete" and seen[0].prompt == UNRELATED


def test_stored_answers_are_json_without_raw(llm: CachingLLM) -> None:
    llm.chat([user(QUESTION)])
    hit = llm.cache.lookup(QUESTION, namespace=llm.cache.cache.namespaces()[0])
    assert hit is not None and isinstance(hit.response, str)
    stored = json.loads(hit.response)
    assert set(stored) == {"v", "kind", "text", "role", "message_kwargs", "additional_kwargs"}
    assert "raw" not in hit.response


def test_a_hit_is_seen_by_callbacks_and_skips_the_wrapped_llm(llm: CachingLLM, inner: CountingLLM) -> None:
    llm.chat([user(QUESTION)])
    handler = LlamaDebugHandler()
    llm.callback_manager = CallbackManager([handler])
    llm.chat([user(PARAPHRASE)])
    assert len(handler.get_event_pairs(CBEventType.LLM)) == 1
    assert inner.calls["chat"] == 1


def test_mock_llm_completions_are_cached(embedder: Any) -> None:
    llm = CachingLLM(MockLLM(max_tokens=4), embedder=embedder)
    assert llm.complete(QUESTION).text == "text text text text"
    assert llm.complete(PARAPHRASE).additional_kwargs["bsc_cache_hit"]["exact"] is False


# ---------------------------------------------------------------- streaming
def test_stream_complete_miss_then_paraphrase_replays_deltas(llm: CachingLLM, inner: CountingLLM) -> None:
    live = list(llm.stream_complete(QUESTION))
    full = "".join(r.delta or "" for r in live)
    replay = list(llm.stream_complete(PARAPHRASE))
    assert inner.calls["stream_complete"] == 1
    assert len(replay) > 1
    assert "".join(r.delta or "" for r in replay) == full
    assert replay[-1].text == full


def test_stream_chat_replay_adds_up_to_the_full_text(llm: CachingLLM, inner: CountingLLM) -> None:
    live = list(llm.stream_chat([user(QUESTION)]))
    replay = list(llm.stream_chat([user(PARAPHRASE)]))
    assert inner.calls["stream_chat"] == 1
    assert "".join(r.delta or "" for r in replay) == live[-1].message.content
    assert replay[-1].message.content == live[-1].message.content
    # a stream hit also serves a plain chat of the same conversation
    assert llm.chat([user(QUESTION)]).message.content == live[-1].message.content
    assert inner.calls["chat"] == 0


def test_a_stream_stopped_early_is_not_stored(llm: CachingLLM, inner: CountingLLM) -> None:
    stream = llm.stream_chat([user(QUESTION)])
    next(stream)
    stream.close()
    list(llm.stream_chat([user(QUESTION)]))
    assert inner.calls["stream_chat"] == 2


def test_llm_stream_tokens_of_a_hit(llm: CachingLLM, inner: CountingLLM) -> None:
    from llama_index.core.prompts import PromptTemplate

    template = PromptTemplate("Question: {query_str}\nAnswer:")
    first = "".join(llm.stream(template, query_str=QUESTION))
    again = "".join(llm.stream(template, query_str=PARAPHRASE))
    assert again == first
    assert inner.calls["stream_chat"] == 1


# ---------------------------------------------------------------- async
async def test_async_methods_await_the_async_inner_methods(llm: CachingLLM, inner: CountingLLM) -> None:
    first_chat = await llm.achat([user(QUESTION)])
    again_chat = await llm.achat([user(PARAPHRASE)])
    first_completion = await llm.acomplete(QUESTION)
    again_completion = await llm.acomplete(PARAPHRASE)
    assert again_chat.message.content == first_chat.message.content
    assert again_completion.text == first_completion.text
    assert inner.calls == Counter({"achat": 1, "acomplete": 1})


async def test_async_streams_replay_and_record(llm: CachingLLM, inner: CountingLLM) -> None:
    live = [r async for r in await llm.astream_chat([user(QUESTION)])]
    replay = [r async for r in await llm.astream_chat([user(PARAPHRASE)])]
    assert "".join(r.delta or "" for r in replay) == live[-1].message.content
    live_c = [r async for r in await llm.astream_complete(QUESTION)]
    replay_c = [r async for r in await llm.astream_complete(PARAPHRASE)]
    assert "".join(r.delta or "" for r in replay_c) == "".join(r.delta or "" for r in live_c)
    assert inner.calls == Counter({"astream_chat": 1, "astream_complete": 1})


# ---------------------------------------------------------------- tools
def test_calls_with_tools_pass_through_uncached(llm: CachingLLM, inner: CountingLLM) -> None:
    llm.chat([user(QUESTION)], tools=[{"type": "function", "function": {"name": "f"}}])
    llm.chat([user(QUESTION)], tools=[{"type": "function", "function": {"name": "f"}}])
    assert inner.calls["chat"] == 2
    assert len(llm.cache) == 0


def test_function_calling_llm_keeps_its_tools(embedder: Any) -> None:
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    tool = FunctionTool.from_defaults(add)
    inner = MockFunctionCallingLLM()
    llm = CachingLLM(inner, embedder=embedder)
    assert isinstance(llm, FunctionCallingLLM)
    assert llm.metadata.is_function_calling_model
    response = llm.chat_with_tools([tool], user_msg="add 2 and 3")
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
    assert [c.tool_name for c in calls] == ["add"]
    assert len(llm.cache) == 0


def test_a_plain_llm_reports_no_tool_calls(llm: CachingLLM) -> None:
    response = llm.chat([user(QUESTION)])
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(TypeError, match="not a function-calling LLM"):
        llm.chat_with_tools([], user_msg="hi")


# ---------------------------------------------------------------- Settings and engines
def test_install_llm_cache_wraps_settings_llm_once(inner: CountingLLM, embedder: Any) -> None:
    Settings.llm = inner
    wrapper = install_llm_cache(embedder=embedder)
    assert Settings.llm is wrapper and wrapper.llm is inner
    assert install_llm_cache() is wrapper
    Settings._llm = None
    with pytest.raises(ValueError, match=r"set Settings\.llm"):
        install_llm_cache()


def test_simple_chat_engine_paraphrase_skips_the_llm(inner: CountingLLM, embedder: Any) -> None:
    install_llm_cache(inner, embedder=embedder)
    # LlamaIndex's default Memory opens an in-memory aiosqlite connection it never closes (a
    # ResourceWarning when it is collected, in whichever test that happens); a buffer has none.
    engine = SimpleChatEngine.from_defaults(
        system_prompt="You are a geography tutor.", memory=ChatMemoryBuffer.from_defaults()
    )
    first = engine.chat(QUESTION)
    engine.reset()
    again = engine.chat(PARAPHRASE)
    assert again.response == first.response
    assert inner.calls["chat"] == 1
    engine.reset()
    streamed = engine.stream_chat(PARAPHRASE)
    assert "".join(streamed.response_gen) == first.response
    assert inner.calls.total() == 1


def _counting_engine(**kwargs: Any) -> tuple[RetrieverQueryEngine, CountingRetriever]:
    index = VectorStoreIndex.from_documents(DOCS)
    retriever = CountingRetriever(index.as_retriever(similarity_top_k=2))
    return RetrieverQueryEngine.from_args(retriever, **kwargs), retriever


def test_rag_llm_calls_are_keyed_on_the_question(inner: CountingLLM, embedder: Any) -> None:
    install_llm_cache(inner, embedder=embedder)
    engine, retriever = _counting_engine()
    first = engine.query("How long is the warranty?")
    again = engine.query("How long does the warranty last?")
    assert str(again) == str(first)
    assert inner.calls.total() == 1 and retriever.count == 2
    engine.query("Where is the head office?")
    assert inner.calls.total() == 2


def test_rag_with_mock_llm_completions(embedder: Any) -> None:
    install_llm_cache(MockLLM(max_tokens=5), embedder=embedder)
    engine, _ = _counting_engine()
    first = engine.query("How long is the warranty?")
    again = engine.query("How long does the warranty last?")
    assert str(again) == str(first) == "text text text text text"


def test_query_cache_skips_retrieval_on_a_paraphrase(inner: CountingLLM, embedder: Any) -> None:
    Settings.llm = inner
    engine, retriever = _counting_engine()
    cached = SemanticCacheQueryEngine(engine, embedder=embedder, namespace="docs-v1")
    first = cached.query("How long is the warranty?")
    again = cached.query("How long does the warranty last?")
    assert isinstance(again, Response)
    assert again.response == first.response
    assert retriever.count == 1 and inner.calls.total() == 1
    assert [n.node.node_id for n in again.source_nodes] == [n.node.node_id for n in first.source_nodes]
    assert [n.node.metadata for n in again.source_nodes] == [n.node.metadata for n in first.source_nodes]
    assert again.metadata is not None and again.metadata["bsc_cache_hit"]["exact"] is False
    cached.query("Where is the head office?")
    assert retriever.count == 2
    cached.clear()
    cached.query("How long is the warranty?")
    assert retriever.count == 3


def test_query_cache_clear_keeps_a_namespace_that_only_extends_this_one(
    inner: CountingLLM, embedder: Any
) -> None:
    Settings.llm = inner
    engine, retriever = _counting_engine()
    shared = SemanticCache(embedder)
    cleared = SemanticCacheQueryEngine(engine, shared, namespace="docs")
    kept = SemanticCacheQueryEngine(engine, shared, namespace="docs:v2")
    cleared.query("How long is the warranty?")
    kept.query("How long is the warranty?")
    cleared.clear()
    kept.query("How long is the warranty?")
    assert retriever.count == 2
    cleared.query("How long is the warranty?")
    assert retriever.count == 3


async def test_query_cache_async(inner: CountingLLM, embedder: Any) -> None:
    Settings.llm = inner
    engine, retriever = _counting_engine()
    cached = SemanticCacheQueryEngine(engine, embedder=embedder)
    first = await cached.aquery("How long is the warranty?")
    again = await cached.aquery("How long does the warranty last?")
    assert str(again) == str(first)
    assert retriever.count == 1 and inner.calls == Counter({"achat": 1})


def test_query_cache_streaming_engine_records_and_replays(inner: CountingLLM, embedder: Any) -> None:
    Settings.llm = inner
    engine, retriever = _counting_engine(streaming=True)
    cached = SemanticCacheQueryEngine(engine, embedder=embedder)
    first = cached.query("How long is the warranty?")
    assert isinstance(first, StreamingResponse)
    text = "".join(first.response_gen)
    again = cached.query("How long does the warranty last?")
    assert isinstance(again, StreamingResponse)
    assert "".join(again.response_gen) == text
    assert retriever.count == 1


async def test_query_cache_async_streaming(inner: CountingLLM, embedder: Any) -> None:
    Settings.llm = inner
    engine, retriever = _counting_engine(streaming=True)
    cached = SemanticCacheQueryEngine(engine, embedder=embedder)
    first = await cached.aquery("How long is the warranty?")
    assert isinstance(first, AsyncStreamingResponse)
    text = "".join([t async for t in first.async_response_gen()])
    again = await cached.aquery("How long does the warranty last?")
    assert isinstance(again, AsyncStreamingResponse)
    assert "".join([t async for t in again.async_response_gen()]) == text
    assert retriever.count == 1


def test_a_saved_cache_serves_a_new_wrapper(tmp_path: Any, inner: CountingLLM, embedder: Any) -> None:
    path = tmp_path / "llm.bsc"
    first = CachingLLM(inner, embedder=embedder, path=path)
    answer = first.chat([SYSTEM, user(QUESTION)])
    first.cache.save()
    fresh = CountingLLM()
    again = CachingLLM(fresh, embedder=embedder, path=path).chat([SYSTEM, user(PARAPHRASE)])
    assert again.message.content == answer.message.content
    assert fresh.calls.total() == 0


def test_condense_question_prompt_is_keyed_on_the_follow_up(inner: CountingLLM, embedder: Any) -> None:
    from llama_index.core.chat_engine.condense_question import DEFAULT_PROMPT

    llm = CachingLLM(inner, embedder=embedder)
    history = "user: Tell me about France.\nassistant: France is a country in Europe."
    llm.predict(DEFAULT_PROMPT, chat_history=history, question=QUESTION)
    llm.predict(DEFAULT_PROMPT, chat_history=history, question=PARAPHRASE)
    assert inner.calls["chat"] == 1
    llm.predict(DEFAULT_PROMPT, chat_history=history, question="What is the population of France?")
    llm.predict(DEFAULT_PROMPT, chat_history="user: Hi", question=QUESTION)
    assert inner.calls["chat"] == 3

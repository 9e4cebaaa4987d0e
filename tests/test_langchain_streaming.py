"""`SemanticCacheChatModel`: hits in ``stream`` / ``astream`` / ``astream_events``, live misses that are
stored only when complete, tools bound through the wrapped model, and use inside ``create_agent``.

The wrapped models are LangChain's own streaming fake (`GenericFakeChatModel`) or local fakes that
count their calls; the cache embeds with the real local MiniLM.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_bsc import HIT_EVENT, BinarySemanticLLMCache, SemanticCacheChatModel
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, LLMResult
from langchain_tests.unit_tests import ChatModelUnitTests

QUESTION = "What is the capital of France?"
PARAPHRASE = "Which city is the capital of France?"
ANSWER = "The capital of France is Paris, on the Seine."


class CountingFake(GenericFakeChatModel):
    """LangChain's streaming fake (it streams word by word, through ``_generate``) that counts the calls
    it answers."""

    calls: list[str] = []  # noqa: RUF012 (a pydantic field: each instance gets its own copy)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(messages[-1].text)
        return super()._generate(messages, *args, **kwargs)


class BrokenStream(GenericFakeChatModel):
    """Streams two pieces, then the connection drops."""

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk("The capital "))
        yield ChatGenerationChunk(message=AIMessageChunk("of France "))
        raise ConnectionError("stream interrupted")


def _inner(*answers: str | AIMessage) -> CountingFake:
    return CountingFake(
        messages=iter([a if isinstance(a, AIMessage) else AIMessage(a) for a in answers]), calls=[]
    )


@pytest.fixture
def cache(single_thread_default_embedder: object) -> BinarySemanticLLMCache:
    return BinarySemanticLLMCache()


def _total(pieces: list[AIMessageChunk]) -> AIMessageChunk:
    total = pieces[0]
    for piece in pieces[1:]:
        total += piece
    return total


def test_a_streamed_hit_comes_in_pieces_that_add_up_to_the_cached_message(
    cache: BinarySemanticLLMCache,
) -> None:
    inner = _inner(ANSWER)
    model = SemanticCacheChatModel(model=inner, semantic_cache=cache)
    assert model.invoke(QUESTION).content == ANSWER
    pieces = list(model.stream(PARAPHRASE))
    assert len([p for p in pieces if p.content]) == len(ANSWER.split())
    total = _total(pieces)
    assert total.content == ANSWER
    assert total.response_metadata["bsc_cache"]["exact"] is False
    assert inner.calls == [QUESTION]


def test_a_miss_streams_live_and_is_stored_once_complete(cache: BinarySemanticLLMCache) -> None:
    inner = _inner(ANSWER, "a second answer")
    model = SemanticCacheChatModel(model=inner, semantic_cache=cache)
    live = list(model.stream(QUESTION))
    assert len([p for p in live if p.content]) > 1 and _total(live).content == ANSWER
    assert "bsc_cache" not in _total(live).response_metadata
    assert len(cache) == 1
    assert model.invoke(PARAPHRASE).content == ANSWER
    assert inner.calls == [QUESTION]


def test_a_stream_left_early_or_broken_stores_nothing(cache: BinarySemanticLLMCache) -> None:
    model = SemanticCacheChatModel(model=_inner(ANSWER), semantic_cache=cache)
    stream = model.stream(QUESTION)
    next(stream)
    stream.close()  # the user stopped reading
    broken = SemanticCacheChatModel(model=BrokenStream(messages=iter([])), semantic_cache=cache)
    with pytest.raises(ConnectionError):
        list(broken.stream(QUESTION))
    assert len(cache) == 0


async def test_astream_events_show_a_hit_as_tokens_and_a_hit_event(cache: BinarySemanticLLMCache) -> None:
    inner = _inner(ANSWER)
    model = SemanticCacheChatModel(model=inner, semantic_cache=cache)
    await model.ainvoke(QUESTION)
    events = [e async for e in model.astream_events(PARAPHRASE, version="v2")]
    tokens = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert len([t for t in tokens if t]) == len(ANSWER.split()) and "".join(tokens) == ANSWER
    (end,) = [e for e in events if e["event"] == "on_chat_model_end"]
    assert end["data"]["output"].response_metadata["bsc_cache"]["hit"] is True
    assert inner.calls == [QUESTION]


async def test_astream_misses_live_then_hits(cache: BinarySemanticLLMCache) -> None:
    inner = _inner(ANSWER)
    model = SemanticCacheChatModel(model=inner, semantic_cache=cache)
    live = [p async for p in model.astream(QUESTION)]
    again = [p async for p in model.astream(PARAPHRASE)]
    assert _total(live).content == _total(again).content == ANSWER
    assert _total(again).response_metadata["bsc_cache"]["hit"] is True
    assert inner.calls == [QUESTION]


def test_a_cached_tool_call_streams_back_whole(cache: BinarySemanticLLMCache) -> None:
    call = AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call-1"}])
    model = SemanticCacheChatModel(model=_inner(call), semantic_cache=cache)
    model.invoke("What is the weather in Paris?")
    total = _total(list(model.stream("What is the weather in Paris?")))
    assert [(c["name"], c["args"], c["id"]) for c in total.tool_calls] == [
        ("get_weather", {"city": "Paris"}, "call-1")
    ]


def test_callback_handlers_can_count_hits(cache: BinarySemanticLLMCache) -> None:
    class Counter(BaseCallbackHandler):
        def __init__(self) -> None:
            self.events = 0
            self.marked_ends = 0

        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            self.events += name == HIT_EVENT

        def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
            message = response.generations[0][0].message  # type: ignore[attr-defined]
            self.marked_ends += "bsc_cache" in message.response_metadata

    counter = Counter()
    model = SemanticCacheChatModel(model=_inner(ANSWER), semantic_cache=cache)
    model.invoke(QUESTION, {"callbacks": [counter]})
    model.invoke(PARAPHRASE, {"callbacks": [counter]})
    list(model.stream(QUESTION, {"callbacks": [counter]}))
    # invoke hits dispatch the event; every hit, streamed or not, ends marked.
    assert (counter.events, counter.marked_ends) == (1, 2)


def test_other_model_settings_never_share_a_streamed_answer(cache: BinarySemanticLLMCache) -> None:
    first = SemanticCacheChatModel(model=_inner(ANSWER), semantic_cache=cache)
    other = SemanticCacheChatModel(model=_inner("other model answer"), semantic_cache=cache)
    first.invoke(QUESTION)
    assert _total(list(other.bind(temperature=1).stream(QUESTION))).content == "other model answer"


def test_streaming_hits_in_an_agent(cache: BinarySemanticLLMCache) -> None:
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent

    inner = _inner(ANSWER)
    agent = create_agent(SemanticCacheChatModel(model=inner, semantic_cache=cache))
    agent.invoke({"messages": [HumanMessage(QUESTION)]})
    streamed = [
        chunk
        for chunk, _ in agent.stream({"messages": [HumanMessage(PARAPHRASE)]}, stream_mode="messages")
        if isinstance(chunk, AIMessageChunk)
    ]
    assert len([c for c in streamed if c.content]) == len(ANSWER.split())
    assert _total(streamed).content == ANSWER and inner.calls == [QUESTION]


def test_bind_tools_goes_through_the_wrapped_model_and_keys_on_the_tools(
    cache: BinarySemanticLLMCache,
) -> None:
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    class ToolFake(CountingFake):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[t.name for t in tools], **kwargs)

    inner = ToolFake(messages=iter([AIMessage("with tools"), AIMessage("without tools")]), calls=[])
    model = SemanticCacheChatModel(model=inner, semantic_cache=cache)
    assert model.bind_tools([get_weather]).invoke(QUESTION).content == "with tools"
    assert model.invoke(QUESTION).content == "without tools"  # another partition: no tools bound
    assert model.bind_tools([get_weather]).invoke(PARAPHRASE).content == "with tools"
    assert len(inner.calls) == 2


def test_tenants_of_the_wrapper_come_from_cache_namespace(cache: BinarySemanticLLMCache) -> None:
    from langchain_bsc import cache_namespace

    inner = _inner("alice's answer", "bob's answer")
    model = SemanticCacheChatModel(model=inner, semantic_cache=cache)
    with cache_namespace("alice"):
        model.invoke(QUESTION)
    with cache_namespace("bob"):
        assert _total(list(model.stream(PARAPHRASE))).content == "bob's answer"
    with cache_namespace("alice"):
        assert _total(list(model.stream(PARAPHRASE))).content == "alice's answer"


class TestSemanticCacheChatModelStandard(ChatModelUnitTests):
    """LangChain's standard unit suite for chat models (construction, params, serialization, tracing)."""

    @property
    def chat_model_class(self) -> type[SemanticCacheChatModel]:
        return SemanticCacheChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": GenericFakeChatModel(messages=iter([AIMessage("hi")] * 100))}

    @property
    def has_tool_calling(self) -> bool:
        return False  # the fake it wraps binds no tools; bind_tools is tested above

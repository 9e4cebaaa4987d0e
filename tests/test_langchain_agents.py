"""`SemanticCacheMiddleware` in real LangChain 1.x agent loops (`create_agent`), with real tools.

The chat model is a local fake that plays a model with tools (asks for a tool when it has no result
yet, answers from the result after) and counts its calls; the tools count theirs. The cache embeds with
the real local MiniLM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_bsc import HIT_EVENT, SemanticCacheMiddleware, cache_namespace
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool

QUESTION = "What is the capital of France?"
PARAPHRASE = "Which city is the capital of France?"
WEATHER = "What is the weather like in Paris today?"
WEATHER_PARAPHRASE = "How is the weather in Paris today?"
CONVERT = "How many centimetres are 12 inches?"
CONVERT_PARAPHRASE = "What is 12 inches in centimetres?"


class ToolUsingModel(BaseChatModel):
    """Answers questions; asks for the tool named in ``routes`` first when the question mentions its
    word, then answers from the tool's result. Counts calls."""

    label: str = "model-a"
    # pydantic fields: each instance gets its own copy
    routes: dict[str, str] = {}  # noqa: RUF012 (word in the question -> tool to call)
    calls: list[str] = []  # noqa: RUF012

    @property
    def _llm_type(self) -> str:
        return "tool-using-fake"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"label": self.label}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        question = next(m.text for m in reversed(messages) if isinstance(m, HumanMessage))
        self.calls.append(question)
        last = messages[-1]
        tool_names = {t["function"]["name"] for t in kwargs.get("tools", [])}
        if isinstance(last, ToolMessage):
            reply = AIMessage(f"{self.label}: from the tool, {last.text}")
        else:
            route = next(
                (t for w, t in self.routes.items() if w in question.lower() and t in tool_names), None
            )
            if route is None:
                reply = AIMessage(f"{self.label} answer #{len(self.calls)} to: {question}")
            else:
                reply = AIMessage(
                    "",
                    tool_calls=[
                        {"name": route, "args": {"query": question}, "id": f"call-{len(self.calls)}"}
                    ],
                )
        return ChatResult(generations=[ChatGeneration(message=reply)])


class Tools:
    """A weather tool (its answer changes over time) and a unit converter (deterministic)."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.weather_report = "sunny, 21 C"

    def all(self) -> list[BaseTool]:
        @tool
        def get_weather(query: str) -> str:
            """Current weather for the place in the query."""
            self.runs["get_weather"] += 1
            return self.weather_report

        @tool
        def convert_units(query: str) -> str:
            """Converts the quantity in the query."""
            self.runs["convert_units"] += 1
            return "12 inches = 30.48 cm"

        return [get_weather, convert_units]


def _model(**kwargs: Any) -> ToolUsingModel:
    return ToolUsingModel(routes={"weather": "get_weather", "inches": "convert_units"}, calls=[], **kwargs)


def _ask(agent: Any, question: str, **config: Any) -> AIMessage:
    answer = agent.invoke({"messages": [HumanMessage(question)]}, config or None)["messages"][-1]
    assert isinstance(answer, AIMessage)
    return answer


@pytest.fixture
def middleware(single_thread_default_embedder: object) -> SemanticCacheMiddleware:
    return SemanticCacheMiddleware()


class CountingHandler(BaseCallbackHandler):
    def __init__(self) -> None:
        self.hits: list[dict[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == HIT_EVENT:
            self.hits.append(data)


# ------------------------------------------------------------------ questions
def test_a_paraphrase_is_answered_without_calling_the_model(middleware: SemanticCacheMiddleware) -> None:
    model = _model()
    agent = create_agent(model, middleware=[middleware])
    first = _ask(agent, QUESTION)
    handler = CountingHandler()
    again = _ask(agent, PARAPHRASE, callbacks=[handler])
    assert again.content == first.content and len(model.calls) == 1
    marker = again.response_metadata["bsc_cache"]
    assert marker["hit"] is True and marker["exact"] is False and 0.9 <= marker["similarity"] <= 1.0
    assert "bsc_cache" not in first.response_metadata
    assert again.id is not None and again.id != first.id
    assert [h["exact"] for h in handler.hits] == [False]
    assert middleware.stats().semantic_hits == 1


def test_the_same_follow_up_in_another_conversation_is_a_miss(middleware: SemanticCacheMiddleware) -> None:
    model = _model()
    agent = create_agent(model, middleware=[middleware])
    history = [HumanMessage("Tell me about Italy."), AIMessage("Italy is in Europe.")]
    other = [HumanMessage("Tell me about Japan."), AIMessage("Japan is in Asia.")]
    agent.invoke({"messages": [*history, HumanMessage("What is its capital?")]})
    agent.invoke({"messages": [*other, HumanMessage("What is its capital?")]})
    assert len(model.calls) == 2
    # The same history, rebuilt (new ids, and the earlier answer as a provider would tag it): a hit.
    rebuilt = [
        HumanMessage("Tell me about Italy."),
        AIMessage("Italy is in Europe.", response_metadata={"id": "x"}),
    ]
    out = agent.invoke({"messages": [*rebuilt, HumanMessage("What's its capital?")]})["messages"][-1]
    assert len(model.calls) == 2 and out.response_metadata["bsc_cache"]["hit"]


def test_system_prompt_model_and_tools_partition_the_answers(middleware: SemanticCacheMiddleware) -> None:
    tools = Tools().all()
    base, other_model = _model(), _model(label="model-b")
    agents = [
        create_agent(base, middleware=[middleware], system_prompt="Answer in English."),
        create_agent(base, middleware=[middleware], system_prompt="Answer in French."),
        create_agent(other_model, middleware=[middleware], system_prompt="Answer in English."),
        create_agent(base, tools=tools, middleware=[middleware], system_prompt="Answer in English."),
    ]
    answers = [_ask(agent, QUESTION) for agent in agents]
    assert len(base.calls) + len(other_model.calls) == 4
    assert not any("bsc_cache" in a.response_metadata for a in answers)
    # Each agent now hits its own answer.
    for agent, answer in zip(agents, answers, strict=True):
        assert _ask(agent, PARAPHRASE).content == answer.content
    assert len(base.calls) + len(other_model.calls) == 4


# ------------------------------------------------------------------ tool calls
def test_tool_calls_are_never_replayed_for_a_paraphrase(middleware: SemanticCacheMiddleware) -> None:
    model, tools = _model(), Tools()
    agent = create_agent(model, tools=tools.all(), middleware=[middleware])
    first = _ask(agent, WEATHER)
    assert first.content == "model-a: from the tool, sunny, 21 C"
    assert (len(model.calls), tools.runs["get_weather"]) == (2, 1)
    # A paraphrase: the weather tool is not deterministic, so the model and the tool run again.
    again = _ask(agent, WEATHER_PARAPHRASE)
    assert "bsc_cache" not in again.response_metadata
    assert (len(model.calls), tools.runs["get_weather"]) == (4, 2)


def test_tool_result_calls_are_keyed_exactly_on_the_results(middleware: SemanticCacheMiddleware) -> None:
    model, tools = _model(), Tools()
    agent = create_agent(model, tools=tools.all(), middleware=[middleware])
    _ask(agent, WEATHER)
    # The identical question: the tool call is replayed (same conversation), the tool runs fresh, and
    # with the same result the final answer is served too.
    same = _ask(agent, WEATHER)
    assert same.response_metadata["bsc_cache"] == {"hit": True, "similarity": 1.0, "exact": True}
    assert (len(model.calls), tools.runs["get_weather"]) == (2, 2)
    # The weather changed: the tool result differs, so the model answers from the new one.
    tools.weather_report = "rain, 12 C"
    changed = _ask(agent, WEATHER)
    assert (
        changed.content == "model-a: from the tool, rain, 12 C"
        and "bsc_cache" not in changed.response_metadata
    )
    assert (len(model.calls), tools.runs["get_weather"]) == (3, 3)


def test_bypass_never_caches_calls_that_carry_tool_results(single_thread_default_embedder: object) -> None:
    model, tools = _model(), Tools()
    agent = create_agent(
        model, tools=tools.all(), middleware=[SemanticCacheMiddleware(tool_results="bypass")]
    )
    _ask(agent, WEATHER)
    _ask(agent, WEATHER)
    # The first call (a question) is replayed from the exact store; the one with the tool result is not.
    assert (len(model.calls), tools.runs["get_weather"]) == (3, 2)


def test_a_turn_of_deterministic_tools_is_served_for_a_paraphrase(
    single_thread_default_embedder: object,
) -> None:
    model, tools = _model(), Tools()
    cache = SemanticCacheMiddleware(deterministic_tools=["convert_units"])
    agent = create_agent(model, tools=tools.all(), middleware=[cache])
    first = _ask(agent, CONVERT)
    assert (len(model.calls), tools.runs["convert_units"]) == (2, 1)
    again = _ask(agent, CONVERT_PARAPHRASE)
    assert again.content == first.content and again.response_metadata["bsc_cache"]["exact"] is False
    assert (len(model.calls), tools.runs["convert_units"]) == (2, 1)
    # Not so for the weather tool, which is not declared deterministic.
    _ask(agent, WEATHER)
    _ask(agent, WEATHER_PARAPHRASE)
    assert tools.runs["get_weather"] == 2


async def test_async_agent_loop_uses_the_cache(middleware: SemanticCacheMiddleware) -> None:
    model, tools = _model(), Tools()
    agent = create_agent(model, tools=tools.all(), middleware=[middleware])
    first = (await agent.ainvoke({"messages": [HumanMessage(QUESTION)]}))["messages"][-1]
    again = (await agent.ainvoke({"messages": [HumanMessage(PARAPHRASE)]}))["messages"][-1]
    assert again.content == first.content and again.response_metadata["bsc_cache"]["hit"]
    await agent.ainvoke({"messages": [HumanMessage(WEATHER)]})
    await agent.ainvoke({"messages": [HumanMessage(WEATHER)]})
    assert (len(model.calls), tools.runs["get_weather"]) == (3, 2)


# ------------------------------------------------------------------ tenants
def test_tenants_from_the_run_config_never_share_answers(single_thread_default_embedder: object) -> None:
    model = _model()
    agent = create_agent(model, middleware=[SemanticCacheMiddleware(namespace_key="user_id")])
    _ask(agent, QUESTION, configurable={"user_id": "alice"})
    _ask(agent, PARAPHRASE, configurable={"user_id": "bob"})
    assert len(model.calls) == 2
    assert _ask(agent, PARAPHRASE, metadata={"user_id": "alice"}).response_metadata["bsc_cache"]["hit"]
    with cache_namespace("carol"):  # no user_id in the config: the surrounding namespace decides
        _ask(agent, PARAPHRASE)
    assert len(model.calls) == 3


def test_options_are_checked(single_thread_default_embedder: object) -> None:
    with pytest.raises(ValueError, match="tool_results"):
        SemanticCacheMiddleware(tool_results="sometimes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Embeddings"):
        SemanticCacheMiddleware(embedding="minilm")  # type: ignore[arg-type]


def test_tenants_from_the_agent_runtime_context(single_thread_default_embedder: object) -> None:
    from dataclasses import dataclass

    @dataclass
    class Context:
        user_id: str

    model = _model()
    agent = create_agent(
        model, middleware=[SemanticCacheMiddleware(namespace_key="user_id")], context_schema=Context
    )
    agent.invoke({"messages": [HumanMessage(QUESTION)]}, context=Context(user_id="alice"))
    agent.invoke({"messages": [HumanMessage(PARAPHRASE)]}, context=Context(user_id="bob"))
    hit = agent.invoke({"messages": [HumanMessage(PARAPHRASE)]}, context=Context(user_id="alice"))
    assert len(model.calls) == 2 and hit["messages"][-1].response_metadata["bsc_cache"]["hit"]


def test_a_hit_shows_in_the_agents_message_stream(middleware: SemanticCacheMiddleware) -> None:
    model = _model()
    agent = create_agent(model, middleware=[middleware])
    _ask(agent, QUESTION)
    streamed = [m for m, _ in agent.stream({"messages": [HumanMessage(PARAPHRASE)]}, stream_mode="messages")]
    (answer,) = streamed  # whole: the model did not run, so nothing streamed token by token
    assert answer.content.endswith(QUESTION) and answer.response_metadata["bsc_cache"]["hit"]
    assert len(model.calls) == 1

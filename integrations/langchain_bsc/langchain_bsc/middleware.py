"""`SemanticCacheMiddleware`: a semantic answer cache for LangChain 1.x agents (``create_agent``).

An agent calls its model once per step: first with the user's question, then once more after each round
of tool results, until the model answers without tool calls. The middleware wraps each of those calls
(``AgentMiddleware.wrap_model_call`` / ``awrap_model_call``) and decides by what the call carries:

- **A question** (the last message is the user's): answered from the cache when the question is a
  paraphrase of one answered before under the same model (and its settings), system prompt, tools and
  earlier turns. Only final answers are ever served this way; a response that calls tools is stored
  for the exact same conversation only, so it is never replayed for another question.
- **Tool results** (messages after the question): what the model says next depends on them, so the
  call is keyed on the whole conversation, tool results included, exactly (``tool_results="exact"``,
  the default) or passed through (``"bypass"``). When every tool the turn called is listed in
  ``deterministic_tools`` (their results depend only on their arguments), the turn's final answer is
  also stored under the question, so a paraphrase later skips the tools too.

Calls with a ``response_format`` (structured output) pass through.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bsc import DEFAULT_THRESHOLD, SemanticCacheStats
from bsc.digest import digest
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.embeddings import Embeddings
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables.config import ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_bsc._cache import fail_open_cache
from langchain_bsc._serialization import GENERATION_CLASSES, dump, load
from langchain_bsc.hits import areport_hit, marked, marker, report_hit
from langchain_bsc.keys import default_prompt_key
from langchain_bsc.tenancy import namespace_from

__all__ = ["SemanticCacheMiddleware"]

logger = logging.getLogger("langchain_bsc")


def _digest(text: str) -> str:
    return digest(text).hex()


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where one model call is looked up and stored."""

    question: str  # the last user turn's text
    semantic: str  # namespace of final answers to that question (compared by meaning)
    exact: str  # namespace of this very conversation (matched exactly)
    after_tools: bool  # tool results follow the question
    tools_deterministic: bool  # every tool called since the question is declared deterministic


class SemanticCacheMiddleware(AgentMiddleware):
    """Serves an agent's final answers from a semantic cache (see the module docstring for the rules).

    A served answer carries ``response_metadata["bsc_cache"] = {"hit": True, "similarity": ...,
    "exact": ...}`` and is dispatched as the custom event ``"bsc_cache_hit"``; ``stats()`` counts hits.

    Args:
        embedding: any LangChain ``Embeddings``; None uses bsc's local all-MiniLM-L6-v2 (offline).
        threshold: minimum cosine similarity of two questions for a hit.
        max_entries: capacity; the least recently used entry is evicted beyond it.
        ttl: seconds an entry lives, or None for no expiry.
        namespace: kept apart from every other namespace's entries.
        namespace_key: a key naming the tenant of a run, read from the run's
            ``config["configurable"]``, then ``config["metadata"]``, then the agent's runtime context
            (a dict or an object with that attribute); each tenant gets its own partition. Without it
            (or when the run has no such key) a surrounding `cache_namespace` block names the tenant.
        tool_results: ``"exact"`` keys model calls that carry tool results on the whole conversation;
            ``"bypass"`` never caches them.
        deterministic_tools: names of tools whose results depend only on their arguments; a turn
            that called only these has its final answer stored under the question too.
        path: a snapshot file (loaded if it exists, written by `save`).
        autosave: also save to ``path`` when the interpreter exits.

    Raises:
        TypeError: ``embedding`` is not a LangChain ``Embeddings``, or ``namespace`` is not a str.
        ValueError: ``tool_results`` is neither "exact" nor "bypass", or an option of
            `bsc.SemanticCache` is out of range.

    Example:
        >>> from langchain.agents import create_agent
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> from langchain_core.messages import AIMessage
        >>> model = GenericFakeChatModel(messages=iter([AIMessage("Paris.")]))
        >>> agent = create_agent(model, middleware=[SemanticCacheMiddleware()])
        >>> agent.invoke({"messages": [("user", "What is the capital of France?")]})["messages"][-1].content
        'Paris.'
        >>> again = agent.invoke({"messages": [("user", "Which city is the capital of France?")]})
        >>> again["messages"][-1].response_metadata["bsc_cache"]["hit"]
        True
    """

    def __init__(
        self,
        embedding: Embeddings | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        max_entries: int = 100_000,
        ttl: float | None = None,
        namespace: str = "default",
        namespace_key: str | None = None,
        tool_results: Literal["exact", "bypass"] = "exact",
        deterministic_tools: Collection[str] = (),
        path: str | os.PathLike[str] | None = None,
        autosave: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
        if tool_results not in ("exact", "bypass"):
            raise ValueError(f"tool_results must be 'exact' or 'bypass', got {tool_results!r}")
        self.namespace = namespace
        self.namespace_key = namespace_key
        self.tool_results = tool_results
        self.deterministic_tools = frozenset(deterministic_tools)
        # A cache failure (an embedder that cannot be reached, say) must never fail the agent's call.
        self._fail_open = fail_open_cache(
            embedding, threshold=threshold, max_entries=max_entries, ttl=ttl, path=path, autosave=autosave
        )
        self._cache = self._fail_open.cache

    # ---------------------------------------------------------------- keys
    def _plan(self, request: ModelRequest) -> _Plan | None:
        """Where this call is cached, or None when it passes through."""
        if request.response_format is not None:
            return None
        messages = _canonical(request.messages)
        last_human = next(
            (i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], HumanMessage)), None
        )
        if last_human is None:
            return None
        after = messages[last_human + 1 :]
        if after and not isinstance(after[-1], ToolMessage):
            return None  # not a call an agent makes (the model would answer its own message)
        system = [] if request.system_message is None else _canonical([request.system_message])
        config = ensure_config()
        context = getattr(request.runtime, "context", None)
        tenant = namespace_from(
            self.namespace_key, config.get("configurable"), config.get("metadata"), context
        )
        setting = json.dumps(
            [
                self.namespace,
                tenant,
                _model_identity(request),
                [_tool_identity(t) for t in request.tools],
                _plain(request.tool_choice),
            ],
            sort_keys=True,
            default=repr,
        )
        question, partition = default_prompt_key(dumps([*system, *messages[: last_human + 1]]))
        called = {c["name"] for m in after if isinstance(m, AIMessage) for c in m.tool_calls}
        return _Plan(
            question=question,
            semantic=f"agent:{_digest(setting)}:{_digest(partition)}",
            exact=f"agent-exact:{_digest(setting)}:{_digest(dumps([*system, *messages]))}",
            after_tools=bool(after),
            tools_deterministic=called <= self.deterministic_tools,
        )

    def _wants_exact(self, plan: _Plan) -> bool:
        return not plan.after_tools or self.tool_results == "exact"

    # ---------------------------------------------------------------- serving
    def _served(self, hit: Any) -> tuple[ModelResponse, dict[str, Any]] | None:
        if hit is None:
            return None
        ok, message = load(hit.response, GENERATION_CLASSES)
        if not ok or not isinstance(message, AIMessage):
            return None
        mark = marker(hit)
        return ModelResponse(result=[marked(message, mark)]), mark

    def _to_store(self, plan: _Plan, response: ModelResponse) -> list[tuple[str, str, str]]:
        """(text, namespace, value) entries a fresh response is stored as."""
        if response.structured_response is not None or len(response.result) != 1:
            return []
        (message,) = response.result
        if not isinstance(message, AIMessage):
            return []
        value = dump(message.model_copy(update={"id": None}))
        if value is None:
            return []
        out = []
        final = not (message.tool_calls or message.invalid_tool_calls)
        if final and (not plan.after_tools or plan.tools_deterministic):
            out.append((plan.question, plan.semantic, value))
        if (not final or plan.after_tools) and self._wants_exact(plan):
            out.append(("", plan.exact, value))
        return out

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        """Serves the call from the cache, or calls the model and stores what it answered."""
        plan = self._plan(request)
        if plan is None:
            return handler(request)
        hit = None
        if not plan.after_tools:
            hit = self._fail_open.lookup(plan.question, namespace=plan.semantic)
        if hit is None and self._wants_exact(plan):
            hit = self._fail_open.lookup("", namespace=plan.exact)
        served = self._served(hit)
        if served is not None:
            report_hit(served[1])
            return served[0]
        response = handler(request)
        for text, namespace, value in self._to_store(plan, response):
            self._fail_open.update(text, value, namespace=namespace)
        return response

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        """`wrap_model_call` that awaits the embedder and the model."""
        plan = self._plan(request)
        if plan is None:
            return await handler(request)
        hit = None
        if not plan.after_tools:
            hit = await self._fail_open.alookup(plan.question, namespace=plan.semantic)
        if hit is None and self._wants_exact(plan):
            hit = await self._fail_open.alookup("", namespace=plan.exact)
        served = self._served(hit)
        if served is not None:
            await areport_hit(served[1])
            return served[0]
        response = await handler(request)
        for text, namespace, value in self._to_store(plan, response):
            await self._fail_open.aupdate(text, value, namespace=namespace)
        return response

    # ---------------------------------------------------------------- the rest
    def clear(self) -> None:
        """Forgets every cached answer."""
        self._cache.clear()

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Writes a snapshot atomically to ``path``, or to the ``path`` given at construction."""
        self._cache.save(path)

    def stats(self) -> SemanticCacheStats:
        """Exact and semantic hits, misses, hit rate, guard rejections, entries and bytes in use."""
        return self._cache.stats()


def _model_identity(request: ModelRequest) -> str:
    """The model and its call settings, as LangChain's cache identifies a model configuration."""
    model = request.model
    try:
        return str(model._get_llm_string(**request.model_settings))
    except Exception:  # a model that cannot describe itself: its type and settings, still exact
        return f"{type(model).__qualname__}:{sorted(request.model_settings.items())!r}"


def _tool_identity(tool: BaseTool | dict[str, Any]) -> Any:
    """What the model is told about a tool (name, description, argument schema)."""
    try:
        return convert_to_openai_tool(tool)
    except Exception:
        return repr(tool)


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def _canonical(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The messages as far as they matter to the model: without message ids, provider metadata and
    usage (which differ on every call), with tool-call ids numbered in order of appearance (providers
    generate them at random, so identical conversations would never match exactly)."""
    numbers: dict[str, str] = {}

    def number(call_id: str | None) -> str | None:
        return None if call_id is None else numbers.setdefault(call_id, f"call_{len(numbers)}")

    out: list[BaseMessage] = []
    for m in messages:
        update: dict[str, Any] = {"id": None, "response_metadata": {}}
        if isinstance(m, AIMessage):
            update |= {
                "usage_metadata": None,
                "additional_kwargs": {},
                "tool_calls": [{**c, "id": number(c.get("id"))} for c in m.tool_calls],
                "invalid_tool_calls": [{**c, "id": number(c.get("id"))} for c in m.invalid_tool_calls],
            }
        elif isinstance(m, ToolMessage):
            update["tool_call_id"] = number(m.tool_call_id)
        out.append(m.model_copy(update=update))
    return out

"""`SemanticCacheChatModel`: a chat model that serves cached answers in ``invoke`` and in ``stream``.

LangChain's chat models never consult a cache in ``.stream()`` / ``.astream()`` (langchain #13119,
#23701, #9762), so a chat UI that streams gets no hits from ``set_llm_cache``. This wrapper is the
cache-aware model: on a hit it streams the cached message back as ``AIMessageChunk`` pieces (word by
word) that add up to it, which ``astream_events`` and LangGraph's ``stream_mode="messages"`` show like
live tokens; on a miss it streams the wrapped model live and stores the answer only once the stream has
completed (an interrupted or failed stream stores nothing).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field

from langchain_bsc.hits import areport_hit, report_hit
from langchain_bsc.llm_cache import BinarySemanticLLMCache

__all__ = ["SemanticCacheChatModel"]

# A word with the whitespace that follows it (leading whitespace is a piece of its own).
_PIECE = re.compile(r"\s+|\S+\s*")


class SemanticCacheChatModel(BaseChatModel):
    """Wraps a chat model so that ``invoke``, ``stream`` and their async twins are answered from a
    `BinarySemanticLLMCache` when the conversation was answered before (or its last question in other
    words).

    Keys are the cache's: the wrapped model's ``llm_string`` (model, parameters, bound tools) and the
    conversation, of which only the last human message is compared by meaning. A hit carries
    ``response_metadata["bsc_cache"]`` and dispatches the custom event ``"bsc_cache_hit"``. The wrapper
    is the run callbacks and traces see (the wrapped model is called through its implementation
    methods, so each token is reported once). ``bind_tools`` binds through the wrapped model's own
    tool formatting, so the wrapper works in ``create_agent``.

    Args:
        model: the chat model to wrap.
        semantic_cache: where answers are kept; a new `BinarySemanticLLMCache()` (local MiniLM) if not
            given. Share one between wrappers to share answers (partitioned by model as always).

    Example:
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> from langchain_core.messages import AIMessage
        >>> inner = GenericFakeChatModel(messages=iter([AIMessage("Paris is the capital.")]))
        >>> model = SemanticCacheChatModel(model=inner)
        >>> model.invoke("What is the capital of France?").content
        'Paris is the capital.'
        >>> pieces = list(model.stream("Which city is the capital of France?"))
        >>> [p.content for p in pieces if p.content]
        ['Paris ', 'is ', 'the ', 'capital.']
        >>> pieces[0].response_metadata["bsc_cache"]["exact"]
        False
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel
    semantic_cache: BinarySemanticLLMCache = Field(default_factory=BinarySemanticLLMCache)
    # The wrapper does its own caching; LangChain's (set_llm_cache) must not apply to it again.
    cache: bool | None = False

    @property
    def _llm_type(self) -> str:
        return "bsc-semantic-cache"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model._get_llm_string()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """The wrapped model's tracing parameters (provider, model name), so traces name the real model."""
        params = self.model._get_ls_params(stop=stop, **kwargs)
        if not params.get("ls_model_name"):
            name = getattr(self.model, "model_name", None) or getattr(self.model, "model", None)
            params["ls_model_name"] = name if isinstance(name, str) else type(self.model).__name__
        return params

    def _key(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[str, str]:
        """(prompt, llm_string) as LangChain's own cache lookup builds them."""
        normalized = [m.model_copy(update={"id": None}) if m.id is not None else m for m in messages]
        return dumps(normalized), self.model._get_llm_string(stop=stop, **kwargs)

    # ---------------------------------------------------------------- tools
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Binds ``tools`` as the wrapped model formats them, to this wrapper.

        Raises:
            NotImplementedError: the wrapped model has no ``bind_tools`` or binds them in a way other
                than a ``RunnableBinding`` of itself.
        """
        options = {**kwargs, **({} if tool_choice is None else {"tool_choice": tool_choice})}
        bound = self.model.bind_tools(tools, **options)
        if not isinstance(bound, RunnableBinding) or bound.bound is not self.model:
            raise NotImplementedError(
                f"{type(self.model).__name__}.bind_tools returned {type(bound).__name__}, "
                "not a binding of the model itself; bind the tools to the model before wrapping it"
            )
        return self.bind(**bound.kwargs)

    # ---------------------------------------------------------------- invoke
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt, llm_string = self._key(messages, stop, kwargs)
        found = self.semantic_cache.lookup_hit(prompt, llm_string)
        if found is not None:
            report_hit(found[1], run_manager)
            return ChatResult(generations=[_as_chat_generation(g) for g in found[0]])
        result = self.model._generate(messages, stop=stop, **kwargs)
        self.semantic_cache.update(prompt, llm_string, result.generations)
        return result

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt, llm_string = self._key(messages, stop, kwargs)
        found = await self.semantic_cache.alookup_hit(prompt, llm_string)
        if found is not None:
            await areport_hit(found[1], run_manager)
            return ChatResult(generations=[_as_chat_generation(g) for g in found[0]])
        result = await self.model._agenerate(messages, stop=stop, **kwargs)
        await self.semantic_cache.aupdate(prompt, llm_string, result.generations)
        return result

    # ---------------------------------------------------------------- stream
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        prompt, llm_string = self._key(messages, stop, kwargs)
        found = self.semantic_cache.lookup_hit(prompt, llm_string)
        if found is not None:
            report_hit(found[1], run_manager)
            yield from _replay(found[0])
            return
        if not self._streams():
            result = self.model._generate(messages, stop=stop, **kwargs)
            self.semantic_cache.update(prompt, llm_string, result.generations)
            yield from _replay(result.generations)
            return
        chunks: list[ChatGenerationChunk] = []
        for chunk in self.model._stream(messages, stop=stop, **kwargs):
            chunks.append(chunk)
            yield chunk
        # Reached only when the stream completed: a consumer that stops early or an error ends above.
        self.semantic_cache.update(prompt, llm_string, [_completed(chunks)])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        prompt, llm_string = self._key(messages, stop, kwargs)
        found = await self.semantic_cache.alookup_hit(prompt, llm_string)
        if found is not None:
            await areport_hit(found[1], run_manager)
            for piece in _replay(found[0]):
                yield piece
            return
        if not self._streams():
            result = await self.model._agenerate(messages, stop=stop, **kwargs)
            await self.semantic_cache.aupdate(prompt, llm_string, result.generations)
            for piece in _replay(result.generations):
                yield piece
            return
        chunks: list[ChatGenerationChunk] = []
        async for chunk in self.model._astream(messages, stop=stop, **kwargs):
            chunks.append(chunk)
            yield chunk
        await self.semantic_cache.aupdate(prompt, llm_string, [_completed(chunks)])

    def _streams(self) -> bool:
        """Whether the wrapped model implements streaming (BaseChatModel's default ``_astream`` falls
        back to ``_stream``, so ``_stream`` decides)."""
        return type(self.model)._stream is not BaseChatModel._stream


def _as_chat_generation(generation: Any) -> ChatGeneration:
    if isinstance(generation, ChatGeneration):
        return generation
    return ChatGeneration(message=AIMessage(generation.text), generation_info=generation.generation_info)


def _completed(chunks: list[ChatGenerationChunk]) -> ChatGeneration:
    """The whole message of a completed stream, as the non-streaming call would have returned it."""
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    return ChatGeneration(
        message=message_chunk_to_message(total.message), generation_info=total.generation_info
    )


def _replay(generations: Sequence[Any]) -> Iterator[ChatGenerationChunk]:
    """The first generation's message as chunks that add up to it: its text word by word, then its
    tool calls and usage in a last chunk. Metadata rides on the first chunk only, since merging
    chunks concatenates string values."""
    message = _as_chat_generation(generations[0]).message
    content = message.content
    pieces: list[Any] = _PIECE.findall(content) if isinstance(content, str) else [content]
    pieces = pieces or [""]
    for i, piece in enumerate(pieces):
        if i == 0:
            chunk = AIMessageChunk(
                content=piece,
                response_metadata=message.response_metadata,
                additional_kwargs=message.additional_kwargs,
                name=message.name,
            )
        else:
            chunk = AIMessageChunk(content=piece)
        yield ChatGenerationChunk(message=chunk)
    tool_calls = getattr(message, "tool_calls", None) or []
    usage = getattr(message, "usage_metadata", None)
    if tool_calls or usage:
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {"name": c["name"], "args": json.dumps(c["args"]), "id": c.get("id"), "index": i}
                    for i, c in enumerate(tool_calls)
                ],
                usage_metadata=usage,
            )
        )

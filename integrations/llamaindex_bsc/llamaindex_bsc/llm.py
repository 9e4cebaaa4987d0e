"""`CachingLLM`: an LLM that answers repeated and paraphrased calls from a semantic cache.

LlamaIndex has no LLM cache hook, so the cache is an `LLM` that wraps another one. LlamaIndex components
read ``Settings.llm`` when they are built: install the cache before building indexes, query engines,
chat engines or agents.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bsc import FalseHitGuard, SemanticCache, TextHit, Verifier
from bsc.fail_open import FailOpenCache
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
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.settings import Settings
from llama_index.core.types import TokenAsyncGen, TokenGen

from llamaindex_bsc._construction import build_cache
from llamaindex_bsc.keys import (
    TOOL_KWARGS,
    CallKeyFunction,
    LLMCall,
    Unkeyable,
    _exact_only,
    _message_parts,
    default_call_key,
    json_safe,
    model_identity,
    namespace_for,
    namespace_prefix,
)
from llamaindex_bsc.recording import arecorded, recorded
from llamaindex_bsc.responses import (
    StoredAnswer,
    aiter_replay,
    cacheable_chat,
    chat_response,
    completion_response,
    dumps_chat,
    dumps_completion,
    iter_replay,
    loads_answer,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["CachingLLM", "install_llm_cache"]

logger = logging.getLogger(__name__)

#: Stands in for the question when a template is rendered for the exact part of the key.
_QUESTION_PLACEHOLDER = "\x00bsc-question\x00"


@dataclass(slots=True)
class _PendingQuestion:
    """The question of a ``predict``/``stream`` template, for the one chat/complete call it makes."""

    text: str
    context: Any
    used: bool = False


_PENDING: ContextVar[_PendingQuestion | None] = ContextVar("llamaindex_bsc_pending_question", default=None)


@dataclass(frozen=True, slots=True)
class _Slot:
    """A resolved cache key: the namespace of its exact partition and the text to embed."""

    namespace: str
    text: str


class CachingLLM(FunctionCallingLLM):
    """Wraps any LlamaIndex `LLM` so repeated and paraphrased calls are answered from a semantic cache.

    Every chat/complete method (sync, async, streaming) is cached. The text of the last user message (or
    of the prompt, for completions) is compared by meaning; the wrapped model's identity and parameters,
    the call kind, every other message, the last user message's non-text blocks, and the call kwargs must
    match exactly. Prompts from ``predict``/``stream`` templates with a question variable (``query_str``,
    as RAG query engines use) are keyed on the question, with the rest of the rendered prompt (the
    retrieved context) matched exactly. Tool/function-calling calls pass through uncached.

    On a hit the wrapped LLM is not called; a streaming hit replays the cached text as deltas. A missed
    stream is stored only once it has been read to the end. Cached answers are JSON (text, role and
    JSON-safe additional kwargs), never pickles, and never the provider's ``raw`` object. A replayed
    response carries ``additional_kwargs["bsc_cache_hit"]`` (similarity, exact, id).

    The wrapper is a `FunctionCallingLLM` so that function-calling features of the wrapped model keep
    working (``chat_with_tools`` and friends are delegated); ``metadata`` is the wrapped model's, so
    LlamaIndex routes chat vs. completion exactly as it would without the cache. A cache error is logged
    and the wrapped model is called instead.

    Args:
        llm: the LLM to wrap.
        cache: a `bsc.SemanticCache` to use (e.g. shared by several wrappers); if given, ``embedder``,
            ``guard``, ``verifier`` and cache options must not be.
        embedder: a `bsc.embedders.Embedder` or a LlamaIndex ``BaseEmbedding`` (e.g.
            ``Settings.embed_model``); None uses the local offline all-MiniLM-L6-v2.
        namespace: a partition of your own (e.g. per tenant); calls only hit entries of their namespace.
        guard: the false-hit guard (True, False or a configured `bsc.FalseHitGuard`).
        verifier: an optional second opinion on each semantic candidate.
        key_fn: how a call becomes a key (see `llamaindex_bsc.keys.default_call_key`); the model
            identity, call kind and namespace are always added to its partition.
        max_semantic_chars: texts longer than this only hit when identical (an embedding model sees a
            bounded number of tokens, and a short difference in a long prompt barely moves it); None
            turns the limit off.
        question_vars: template variables that hold the user's question in ``predict``/``stream``
            (``query_str`` in query engines, ``question`` in the condense-question chat prompt).
        callback_manager: defaults to the wrapped LLM's.
        **cache_options: passed to `bsc.SemanticCache` (threshold, ttl, max_entries, path, autosave, ...);
            with ``path`` the cache is loaded from and saved to a snapshot (``llm.cache.save()``);
            with ``redis_url`` it is shared with every process using that Redis (failing open).

    Raises:
        TypeError: if ``llm`` is not a LlamaIndex `LLM`, or options conflict (see ``cache``).

    Example:
        >>> from llama_index.core import Settings
        >>> from llama_index.core.llms import MockLLM
        >>> Settings.llm = CachingLLM(llm=MockLLM(max_tokens=3))
        >>> Settings.llm.complete("What is the capital of France?").text
        'text text text'
    """

    namespace: str = Field(default="default", description="User partition of the cache.")
    max_semantic_chars: int | None = Field(
        default=1000, description="Longer texts only hit when identical; None for no limit."
    )
    question_vars: tuple[str, ...] = Field(
        default=("query_str", "question"), description="Template variables holding the user's question."
    )

    _llm: LLM = PrivateAttr()
    _cache: FailOpenCache = PrivateAttr()
    _key_fn: CallKeyFunction = PrivateAttr()

    def __init__(
        self,
        llm: LLM,
        cache: SemanticCache | None = None,
        *,
        embedder: Any = None,
        namespace: str = "default",
        guard: FalseHitGuard | bool = True,
        verifier: Verifier | None = None,
        key_fn: CallKeyFunction | None = None,
        max_semantic_chars: int | None = 1000,
        question_vars: Sequence[str] = ("query_str", "question"),
        callback_manager: CallbackManager | None = None,
        **cache_options: Any,
    ) -> None:
        if not isinstance(llm, LLM):
            raise TypeError(f"llm must be a LlamaIndex LLM, got {type(llm).__name__}")
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
        super().__init__(
            namespace=namespace,
            max_semantic_chars=max_semantic_chars,
            question_vars=tuple(question_vars),
            callback_manager=callback_manager or llm.callback_manager,
            # Prompt shaping is copied so that predict()/stream() on the wrapper build the same
            # prompts as on the wrapped model (system prompt, completion_to_prompt, output parser).
            system_prompt=llm.system_prompt,
            messages_to_prompt=llm.messages_to_prompt,
            completion_to_prompt=llm.completion_to_prompt,
            output_parser=llm.output_parser,
            pydantic_program_mode=llm.pydantic_program_mode,
            query_wrapper_prompt=llm.query_wrapper_prompt,
        )
        self._llm = llm
        self._cache = FailOpenCache(build_cache(cache, embedder, guard, verifier, cache_options), logger)
        self._key_fn = key_fn or default_call_key

    @classmethod
    def class_name(cls) -> str:
        return "CachingLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The wrapped model's metadata (so chat/complete routing is unchanged)."""
        return self._llm.metadata

    @property
    def llm(self) -> LLM:
        """The wrapped LLM."""
        return self._llm

    @property
    def cache(self) -> SemanticCache:
        """The underlying `bsc.SemanticCache` (``stats()``, ``clear()``)."""
        return self._cache.cache

    def clear(self) -> None:
        """Forgets the answers cached under this wrapper's ``namespace`` (for every wrapped model)."""
        self._cache.clear_prefix(namespace_prefix("llm", self.namespace))

    # ---------------------------------------------------------------- keys
    def _slot(self, call: LLMCall) -> _Slot | None:
        if TOOL_KWARGS & call.kwargs.keys():
            return None
        pending = _PENDING.get()
        if pending is not None and not pending.used:
            pending.used = True
            call = LLMCall(
                call.kind,
                messages=call.messages,
                prompt=call.prompt,
                formatted=call.formatted,
                kwargs=call.kwargs,
                question=pending.text,
                question_context=pending.context,
            )
        try:
            key = self._key_fn(call)
            if key is None:
                return None
            if self.max_semantic_chars is not None and len(key.text) > self.max_semantic_chars:
                key = _exact_only(key)
            parts = {
                "llm": model_identity(self._llm),
                "kind": call.kind,
                "partition": json_safe(key.partition),
            }
        except Unkeyable as exc:
            logger.debug("call not cached: %s", exc)
            return None
        return _Slot(namespace_for("llm", self.namespace, parts), key.text)

    def _chat_slot(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> _Slot | None:
        return self._slot(LLMCall("chat", messages=tuple(messages), kwargs=kwargs))

    def _complete_slot(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> _Slot | None:
        return self._slot(LLMCall("complete", prompt=prompt, formatted=formatted, kwargs=kwargs))

    # ---------------------------------------------------------------- cache access (fail open)
    @staticmethod
    def _answer(hit: TextHit | None, kind: str) -> tuple[StoredAnswer, dict[str, Any]] | None:
        if hit is None:
            return None
        answer = loads_answer(hit.response)
        if answer is None or answer.kind != kind:
            return None
        return answer, {"similarity": hit.similarity, "exact": hit.exact, "id": hit.id}

    def _lookup(self, slot: _Slot | None, kind: str) -> tuple[StoredAnswer, dict[str, Any]] | None:
        if slot is None:
            return None
        return self._answer(self._cache.lookup(slot.text, namespace=slot.namespace), kind)

    async def _alookup(self, slot: _Slot | None, kind: str) -> tuple[StoredAnswer, dict[str, Any]] | None:
        if slot is None:
            return None
        return self._answer(await self._cache.alookup(slot.text, namespace=slot.namespace), kind)

    def _store(self, slot: _Slot | None, payload: str | None) -> None:
        if slot is not None and payload is not None:
            self._cache.update(slot.text, payload, namespace=slot.namespace)

    async def _astore(self, slot: _Slot | None, payload: str | None) -> None:
        if slot is not None and payload is not None:
            await self._cache.aupdate(slot.text, payload, namespace=slot.namespace)

    @staticmethod
    def _chat_payload(response: ChatResponse | None, text: str | None = None) -> str | None:
        if response is None or not cacheable_chat(response):
            return None
        return dumps_chat(response, text)

    # ---------------------------------------------------------------- complete
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Completion, answered from the cache when the prompt (or a paraphrase) was seen."""
        slot = self._complete_slot(prompt, formatted, kwargs)
        found = self._lookup(slot, "complete")
        if found is not None:
            return completion_response(*found)
        response = self._llm.complete(prompt, formatted=formatted, **kwargs)
        self._store(slot, dumps_completion(response))
        return response

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async `complete`: awaits the cache and the wrapped model's ``acomplete``."""
        slot = self._complete_slot(prompt, formatted, kwargs)
        found = await self._alookup(slot, "complete")
        if found is not None:
            return completion_response(*found)
        response = await self._llm.acomplete(prompt, formatted=formatted, **kwargs)
        await self._astore(slot, dumps_completion(response))
        return response

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Streaming completion: a hit is replayed as deltas; a miss is streamed live, stored at its end."""
        slot = self._complete_slot(prompt, formatted, kwargs)
        found = self._lookup(slot, "complete")
        if found is not None:
            answer, info = found
            return (completion_response(answer, info, text=t, delta=d) for t, d in iter_replay(answer.text))
        stream = self._llm.stream_complete(prompt, formatted=formatted, **kwargs)
        return recorded(stream, lambda items: self._store(slot, _completion_payload(items)))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async `stream_complete`."""
        slot = self._complete_slot(prompt, formatted, kwargs)
        found = await self._alookup(slot, "complete")
        if found is not None:
            return self._areplay_completion(*found)
        stream = await self._llm.astream_complete(prompt, formatted=formatted, **kwargs)
        return arecorded(stream, lambda items: self._astore(slot, _completion_payload(items)))

    @staticmethod
    async def _areplay_completion(answer: StoredAnswer, info: dict[str, Any]) -> CompletionResponseAsyncGen:
        async for text, delta in aiter_replay(answer.text):
            yield completion_response(answer, info, text=text, delta=delta)

    # ---------------------------------------------------------------- chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Chat, answered from the cache when the last user message (or a paraphrase) was seen in the
        same conversation."""
        slot = self._chat_slot(messages, kwargs)
        found = self._lookup(slot, "chat")
        if found is not None:
            return chat_response(*found)
        response = self._llm.chat(messages, **kwargs)
        self._store(slot, self._chat_payload(response))
        return response

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async `chat`: awaits the cache and the wrapped model's ``achat``."""
        slot = self._chat_slot(messages, kwargs)
        found = await self._alookup(slot, "chat")
        if found is not None:
            return chat_response(*found)
        response = await self._llm.achat(messages, **kwargs)
        await self._astore(slot, self._chat_payload(response))
        return response

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Streaming chat: a hit is replayed as deltas; a miss is streamed live, stored at its end."""
        slot = self._chat_slot(messages, kwargs)
        found = self._lookup(slot, "chat")
        if found is not None:
            answer, info = found
            return (chat_response(answer, info, text=t, delta=d) for t, d in iter_replay(answer.text))
        stream = self._llm.stream_chat(messages, **kwargs)
        return recorded(stream, lambda items: self._store(slot, self._stream_chat_payload(items)))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async `stream_chat`."""
        slot = self._chat_slot(messages, kwargs)
        found = await self._alookup(slot, "chat")
        if found is not None:
            return self._areplay_chat(*found)
        stream = await self._llm.astream_chat(messages, **kwargs)
        return arecorded(stream, lambda items: self._astore(slot, self._stream_chat_payload(items)))

    @classmethod
    def _stream_chat_payload(cls, items: list[ChatResponse]) -> str | None:
        """What a finished chat stream stores (None for an empty stream)."""
        last = items[-1] if items else None
        return cls._chat_payload(last, _assembled_text(last, items))

    @staticmethod
    async def _areplay_chat(answer: StoredAnswer, info: dict[str, Any]) -> ChatResponseAsyncGen:
        async for text, delta in aiter_replay(answer.text):
            yield chat_response(answer, info, text=text, delta=delta)

    # ---------------------------------------------------------------- templated calls (question keys)
    def _pending_question(
        self, prompt: BasePromptTemplate, prompt_args: dict[str, Any]
    ) -> _PendingQuestion | None:
        values = {**prompt.kwargs, **prompt_args}
        for var in self.question_vars:
            question = values.get(var)
            if not isinstance(question, str) or not question.strip():
                continue
            args = {**prompt_args, var: _QUESTION_PLACEHOLDER}
            try:
                if self.metadata.is_chat_model:
                    context: Any = [_message_parts(m) for m in self._get_messages(prompt, **args)]
                else:
                    context = self._get_prompt(prompt, **args)
            except Exception as exc:  # an unusual template: fall back to the plain chat/prompt key
                logger.debug("template not keyed by its question: %s", exc)
                return None
            return _PendingQuestion(question, {"var": var, "rendered": context})
        return None

    @contextmanager
    def _question_scope(self, prompt: BasePromptTemplate, prompt_args: dict[str, Any]) -> Iterator[None]:
        token = _PENDING.set(self._pending_question(prompt, prompt_args))
        try:
            yield
        finally:
            _PENDING.reset(token)

    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        """`LLM.predict`, keyed on the template's question when it has one (see ``question_vars``)."""
        with self._question_scope(prompt, prompt_args):
            return super().predict(prompt, **prompt_args)

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenGen:
        """`LLM.stream`, keyed like `predict`."""
        with self._question_scope(prompt, prompt_args):
            return super().stream(prompt, **prompt_args)

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        """`LLM.apredict`, keyed like `predict`."""
        with self._question_scope(prompt, prompt_args):
            return await super().apredict(prompt, **prompt_args)

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenAsyncGen:
        """`LLM.astream`, keyed like `predict`."""
        with self._question_scope(prompt, prompt_args):
            return await super().astream(prompt, **prompt_args)

    # ---------------------------------------------------------------- function calling: uncached
    def _function_calling_llm(self) -> FunctionCallingLLM:
        if isinstance(self._llm, FunctionCallingLLM):
            return self._llm
        raise TypeError(f"the wrapped {type(self._llm).__name__} is not a function-calling LLM")

    # The five tool-calling entry points share FunctionCallingLLM's signature (tools, user_msg,
    # chat_history, verbose, allow_parallel_tool_calls, tool_required, **kwargs); they forward it as
    # given, so a new parameter in LlamaIndex reaches the wrapped model without a change here.
    def chat_with_tools(self, *args: Any, **kwargs: Any) -> ChatResponse:
        """Delegated to the wrapped model, uncached."""
        return self._function_calling_llm().chat_with_tools(*args, **kwargs)

    async def achat_with_tools(self, *args: Any, **kwargs: Any) -> ChatResponse:
        """Delegated to the wrapped model, uncached."""
        return await self._function_calling_llm().achat_with_tools(*args, **kwargs)

    def stream_chat_with_tools(self, *args: Any, **kwargs: Any) -> ChatResponseGen:
        """Delegated to the wrapped model, uncached."""
        return self._function_calling_llm().stream_chat_with_tools(*args, **kwargs)

    async def astream_chat_with_tools(self, *args: Any, **kwargs: Any) -> ChatResponseAsyncGen:
        """Delegated to the wrapped model, uncached."""
        return await self._function_calling_llm().astream_chat_with_tools(*args, **kwargs)

    def _prepare_chat_with_tools(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._function_calling_llm()._prepare_chat_with_tools(*args, **kwargs)

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        return self._function_calling_llm()._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The wrapped model's tool calls in ``response`` (none for a model without function calling)."""
        if not isinstance(self._llm, FunctionCallingLLM):
            if error_on_no_tool_call:
                raise ValueError(f"the wrapped {type(self._llm).__name__} does not make tool calls")
            return []
        return self._llm.get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )


def _assembled_text(
    last: ChatResponse | CompletionResponse | None, items: Sequence[ChatResponse | CompletionResponse]
) -> str:
    """What a finished stream said: the deltas the consumer saw, else the final cumulative text."""
    joined = "".join(item.delta or "" for item in items)
    if joined:
        return joined
    if isinstance(last, ChatResponse):
        return last.message.content or ""
    return last.text if last is not None else ""


def _completion_payload(items: list[CompletionResponse]) -> str | None:
    """What a finished completion stream stores (None for an empty stream)."""
    if not items:
        return None
    last = items[-1]
    text = _assembled_text(last, items)
    return dumps_completion(CompletionResponse(text=text, additional_kwargs=last.additional_kwargs))


def install_llm_cache(llm: LLM | None = None, **options: Any) -> CachingLLM:
    """Wraps ``llm`` (default: the current ``Settings.llm``) and installs the wrapper as ``Settings.llm``.

    Call it before building indexes, query engines or chat engines: they read ``Settings.llm`` when they
    are built. Installing twice returns the installed wrapper unchanged.

    Args:
        llm: the LLM to wrap; None wraps the LLM already set in ``Settings.llm``.
        **options: `CachingLLM` options.

    Raises:
        ValueError: if ``llm`` is None and no ``Settings.llm`` was set (LlamaIndex would otherwise
            resolve its default, an OpenAI model).

    Example:
        >>> from llama_index.core import Settings
        >>> from llama_index.core.llms import MockLLM
        >>> Settings.llm = MockLLM()
        >>> isinstance(install_llm_cache(), CachingLLM)
        True
    """
    if llm is None:
        # Reading Settings.llm when unset would resolve (and maybe download) the default model.
        llm = getattr(Settings, "_llm", None)
        if llm is None:
            raise ValueError("set Settings.llm before installing the cache, or pass llm=")
    if isinstance(llm, CachingLLM):
        if options:
            raise ValueError("Settings.llm is already a CachingLLM; options would be ignored")
        Settings.llm = llm
        return llm
    wrapper = CachingLLM(llm, **options)
    Settings.llm = wrapper
    return wrapper

"""Cached LLM answers as JSON text, and their replay as whole responses or as streams.

Only text, the role and JSON-safe additional kwargs are kept: provider ``raw`` objects and logprobs are
dropped, and nothing is ever pickled, so a cache entry cannot execute code when it is read back.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
    TextBlock,
    ThinkingBlock,
)

from llamaindex_bsc.keys import json_safe_items

__all__ = [
    "CACHE_HIT_KEY",
    "StoredAnswer",
    "chat_response",
    "completion_response",
    "dumps_chat",
    "dumps_completion",
    "loads_answer",
    "stream_pieces",
]

#: Key added to a replayed response's ``additional_kwargs``: the hit's similarity, exactness and id.
CACHE_HIT_KEY = "bsc_cache_hit"
_FORMAT = 1
# A word and the whitespace after it (or leading whitespace): the pieces join back to the exact text.
_PIECE = re.compile(r"\S+\s*|\s+")


class StoredAnswer:
    """A cached answer read back from JSON: text, role and additional kwargs."""

    __slots__ = ("additional_kwargs", "kind", "message_kwargs", "role", "text")

    def __init__(
        self,
        kind: str,
        text: str,
        role: str,
        message_kwargs: dict[str, Any],
        additional_kwargs: dict[str, Any],
    ) -> None:
        self.kind = kind
        self.text = text
        self.role = role
        self.message_kwargs = message_kwargs
        self.additional_kwargs = additional_kwargs


def _kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    return json_safe_items({k: v for k, v in values.items() if k != CACHE_HIT_KEY})


def dumps_completion(response: CompletionResponse) -> str:
    """A completion as JSON text.

    Example:
        >>> loads_answer(dumps_completion(CompletionResponse(text="Paris"))).text
        'Paris'
    """
    return json.dumps(
        {
            "v": _FORMAT,
            "kind": "complete",
            "text": response.text,
            "additional_kwargs": _kwargs(response.additional_kwargs),
        },
        ensure_ascii=False,
    )


def cacheable_chat(response: ChatResponse) -> bool:
    """Whether a chat answer is plain text (tool calls and other non-text blocks are not replayable)."""
    message = response.message
    if "tool_calls" in message.additional_kwargs or "tool_calls" in response.additional_kwargs:
        return False
    return all(isinstance(b, TextBlock | ThinkingBlock) for b in message.blocks)


def dumps_chat(response: ChatResponse, text: str | None = None) -> str:
    """A chat answer as JSON text (``text`` overrides the message's, e.g. a stream's assembled text).

    Example:
        >>> answer = ChatResponse(message=ChatMessage(role="assistant", content="Paris"))
        >>> loads_answer(dumps_chat(answer)).role
        'assistant'
    """
    message = response.message
    return json.dumps(
        {
            "v": _FORMAT,
            "kind": "chat",
            "text": text if text is not None else (message.content or ""),
            "role": message.role.value,
            "message_kwargs": _kwargs(message.additional_kwargs),
            "additional_kwargs": _kwargs(response.additional_kwargs),
        },
        ensure_ascii=False,
    )


def loads_answer(payload: str | bytes) -> StoredAnswer | None:
    """A stored answer, or None if ``payload`` is not one this version wrote (treated as a miss)."""
    try:
        data = json.loads(payload)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("v") != _FORMAT or not isinstance(data.get("text"), str):
        return None
    return StoredAnswer(
        kind=str(data.get("kind")),
        text=data["text"],
        role=str(data.get("role", MessageRole.ASSISTANT.value)),
        message_kwargs=dict(data.get("message_kwargs") or {}),
        additional_kwargs=dict(data.get("additional_kwargs") or {}),
    )


def completion_response(
    answer: StoredAnswer, hit_info: Mapping[str, Any], *, text: str | None = None, delta: str | None = None
) -> CompletionResponse:
    """A `CompletionResponse` replaying ``answer`` (``text``/``delta`` for one step of a stream)."""
    return CompletionResponse(
        text=answer.text if text is None else text,
        delta=delta,
        additional_kwargs={**answer.additional_kwargs, CACHE_HIT_KEY: dict(hit_info)},
    )


def chat_response(
    answer: StoredAnswer, hit_info: Mapping[str, Any], *, text: str | None = None, delta: str | None = None
) -> ChatResponse:
    """A `ChatResponse` replaying ``answer`` (``text``/``delta`` for one step of a stream)."""
    try:
        role = MessageRole(answer.role)
    except ValueError:
        role = MessageRole.ASSISTANT
    return ChatResponse(
        message=ChatMessage(
            role=role,
            content=answer.text if text is None else text,
            additional_kwargs=dict(answer.message_kwargs),
        ),
        delta=delta,
        additional_kwargs={**answer.additional_kwargs, CACHE_HIT_KEY: dict(hit_info)},
    )


def stream_pieces(text: str) -> list[str]:
    """The deltas a cached text is replayed as: words with their trailing whitespace.

    Example:
        >>> stream_pieces("Paris is  big.")
        ['Paris ', 'is  ', 'big.']
        >>> "".join(stream_pieces(" a b")) == " a b"
        True
    """
    return _PIECE.findall(text) or [""]


def iter_replay(text: str) -> Iterator[tuple[str, str]]:
    """(text so far, delta) for each piece of ``text``."""
    so_far = ""
    for piece in stream_pieces(text):
        so_far += piece
        yield so_far, piece


async def aiter_replay(text: str) -> AsyncIterator[tuple[str, str]]:
    """Async `iter_replay`."""
    for step in iter_replay(text):
        yield step

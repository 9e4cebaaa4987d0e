"""Cached values as LangChain JSON, loaded back with an explicit allowlist of classes.

``langchain_core.load.loads`` is marked beta and warns unless its caller's module name starts with
"langchain" (this package's does); the tests run it with warnings as errors to notice a change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.load import dumps, loads
from langchain_core.load.serializable import Serializable
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

logger = logging.getLogger("langchain_bsc")

#: What a model's cached generations may contain: the generation classes and the AI message a chat
#: model returns.
GENERATION_CLASSES: tuple[type[Serializable], ...] = (
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    AIMessage,
    AIMessageChunk,
)

#: What a cached chain output may contain by default: messages, documents and generations.
OUTPUT_CLASSES: tuple[type[Serializable], ...] = (
    *GENERATION_CLASSES,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    Document,
)


def dump(value: Any) -> str | None:
    """LangChain JSON of ``value``, or None when part of it cannot be serialized (not cached)."""
    try:
        text = dumps(value)
    except (TypeError, ValueError) as exc:
        logger.debug("not caching a value that cannot be serialized: %s", exc)
        return None
    if '"type": "not_implemented"' in text:
        logger.debug("not caching a value with an unserializable part: %.200s", text)
        return None
    return text


def load(text: str | bytes, allowed: Sequence[type[Serializable]]) -> tuple[bool, Any]:
    """``(True, value)`` for a cached value, or ``(False, None)`` if it no longer loads (say, a class
    outside ``allowed``); the caller treats that as a miss."""
    try:
        raw = text.decode() if isinstance(text, bytes) else text
        return True, loads(raw, allowed_objects=allowed)
    except Exception as exc:  # a bad entry must never break the call it would have answered
        logger.warning("ignoring a cached value that does not load: %s", exc)
        return False, None

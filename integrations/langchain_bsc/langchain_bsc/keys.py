"""How a LangChain cache prompt splits into the text to embed and the exact partition around it.

A chat model hands its cache ``dumps(messages)``: the whole conversation as LangChain JSON. Embedding
that JSON whole (what other LangChain semantic caches do) lets the system prompt, the history and any
pasted context dominate the vector, so two different questions in the same long conversation look alike.
Here only the last human message's text is embedded; everything else must match exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["PromptKey", "PromptKeyFunction", "default_prompt_key"]

_HUMAN_CLASSES = frozenset({"HumanMessage", "HumanMessageChunk"})


class PromptKey(NamedTuple):
    """A prompt split for the cache.

    Attributes:
        text: what is embedded and compared semantically (and exactly, after whitespace normalisation).
        partition: what must match exactly for a hit; any string (it is hashed into the namespace).
    """

    text: str
    partition: str


#: ``key(prompt) -> PromptKey``: overrides how `BinarySemanticLLMCache` splits a prompt.
PromptKeyFunction = Callable[[str], PromptKey]


def default_prompt_key(prompt: str) -> PromptKey:
    """Splits a LangChain cache prompt into the text to embed and the exact partition.

    A chat prompt (the ``langchain_core.load.dumps`` JSON of a message list) embeds the text of its
    last human message; the partition is the canonical JSON of everything else: every other message
    (system prompt, earlier turns, tool calls and results after the question) and the question's own
    non-text parts (images, attachments, ``name``, ``additional_kwargs``). Content-block ids that
    LangChain generates at random (``"lc_<uuid>"``) are left out, so rebuilding the same message
    matches. A chat prompt without a
    human message embeds nothing (the empty text) and so matches exactly only. Any other prompt (a
    text LLM's) is embedded whole with an empty partition.

    Args:
        prompt: the ``prompt`` argument LangChain passes to ``BaseCache.lookup``/``update``.

    Returns:
        The `PromptKey`.

    Example:
        >>> from langchain_core.load import dumps
        >>> from langchain_core.messages import HumanMessage, SystemMessage
        >>> key = default_prompt_key(dumps([SystemMessage("Be brief."), HumanMessage("Hi there")]))
        >>> key.text
        'Hi there'
        >>> default_prompt_key("Tell me a joke").partition
        ''
    """
    messages = _chat_messages(prompt)
    if messages is None:
        return PromptKey(prompt, "")
    messages = [_without_generated_block_ids(m) for m in messages]
    last_human = next((i for i in range(len(messages) - 1, -1, -1) if _is_human(messages[i])), None)
    context: list[Any] = list(messages)
    text = ""
    if last_human is not None:
        kwargs = dict(messages[last_human]["kwargs"])
        text, rest = _split_content(kwargs.get("content", ""))
        # The question's slot stays in place (so its position in the conversation counts) with its
        # text removed and its non-text parts kept.
        kwargs["content"] = rest
        context[last_human] = {**messages[last_human], "kwargs": kwargs, "bsc_question": True}
    partition = json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return PromptKey(text, partition)


def _chat_messages(prompt: str) -> list[dict[str, Any]] | None:
    """The serialized messages of a chat prompt, or None for a prompt that is not one."""
    if not prompt.startswith('[{"lc"'):  # dumps() output; skips parsing every text prompt
        return None
    try:
        parsed = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(parsed, list) or not parsed:
        return None
    for item in parsed:
        if not (
            isinstance(item, dict)
            and item.get("lc") == 1
            and item.get("type") == "constructor"
            and isinstance(item.get("id"), list)
            and isinstance(item.get("kwargs"), dict)
        ):
            return None
    return parsed


def _is_human(message: dict[str, Any]) -> bool:
    return message["kwargs"].get("type") == "human" or (
        bool(message["id"]) and message["id"][-1] in _HUMAN_CLASSES
    )


def _without_generated_block_ids(message: dict[str, Any]) -> dict[str, Any]:
    """The message without the ``id`` of content blocks whose id LangChain generated.

    LangChain's standard content blocks get a fresh ``"lc_<uuid>"`` id each time a message is built,
    so kept in the partition they would make every rebuilt message a miss.
    """
    content = message["kwargs"].get("content")
    if not isinstance(content, list):
        return message
    blocks = [
        {k: v for k, v in block.items() if k != "id"}
        if isinstance(block, dict) and isinstance(block.get("id"), str) and block["id"].startswith("lc_")
        else block
        for block in content
    ]
    return {**message, "kwargs": {**message["kwargs"], "content": blocks}}


def _split_content(content: Any) -> tuple[str, Any]:
    """(text, everything else) of a message's content: a str, or a list of str and content blocks."""
    if isinstance(content, str):
        return content, ""
    if not isinstance(content, list):
        return "", content
    texts: list[str] = []
    rest: list[Any] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
            rest.append({"type": "text"})
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
            rest.append({k: v for k, v in block.items() if k != "text"})
        else:
            rest.append(block)
    return "\n".join(texts), rest

"""How an LLM call becomes a cache key: an exact partition (hashed into a namespace) and a text to embed.

Only the text of the last user message (or the question of a templated prompt) is compared by meaning;
everything else that can change the answer must match exactly: the wrapped model and its parameters,
the call kind, every other message, the non-text parts of the last user message, and the call kwargs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bsc.digest import digest
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock
from llama_index.core.llms import LLM

__all__ = [
    "TOOL_KWARGS",
    "CallKey",
    "CallKeyFunction",
    "LLMCall",
    "Unkeyable",
    "default_call_key",
    "json_safe",
    "json_safe_items",
    "model_identity",
    "namespace_for",
    "namespace_prefix",
]

#: Call kwargs that mean a tool/function-calling request; such calls are passed through uncached.
TOOL_KWARGS = frozenset(
    {"tools", "tool_choice", "functions", "function_call", "tool_required", "parallel_tool_calls"}
)

# Model fields that do not change what the model answers (transport, retries, observability) or that
# are credentials: a rotated API key or a longer timeout must not empty the cache, and secrets are
# never hashed into a key.
_VOLATILE_FIELDS = frozenset(
    {
        "callback_manager",
        "timeout",
        "request_timeout",
        "max_retries",
        "retry_delay",
        "reuse_client",
        "http_client",
        "async_http_client",
        "default_headers",
        "default_query",
        "num_workers",
        "verbose",
        "show_progress",
        "rate_limiter",
    }
)
_SECRET_FIELD = re.compile(r"(api_?key|secret|password|credential|authorization|(^|_)token$)", re.IGNORECASE)
_JSON_SCALARS = (str, int, bool, type(None))


class Unkeyable(ValueError):
    """A call or a value that cannot be keyed exactly (so it is passed through uncached)."""


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data (dicts, lists, str, finite numbers, bools, None).

    Tuples become lists and enums their value; anything else is not exactly reproducible from text.

    Raises:
        Unkeyable: for any other type, a non-finite float or a non-str dict key.

    Example:
        >>> json_safe({"temperature": 0.1, "stop": ("\\n",)})
        {'temperature': 0.1, 'stop': ['\\n']}
    """
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unkeyable(f"non-finite float {value!r}")
        return value
    if isinstance(value, MessageRole):
        return value.value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise Unkeyable(f"non-str key {k!r}")
            out[k] = json_safe(v)
        return out
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    raise Unkeyable(f"{type(value).__name__} is not plain JSON data")


def json_safe_items(values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-safe entries of ``values``; the others are dropped (for stored responses).

    Example:
        >>> json_safe_items({"usage": {"tokens": 3}, "raw": object()})
        {'usage': {'tokens': 3}}
    """
    out: dict[str, Any] = {}
    for k, v in values.items():
        try:
            out[str(k)] = json_safe(v)
        except Unkeyable:
            continue
    return out


def model_identity(llm: LLM) -> dict[str, Any]:
    """What identifies ``llm`` as a model: its class, model name and answer-shaping parameters.

    Taken from ``llm.to_dict()`` (pydantic fields, minus excluded ones) without transport settings and
    credentials. A value that is not plain JSON is represented by its type name, down to the single
    value: the JSON values beside it (``temperature`` next to a ``stopping_criteria`` object in
    ``generate_kwargs``) still tell models apart.

    Example:
        >>> from llama_index.core.llms import MockLLM
        >>> model_identity(MockLLM(max_tokens=5))["params"]["max_tokens"]
        5
    """
    cls = type(llm)
    try:
        raw = llm.to_dict()
    except Exception:  # some providers hold unserialisable fields; fall back to the metadata
        raw = {}
    params: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _VOLATILE_FIELDS or _SECRET_FIELD.search(name):
            continue
        params[name] = _json_or_type_names(value)
    try:
        metadata = json_safe_items(llm.metadata.model_dump())
    except Exception:
        metadata = {}
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "params": params, "metadata": metadata}


def _json_or_type_names(value: Any) -> Any:
    """``value`` as `json_safe` gives it, with each part that is not plain JSON replaced by a
    ``"<TypeName>"`` string (a type name is stable across processes, unlike a repr with an address)."""
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else _key_name(k): _json_or_type_names(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_or_type_names(v) for v in value]
    try:
        return json_safe(value)
    except Unkeyable:
        if isinstance(value, float):  # inf and nan stay apart
            return f"<float {value!r}>"
        return f"<{type(value).__name__}>"


def _key_name(key: Any) -> str:
    # Numbers and the like keep their value (e.g. token ids in a logit_bias); other objects their type.
    if isinstance(key, (*_JSON_SCALARS, float)):
        return f"<{type(key).__name__} {key!r}>"
    return f"<{type(key).__name__}>"


def _digest(parts: Any) -> str:
    return digest(json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)).hex()


def namespace_for(kind: str, user_namespace: str, parts: Any) -> str:
    """The cache namespace of one exact partition: what is cached (``"llm"`` or ``"query"``), the
    user's namespace, and a digest of ``parts``.

    Example:
        >>> namespace_for("llm", "default", {"a": 1}).startswith("llamaindex-llm:default:")
        True
    """
    return f"{namespace_prefix(kind, user_namespace)}{_digest(parts)}"


def namespace_prefix(kind: str, user_namespace: str) -> str:
    """What every namespace of ``kind`` in ``user_namespace`` starts with (for clearing them all).

    ``:`` and ``\\`` in the user namespace are escaped with a backslash, so the prefix ends at the
    first unescaped ``:`` and no other user namespace's prefix starts with it (``"acme"`` does not
    match ``"acme:eu"``). Namespaces without either character read as they did before escaping, so
    their saved entries are still found.

    Example:
        >>> namespace_prefix("llm", "acme:eu")
        'llamaindex-llm:acme\\\\:eu:'
    """
    escaped = user_namespace.replace("\\", "\\\\").replace(":", "\\:")
    return f"llamaindex-{kind}:{escaped}:"


def _exact_only(key: CallKey) -> CallKey:
    """A key that can only match the identical text: the text moves into the partition.

    The embedded stand-in is short and the same for every call with this text, so nothing else in its
    (one-text) partition can be semantically near it.
    """
    text_digest = _digest(key.text)
    return CallKey(text=f"exact:{text_digest}", partition=[key.partition, "exact", key.text])


@dataclass(frozen=True, slots=True)
class LLMCall:
    """One chat or completion call as the key function sees it.

    Attributes:
        kind: ``"chat"`` or ``"complete"`` (streaming and async calls share the key of their kind).
        messages: the chat messages (chat calls).
        prompt: the prompt (completion calls).
        formatted: the ``formatted`` flag of a completion call (False lets the model apply its
            ``completion_to_prompt``, so it changes what the model sees).
        kwargs: the extra call kwargs.
        question: when the call comes from ``predict``/``stream`` on a template with a question
            variable (``query_str``), the question's text.
        question_context: then, the prompt rendered with the question replaced by a placeholder.
    """

    kind: Literal["chat", "complete"]
    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    formatted: bool = False
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    question: str | None = None
    question_context: Any = None


@dataclass(frozen=True, slots=True)
class CallKey:
    """Where a call is cached: ``partition`` must match exactly (any JSON data), ``text`` by meaning."""

    text: str
    partition: Any


#: ``key_fn(call) -> CallKey | None``; None passes the call through uncached. Raising `Unkeyable`
#: does the same.
CallKeyFunction = Callable[[LLMCall], "CallKey | None"]


def _message_parts(message: ChatMessage, *, drop_text: bool = False) -> dict[str, Any]:
    """A message as exact-match data: role, blocks and JSON-safe additional kwargs.

    With ``drop_text`` its text blocks are kept only as placeholders (their text is embedded instead).

    Raises:
        Unkeyable: if a block or an additional kwarg is not plain data.
    """
    blocks: list[Any] = []
    for block in message.blocks:
        if drop_text and isinstance(block, TextBlock):
            blocks.append({"block_type": "text"})
        else:
            try:
                dumped = block.model_dump(mode="json")
            except Exception as exc:  # provider blocks may hold live objects
                raise Unkeyable(f"cannot serialise a {type(block).__name__}") from exc
            blocks.append(json_safe(dumped))
    return {
        "role": message.role.value,
        "blocks": blocks,
        "additional_kwargs": json_safe(message.additional_kwargs),
    }


def _text_of(message: ChatMessage) -> str:
    return "\n".join(b.text for b in message.blocks if isinstance(b, TextBlock))


def default_call_key(call: LLMCall) -> CallKey | None:
    """The shared chat rule: embed the last user message's text, match everything else exactly.

    A templated call (``call.question`` set) embeds the question and matches the rest of the rendered
    prompt exactly. A chat with no user text is not cached.

    Raises:
        Unkeyable: if a message or kwarg is not plain data (the wrapper then calls through uncached).

    Example:
        >>> from llama_index.core.llms import ChatMessage
        >>> key = default_call_key(LLMCall("chat", messages=(ChatMessage(role="user", content="Hi"),)))
        >>> key.text
        'Hi'
    """
    kwargs = json_safe(dict(call.kwargs))
    if call.question is not None:
        context = json_safe(call.question_context)
        return CallKey(text=call.question, partition={"template": context, "kwargs": kwargs})
    if call.kind == "complete":
        if call.prompt is None:
            return None
        return CallKey(text=call.prompt, partition={"formatted": call.formatted, "kwargs": kwargs})
    last_user = _last_user_index(call.messages)
    if last_user is None:
        return None
    text = _text_of(call.messages[last_user])
    if not text.strip():
        return None
    messages = [_message_parts(m, drop_text=i == last_user) for i, m in enumerate(call.messages)]
    return CallKey(text=text, partition={"messages": messages, "kwargs": kwargs})


def _last_user_index(messages: Sequence[ChatMessage]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == MessageRole.USER:
            return i
    return None

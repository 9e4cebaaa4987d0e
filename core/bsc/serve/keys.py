"""How an OpenAI request becomes a cache key: the text compared by meaning and the namespace it must
match exactly, or the reason it bypasses the cache.

The rule is the integrations' (see `langchain_bsc.keys`): only the text of the last user turn is
embedded; the model, every sampling parameter, the system/developer prompt and instructions, the earlier
turns, the question's non-text parts, tools and ``response_format`` (in short, the whole body except the
question's text and transport fields) are hashed into the namespace together with the endpoint, the
path and the tenant. So another model, temperature or system prompt is a miss, never a stale hit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BadRequest",
    "CacheKey",
    "Endpoint",
    "cache_key",
    "parse_body",
    "tenant_of",
]

Endpoint = Literal["chat", "completions", "responses"]

# Fields that change how an answer is delivered or logged, not what it says.
_TRANSPORT_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier", "safety_identifier"}
    | {"prompt_cache_key", "prompt_cache_retention"}
)
_QUESTION = {"bsc": "question"}  # stands in for the embedded text in the exact partition


class BadRequest(ValueError):
    """A request body the proxy cannot read; answered with an OpenAI-style 400.

    Attributes:
        param: the offending field (OpenAI's ``param``), or None for the body as a whole.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where a request is cached: ``text`` is compared by meaning within ``namespace``."""

    text: str
    namespace: str


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body.

    Raises:
        BadRequest: not UTF-8 JSON, not an object, or holding NaN/Infinity (not JSON).

    Example:
        >>> parse_body(b'{"model": "m"}')
        {'model': 'm'}
    """
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply to parse") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got a JSON {type(body).__name__}")
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def tenant_of(
    headers: Mapping[str, str], secret: bytes, *, shared: bool, namespace_header: str | None
) -> str:
    """The tenant a request belongs to: a keyed hash of its API key (``Authorization: Bearer`` or
    Azure's ``api-key``), so keys are never stored; ``"shared"`` with a shared cache; or the hash of
    the namespace named by ``namespace_header`` when that header is enabled and present.

    Example:
        >>> a = tenant_of({"authorization": "Bearer sk-a"}, b"s", shared=False, namespace_header=None)
        >>> a == tenant_of({"authorization": "Bearer sk-b"}, b"s", shared=False, namespace_header=None)
        False
    """
    if namespace_header is not None:
        named = headers.get(namespace_header.lower())
        if named:
            return "ns-" + _keyed_digest(secret, "namespace", named)
    if shared:
        return "shared"
    credential = headers.get("authorization") or headers.get("api-key") or ""
    return "key-" + _keyed_digest(secret, "key", credential)


def _keyed_digest(secret: bytes, kind: str, value: str) -> str:
    return hmac.new(secret, f"{kind}\0{value}".encode(), hashlib.blake2b).hexdigest()[:32]


def cache_key(
    endpoint: Endpoint, body: dict[str, Any], *, route: str, tenant: str, cache_tool_results: bool = False
) -> CacheKey | str:
    """The `CacheKey` of a request, or the reason (a short str) it bypasses the cache.

    Args:
        endpoint: which API the body is for.
        body: the parsed JSON body.
        route: the upstream path and query (Azure puts the deployment there); part of the namespace.
        tenant: from `tenant_of`.
        cache_tool_results: also cache conversations that contain tool results.

    Raises:
        BadRequest: a field the key needs has the wrong type.

    Example:
        >>> body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
        >>> cache_key("chat", body, route="/chat/completions", tenant="t").text
        'Hi'
        >>> cache_key("chat", {**body, "n": 2}, route="/chat/completions", tenant="t")
        'n>1'
    """
    _check_common(body)
    if endpoint == "chat":
        found = _chat(body, cache_tool_results)
    elif endpoint == "completions":
        found = _completions(body)
    else:
        found = _responses(body, cache_tool_results)
    if isinstance(found, str):
        return found
    text, partition_body = found
    if not text.strip():
        return "no user text"
    exact = {k: v for k, v in partition_body.items() if k not in _TRANSPORT_FIELDS}
    partition = json.dumps(
        [endpoint, route, exact], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    # surrogatepass: JSON may carry a lone surrogate (a string cut through an emoji), as the cache does.
    digest = hashlib.blake2b(partition.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return CacheKey(text, f"serve:{tenant}:{digest}")


def _check_common(body: dict[str, Any]) -> None:
    _expect(body, "model", str, required=False)
    _expect(body, "stream", bool, required=False)
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest("stream_options must be an object", "stream_options")
        _expect(options, "include_usage", bool, required=False, param="stream_options.include_usage")
    for name in ("n", "best_of"):
        count = body.get(name)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise BadRequest(f"{name} must be an integer, got {_json_type(count)}", name)


def _chat(body: dict[str, Any], cache_tool_results: bool) -> tuple[str, dict[str, Any]] | str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest(f"messages must be an array of messages, got {_json_type(messages)}", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string role", f"messages[{i}]")
    if (body.get("n") or 1) > 1:
        return "n>1"
    if body.get("logprobs") or body.get("top_logprobs") is not None:
        return "logprobs"
    if body.get("functions") is not None or body.get("function_call") is not None:
        return "functions"  # the legacy function calling: its answers are not recorded or replayed
    if not cache_tool_results and any(m["role"] in ("tool", "function") for m in messages):
        return "tool results"
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), None)
    if last is None:
        return "no user text"
    text, rest = _split_content(messages[last].get("content"), f"messages[{last}].content", "text")
    keyed = list(messages)
    keyed[last] = {**messages[last], "content": [_QUESTION, rest]}
    return text, {**body, "messages": keyed}


def _completions(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        return "prompt is not one string"  # batches and token arrays are passed through
    if not isinstance(prompt, str):
        raise BadRequest(f"prompt must be a string or an array, got {_json_type(prompt)}", "prompt")
    if (body.get("n") or 1) > 1 or (body.get("best_of") or 1) > 1:
        return "n>1"
    if body.get("logprobs") is not None:
        return "logprobs"
    if body.get("echo"):
        return "echo"  # the answer repeats the prompt, so a paraphrase must not get it
    return prompt, {**body, "prompt": _QUESTION}


# Responses API input items that carry a tool's output back to the model.
_TOOL_OUTPUT_SUFFIX = "_output"


def _responses(body: dict[str, Any], cache_tool_results: bool) -> tuple[str, dict[str, Any]] | str:
    _expect(body, "instructions", str, required=False)
    if body.get("conversation") is not None:
        return "conversation"  # server-side state that grows: the same request can mean something new
    if body.get("background"):
        return "background"
    include = body.get("include") or []
    if body.get("top_logprobs") or (isinstance(include, list) and "message.output_text.logprobs" in include):
        return "logprobs"
    data = body.get("input")
    if data is None:
        return "no input"  # e.g. a stored prompt template with its variables: nothing to embed
    if isinstance(data, str):
        return data, {**body, "input": _QUESTION}
    if not isinstance(data, list):
        raise BadRequest(f"input must be a string or an array of items, got {_json_type(data)}", "input")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise BadRequest(f"input[{i}] must be an object, got {_json_type(item)}", f"input[{i}]")
        kind = item.get("type")
        if not cache_tool_results and isinstance(kind, str) and kind.endswith(_TOOL_OUTPUT_SUFFIX):
            return "tool results"
    last = next((i for i in range(len(data) - 1, -1, -1) if data[i].get("role") == "user"), None)
    if last is None:
        return "no user text"
    text, rest = _split_content(data[last].get("content"), f"input[{last}].content", "input_text")
    keyed = list(data)
    keyed[last] = {**data[last], "content": [_QUESTION, rest]}
    return text, {**body, "input": keyed}


def _split_content(content: Any, param: str, text_type: str) -> tuple[str, Any]:
    """(text, the other parts) of a message's content: a string or an array of parts."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise BadRequest(f"{param} must be a string or an array of parts, got {_json_type(content)}", param)
    texts: list[str] = []
    rest: list[Any] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise BadRequest(f"{param}[{j}] must be an object, got {_json_type(part)}", f"{param}[{j}]")
        if part.get("type") == text_type:
            if not isinstance(part.get("text"), str):
                raise BadRequest(f"{param}[{j}].text must be a string", f"{param}[{j}].text")
            texts.append(part["text"])
            rest.append({k: v for k, v in part.items() if k != "text"})
        else:
            rest.append(part)
    return "\n".join(texts), rest


def _expect(obj: dict[str, Any], name: str, kind: type, *, required: bool, param: str | None = None) -> None:
    value = obj.get(name)
    if value is None and not required:
        return
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        expected = {str: "a string", bool: "a boolean"}.get(kind, kind.__name__)
        raise BadRequest(f"{param or name} must be {expected}, got {_json_type(value)}", param or name)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "an array"}.get(
        type(value), "an object"
    )

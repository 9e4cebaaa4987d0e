"""Request logs for replay: one JSON object per line, read strictly, written back in the same format.

The format (JSON Lines, UTF-8, one request per line; blank lines are skipped)::

    {"prompt": "What is the capital of France?", "model": "gpt-4o", "timestamp": 1733050000.5,
     "label": "capital-france", "output_tokens": 120}
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Which city is the capital of France?"}],
     "model": "gpt-4o", "timestamp": "2024-12-01T10:00:00Z", "label": "capital-france"}

- exactly one of ``prompt`` (a non-empty string) or ``messages`` (OpenAI-style chat messages: objects
  with a string ``role`` and a ``content`` that is a string or a list of ``{"type": "text", "text": ...}``
  parts; the last message must be the user's);
- ``model`` (optional string): requests to different models never share answers;
- ``timestamp`` (optional): seconds since the epoch, or an ISO 8601 string;
- ``label`` (optional string or integer): requests with the same label share an answer. Only labelled
  requests count towards the false-hit rate;
- ``output_tokens`` (optional integer >= 0): the answer's length, for the cost model;
- ``kind`` (optional string): what the request is (first, exact, paraphrase, near_miss, one_off), for
  reports;
- ``partition`` (optional string): requests in different partitions never share answers (a tenant, or
  the proxy's cache namespace: `read_proxy_log` sets it). Other fields (ids, responses) are ignored.

For chat requests only the last user message is compared by meaning; the model, the earlier messages and
any non-text part of the last one must match exactly (they choose the cache namespace), as the LangChain
adapter does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

__all__ = [
    "LogFormatError",
    "Request",
    "distinct_prompts",
    "iter_log",
    "read_log",
    "read_proxy_log",
    "write_log",
]

_KINDS = ("first", "exact", "paraphrase", "near_miss", "one_off")


class LogFormatError(ValueError):
    """A request log line is not valid: the message names the line and what was expected."""


@dataclass(frozen=True, slots=True)
class Request:
    """One logged or generated LLM request.

    Attributes:
        prompt: the text compared by meaning (the prompt, or the last user message's text).
        context: what must match exactly besides the model: the earlier chat messages (canonical JSON),
            or "" for a bare prompt.
        model: the model asked, or None.
        timestamp: seconds since the epoch, or None.
        label: requests with the same label share an answer; None when unknown.
        output_tokens: the answer's length in tokens, or None (the cost model then estimates it).
        kind: first | exact | paraphrase | near_miss | one_off for generated requests, or None.
        partition: what must also match exactly (a tenant, or the proxy's cache namespace), or "".

    Example:
        >>> Request("What is 2 + 2?", label="sum-2-2").namespace
        'default'
    """

    prompt: str
    context: str = ""
    model: str | None = None
    timestamp: float | None = None
    label: str | None = None
    output_tokens: int | None = None
    kind: str | None = None
    partition: str = ""

    @property
    def namespace(self) -> str:
        """The cache namespace: "default" for a bare prompt to no named model, otherwise a digest of the
        model and the context, so only requests that agree on both can share answers."""
        if not self.context and self.model is None and not self.partition:
            return "default"
        parts = [self.model, self.context, self.partition] if self.partition else [self.model, self.context]
        key = json.dumps(parts, ensure_ascii=False)
        return "ctx-" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def iter_log(path: str | os.PathLike[str]) -> Iterator[Request]:
    """The requests of a JSONL log, one at a time (see the module docstring for the format).

    Raises:
        FileNotFoundError: no file at ``path``.
        LogFormatError: a line is not valid JSON, not an object, or breaks the format; the message names
            the line number.

    Example:
        >>> next(iter_log("requests.jsonl")).prompt  # doctest: +SKIP
        'What is the capital of France?'
    """
    for number, row in _json_lines(path):
        try:
            yield _parse(row)
        except LogFormatError as exc:
            raise LogFormatError(f"line {number}: {exc}") from None


def _json_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, decoded value)`` of each non-blank line of a JSONL file.

    Raises:
        LogFormatError: a line that is not valid JSON (naming the line and column).
    """
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise LogFormatError(
                    f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None


def read_log(path: str | os.PathLike[str]) -> list[Request]:
    """All requests of a JSONL log; errors as for `iter_log`, raised before anything is returned.

    Example:
        >>> len(read_log("requests.jsonl"))  # doctest: +SKIP
        1000
    """
    requests = list(iter_log(path))
    if not requests:
        raise LogFormatError(f"{os.fspath(path)!r} holds no requests")
    return requests


def read_proxy_log(path: str | os.PathLike[str]) -> list[Request]:
    """The cacheable requests of a ``bsc serve`` request log (`bsc.serve.request_log`), as a replayable
    stream: each hit or miss becomes a `Request` of the text the proxy compared by meaning, in the
    proxy's cache partition (its tenant, endpoint, model, parameters and earlier turns), with its
    timestamp, model and (for hits) output tokens. Bypassed requests are left out: the cache never saw
    them. Replayed through a cache with the proxy's settings, every request gets the proxy's decision.

    Raises:
        FileNotFoundError: no file at ``path``.
        LogFormatError: a line is not a proxy log line (the message names it), or no line is cacheable.

    Example:
        >>> stream = read_proxy_log("proxy-requests.jsonl")  # doctest: +SKIP
        >>> write_log(stream, "requests.jsonl")  # doctest: +SKIP
        120
    """
    requests: list[Request] = []
    for number, row in _json_lines(path):
        try:
            if not isinstance(row, dict) or row.get("cache") not in ("hit", "miss", "bypass"):
                raise LogFormatError("expected a bsc serve log line with 'cache': hit, miss or bypass")
            if row["cache"] == "bypass":
                continue
            text, partition = row.get("text"), row.get("partition")
            if not isinstance(text, str) or not text.strip() or not isinstance(partition, str):
                raise LogFormatError("a hit or miss needs a non-empty string 'text' and a 'partition'")
            parsed = _parse(
                {k: row[k] for k in ("model", "timestamp", "output_tokens") if k in row} | {"prompt": text}
            )
        except LogFormatError as exc:
            raise LogFormatError(f"line {number}: {exc}") from None
        requests.append(replace(parsed, partition=partition))
    if not requests:
        raise LogFormatError(f"{os.fspath(path)!r} holds no cached or cacheable requests")
    return requests


def write_log(requests: Iterable[Request], path: str | os.PathLike[str]) -> int:
    """Writes requests as a JSONL log that `read_log` reads back equal; returns how many were written.

    Chat requests are written with their messages; bare prompts with ``prompt``.

    Example:
        >>> write_log([Request("hello", label="greeting")], "requests.jsonl")  # doctest: +SKIP
        1
    """
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for request in requests:
            f.write(json.dumps(_row(request), ensure_ascii=False) + "\n")
            n += 1
    return n


def _row(request: Request) -> dict[str, Any]:
    row: dict[str, Any]
    if request.context:
        earlier = json.loads(request.context)
        row = {"messages": [*earlier["messages"], {"role": "user", "content": _last_content(request)}]}
    else:
        row = {"prompt": request.prompt}
    for name in ("model", "timestamp", "label", "output_tokens", "kind", "partition"):
        value = getattr(request, name)
        if value is not None and value != "":
            row[name] = value
    return row


def _last_content(request: Request) -> str | list[dict[str, Any]]:
    extra = json.loads(request.context).get("parts")
    return [{"type": "text", "text": request.prompt}, *extra] if extra else request.prompt


def _parse(row: object) -> Request:
    if not isinstance(row, dict):
        raise LogFormatError(f"expected a JSON object, got {type(row).__name__}")
    has_prompt, has_messages = "prompt" in row, "messages" in row
    if has_prompt == has_messages:
        raise LogFormatError("expected exactly one of 'prompt' (a string) or 'messages' (a list)")
    if has_prompt:
        prompt = row["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise LogFormatError(f"'prompt' must be a non-empty string, got {prompt!r}")
        context = ""
    else:
        prompt, context = _parse_messages(row["messages"])
    model = row.get("model")
    if model is not None and not isinstance(model, str):
        raise LogFormatError(f"'model' must be a string, got {type(model).__name__}")
    label = row.get("label")
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise LogFormatError(f"'label' must be a string or an integer, got {type(label).__name__}")
        label = str(label)
    tokens = row.get("output_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
        raise LogFormatError(f"'output_tokens' must be an integer >= 0, got {tokens!r}")
    kind = row.get("kind")
    if kind is not None and kind not in _KINDS:
        raise LogFormatError(f"'kind' must be one of {', '.join(_KINDS)}, got {kind!r}")
    partition = row.get("partition", "")
    if not isinstance(partition, str):
        raise LogFormatError(f"'partition' must be a string, got {type(partition).__name__}")
    return Request(prompt, context, model, _timestamp(row.get("timestamp")), label, tokens, kind, partition)


def _parse_messages(messages: object) -> tuple[str, str]:
    if not isinstance(messages, list) or not messages:
        raise LogFormatError("'messages' must be a non-empty list of {'role': ..., 'content': ...} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise LogFormatError(f"messages[{i}] must be an object with a string 'role' and a 'content'")
        if not isinstance(m["content"], str | list):
            raise LogFormatError(f"messages[{i}].content must be a string or a list of parts")
    last = messages[-1]
    if last["role"] != "user":
        raise LogFormatError(f"the last message must be the user's, got role {last['role']!r}")
    content = last["content"]
    others: list[dict[str, Any]] = []
    if isinstance(content, str):
        text = content
    else:
        texts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise LogFormatError(f"messages[-1].content[{j}] must be an object with a string 'type'")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise LogFormatError(f"messages[-1].content[{j}].text must be a string")
                texts.append(part["text"])
            else:
                others.append(part)  # images, files: compared exactly, through the context
        text = "\n".join(texts)
    if not text.strip():
        raise LogFormatError("the last user message has no text to compare")
    context: dict[str, Any] = {"messages": messages[:-1]}
    if others:
        context["parts"] = others
    return text, json.dumps(context, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _timestamp(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise LogFormatError(f"'timestamp' must be finite, got {value!r}")
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise LogFormatError(f"'timestamp' must be seconds since the epoch or an ISO 8601 string, got {value!r}")


def distinct_prompts(requests: Sequence[Request]) -> int:
    """How many different (namespace, prompt) pairs the requests hold: what capacities are relative to.

    Example:
        >>> distinct_prompts([Request("a"), Request("a"), Request("b")])
        2
    """
    return len({(r.namespace, r.prompt) for r in requests})

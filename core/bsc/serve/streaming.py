"""Server-sent events: reading upstream streams event by event while recording the answer, and
replaying a cached answer as a stream.

A miss is forwarded to the client one event at a time as upstream sends it (nothing waits for the whole
answer); a recorder assembles the same answer a non-streaming call would have returned, and says whether
the stream ended normally (every choice has a ``finish_reason`` and ``[DONE]`` arrived, or the Responses
API sent ``response.completed``). Only then is it stored. A hit is replayed from that stored body, in
pieces, ending in ``[DONE]``, so a streamed miss can answer a non-streaming call and the reverse.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bsc.serve.keys import Endpoint

__all__ = ["SSEDecoder", "SSEEvent", "StreamRecorder", "recorder_for", "replay"]

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_WORDS = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: its bytes as received (blank line included), ``event:`` name and data."""

    raw: bytes
    event: str | None
    data: str | None


class SSEDecoder:
    """Splits a byte stream into `SSEEvent` s; bytes of an unfinished event wait for the rest.

    Example:
        >>> d = SSEDecoder()
        >>> d.feed(b'data: {"a": 1}\\n\\nda')[0].data
        '{"a": 1}'
        >>> d.feed(b"ta: [DONE]\\n\\n")[0].data
        '[DONE]'
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by ``chunk``."""
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            end = _EVENT_END.search(self._buffer)
            if end is None:
                return events
            raw, self._buffer = self._buffer[: end.end()], self._buffer[end.end() :]
            events.append(_parse_event(raw))

    @property
    def pending(self) -> bytes:
        """Bytes received after the last complete event (an interrupted stream leaves some)."""
        return self._buffer


def _parse_event(raw: bytes) -> SSEEvent:
    name: str | None = None
    data: list[str] = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    return SSEEvent(raw, name, "\n".join(data) if data else None)


# ---------------------------------------------------------------- recording a miss
class StreamRecorder(ABC):
    """Assembles a streamed answer into the body the non-streaming call returns.

    `add` takes every event; `finished` turns true at the stream's last event (``[DONE]``, or
    ``response.completed``); `result` is then the assembled body if the stream ended normally, else None.
    `is_usage_only` tells the proxy which chunk it asked for itself (``include_usage``) and may drop.
    """

    @abstractmethod
    def add(self, data: Any) -> None:
        """Records one decoded ``data:`` payload (a JSON value, or the string ``"[DONE]"``)."""

    @property
    @abstractmethod
    def finished(self) -> bool:
        """Whether the stream's closing event has been seen."""

    @abstractmethod
    def result(self) -> dict[str, Any] | None:
        """The assembled body, or None if the stream did not finish normally."""

    @staticmethod
    def is_usage_only(data: Any) -> bool:
        """Whether ``data`` is the final usage chunk of a chat/completions stream."""
        return isinstance(data, dict) and data.get("choices") == [] and data.get("usage") is not None


@dataclass
class _Choice:
    index: int
    role: str = "assistant"
    parts: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    saw_content: bool = False


class _ChoicesRecorder(StreamRecorder):
    """Recorder for ``chat.completion.chunk`` and ``text_completion`` streams."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._chat = endpoint == "chat"
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None
        self._done = self._failed = False

    def add(self, data: Any) -> None:
        if data == "[DONE]":
            self._done = True
            return
        if not isinstance(data, dict) or "error" in data:
            self._failed = True
            return
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if data.get(key) is not None:
                self._head[key] = data[key]
        if data.get("usage") is not None:
            self._usage = data["usage"]
        for raw in data.get("choices") or []:
            index = raw.get("index", 0)
            choice = self._choices.setdefault(index, _Choice(index))
            if self._chat:
                self._add_delta(choice, raw.get("delta") or {})
            elif isinstance(raw.get("text"), str):
                choice.parts.append(raw["text"])
            if raw.get("finish_reason") is not None:
                choice.finish_reason = raw["finish_reason"]

    @property
    def finished(self) -> bool:
        return self._done

    @staticmethod
    def _add_delta(choice: _Choice, delta: dict[str, Any]) -> None:
        if isinstance(delta.get("role"), str):
            choice.role = delta["role"]
        if isinstance(delta.get("content"), str):
            choice.parts.append(delta["content"])
            choice.saw_content = True
        if isinstance(delta.get("refusal"), str):
            choice.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            slot = choice.tool_calls.setdefault(
                call.get("index", 0),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if call.get("id"):
                slot["id"] = call["id"]
            if call.get("type"):
                slot["type"] = call["type"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""

    def result(self) -> dict[str, Any] | None:
        choices = [self._choices[i] for i in sorted(self._choices)]
        if self._failed or not self._done or not choices or any(c.finish_reason is None for c in choices):
            return None
        body: dict[str, Any] = {
            "id": self._head.get("id"),
            "object": "chat.completion" if self._chat else "text_completion",
            "created": self._head.get("created"),
            "model": self._head.get("model"),
            "choices": [self._choice_body(c) for c in choices],
        }
        for key in ("system_fingerprint", "service_tier"):
            if key in self._head:
                body[key] = self._head[key]
        if self._usage is not None:
            body["usage"] = self._usage
        return body

    def _choice_body(self, c: _Choice) -> dict[str, Any]:
        if not self._chat:
            return {
                "index": c.index,
                "text": "".join(c.parts),
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
        message: dict[str, Any] = {
            "role": c.role,
            "content": "".join(c.parts) if c.saw_content or not c.tool_calls else None,
            "refusal": "".join(c.refusal) if c.refusal else None,
        }
        if c.tool_calls:
            message["tool_calls"] = [c.tool_calls[i] for i in sorted(c.tool_calls)]
        return {"index": c.index, "message": message, "logprobs": None, "finish_reason": c.finish_reason}


_FAILED_EVENTS = frozenset({"error", "response.failed", "response.incomplete"})


class _ResponsesRecorder(StreamRecorder):
    """Recorder for Responses API streams: ``response.completed`` carries the whole final response."""

    def __init__(self) -> None:
        self._final: dict[str, Any] | None = None
        self._failed = False

    def add(self, data: Any) -> None:
        if not isinstance(data, dict):
            return  # "[DONE]", which the Responses API may or may not send
        kind = data.get("type")
        if kind == "response.completed" and isinstance(data.get("response"), dict):
            self._final = data["response"]
        elif kind in _FAILED_EVENTS or ("error" in data and kind is None):
            self._failed = True

    @property
    def finished(self) -> bool:
        return self._final is not None

    def result(self) -> dict[str, Any] | None:
        if self._failed or self._final is None or self._final.get("status") not in (None, "completed"):
            return None
        return self._final

    @staticmethod
    def is_usage_only(data: Any) -> bool:
        return False


def recorder_for(endpoint: Endpoint) -> StreamRecorder:
    """A fresh recorder for a stream from ``endpoint``."""
    return _ResponsesRecorder() if endpoint == "responses" else _ChoicesRecorder(endpoint)


# ---------------------------------------------------------------- replaying a hit
def pieces(text: str, size: int) -> list[str]:
    """``text`` cut at word boundaries into pieces of about ``size`` characters (a long word stays whole).

    Example:
        >>> pieces("The capital of France is Paris.", 10)
        ['The ', 'capital of ', 'France is ', 'Paris.']
    """
    out: list[str] = []
    current = ""
    for word in _WORDS.findall(text):
        if current and len(current) + len(word.rstrip()) > size:
            out.append(current)
            current = ""
        current += word
    if current:
        out.append(current)
    return out


def _sse(payload: Any, event: str | None = None) -> bytes:
    data = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    )
    head = f"event: {event}\n" if event else ""
    # backslashreplace: a lone surrogate the answer carried (valid JSON) goes out as its JSON escape.
    return f"{head}data: {data}\n\n".encode("utf-8", "backslashreplace")


def replay(endpoint: Endpoint, body: dict[str, Any], *, include_usage: bool, size: int) -> Iterator[bytes]:
    """The SSE stream of a cached non-streaming ``body``, ending in ``[DONE]``.

    Args:
        endpoint: which API's events to produce.
        body: the stored answer (as the non-streaming call returns it).
        include_usage: send the final usage chunk (the client's ``stream_options.include_usage``).
        size: about how many characters each text piece carries.

    Example:
        >>> body = {"id": "c1", "model": "m", "choices": [
        ...     {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}]}
        >>> list(replay("chat", body, include_usage=False, size=8))[-1].strip()
        b'data: [DONE]'
    """
    if endpoint == "responses":
        yield from _replay_responses(body, size)
    else:
        yield from _replay_choices(endpoint, body, include_usage, size)
    yield _sse("[DONE]")


def _replay_choices(
    endpoint: Endpoint, body: dict[str, Any], include_usage: bool, size: int
) -> Iterator[bytes]:
    chat = endpoint == "chat"
    head: dict[str, Any] = {
        "id": body.get("id"),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": body.get("created"),
        "model": body.get("model"),
    }
    for key in ("system_fingerprint", "service_tier"):
        if key in body:
            head[key] = body[key]
    if include_usage:
        head["usage"] = None

    def chunk(index: int, finish: str | None = None, **content: Any) -> bytes:
        choice: dict[str, Any] = {"index": index, **content, "logprobs": None, "finish_reason": finish}
        return _sse({**head, "choices": [choice]})

    for choice in body.get("choices") or []:
        index = choice.get("index", 0)
        if not chat:
            for piece in pieces(choice.get("text") or "", size):
                yield chunk(index, text=piece)
            yield chunk(index, choice.get("finish_reason"), text="")
            continue
        message = choice.get("message") or {}
        # OpenAI opens with content "" for a text answer and null for a tool-call-only one.
        opening = "" if isinstance(message.get("content"), str) else None
        yield chunk(index, delta={"role": message.get("role", "assistant"), "content": opening})
        for piece in pieces(message.get("content") or "", size):
            yield chunk(index, delta={"content": piece})
        if message.get("refusal"):
            yield chunk(index, delta={"refusal": message["refusal"]})
        for k, call in enumerate(message.get("tool_calls") or []):
            yield chunk(index, delta={"tool_calls": [{"index": k, **call}]})
        yield chunk(index, choice.get("finish_reason"), delta={})
    if include_usage:
        yield _sse({**head, "choices": [], "usage": body.get("usage")})


def _replay_responses(final: dict[str, Any], size: int) -> Iterator[bytes]:
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        payload = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return _sse(payload, kind)

    started = {**final, "status": "in_progress", "output": [], "usage": None}
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    for oi, item in enumerate(final.get("output") or []):
        item_id = item.get("id")
        if item.get("type") == "message":
            yield event(
                "response.output_item.added",
                output_index=oi,
                item={**item, "status": "in_progress", "content": []},
            )
            for ci, part in enumerate(item.get("content") or []):
                where = {"item_id": item_id, "output_index": oi, "content_index": ci}
                if part.get("type") != "output_text":
                    yield event("response.content_part.added", **where, part=part)
                    yield event("response.content_part.done", **where, part=part)
                    continue
                text = part.get("text") or ""
                empty = {**part, "text": "", "annotations": []}
                yield event("response.content_part.added", **where, part=empty)
                for piece in pieces(text, size):
                    yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
                yield event("response.output_text.done", **where, text=text, logprobs=[])
                yield event("response.content_part.done", **where, part=part)
        else:
            yield event("response.output_item.added", output_index=oi, item={**item, "status": "in_progress"})
            if item.get("type") == "function_call":
                where = {"item_id": item_id, "output_index": oi}
                arguments = item.get("arguments") or ""
                yield event("response.function_call_arguments.delta", **where, delta=arguments)
                yield event("response.function_call_arguments.done", **where, arguments=arguments)
        yield event("response.output_item.done", output_index=oi, item=item)
    yield event("response.completed", response=final)

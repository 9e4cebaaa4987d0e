"""A fake OpenAI-compatible upstream and a way to run ASGI apps on a free 127.0.0.1 port.

`FakeUpstream` stands in for the paid LLM in tests and benchmarks of `bsc serve`, and for trying the
proxy offline. It answers ``/chat/completions``, ``/completions`` and ``/responses`` (JSON or SSE),
``/embeddings`` and ``/models``; it counts calls and can be told to fail, stall or drop a stream midway.
Its answers name the question and the caller's API key, so a test can tell whose answer it got.

Example:
    >>> fake = FakeUpstream()
    >>> with running(fake.app()) as url:  # doctest: +SKIP
    ...     print(url)
    http://127.0.0.1:54321
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["FakeUpstream", "running"]


@dataclass
class FakeUpstream:
    """A deterministic OpenAI-compatible API.

    Attributes:
        latency: seconds to wait before answering (the model's time to first byte).
        calls: requests received, by endpoint (``"chat"``, ``"completions"``, ``"responses"``, ...).
        fail_with: (status, body) answers to give to the next requests instead of a completion.
        stall: seconds to wait before answering (headers) once, for the next request.
        stall_midstream: seconds to wait halfway through the next stream.
        drop_midstream: cut the next stream's connection halfway through.
        piece_words: words per streamed piece.
        gate: if set, the next stream waits halfway until the event is set (up to 30 s), so a test can
            check that the first half reached the client while upstream was still streaming.
        gate_timed_out: whether the last gated stream gave up waiting.
        keepalive: precede every event of the streams with an SSE comment, the keep-alive some
            providers send while the model works.
        odd_event: an event to send halfway through the next stream (e.g. a chunk of a shape the
            proxy does not know).
    """

    latency: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    fail_with: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    stall: float = 0.0
    stall_midstream: float = 0.0
    drop_midstream: bool = False
    piece_words: int = 2
    gate: threading.Event | None = None
    gate_timed_out: bool = False
    keepalive: bool = False
    odd_event: bytes | None = None

    def answer(self, question: str, model: str, key: str) -> str:
        """The answer this upstream gives (the same for the same question, model and key)."""
        return f"[{model}|{key}] The answer to: {question}"

    def app(self) -> Starlette:
        """The ASGI app (routes under ``/v1``)."""
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                # Azure OpenAI's layout: the deployment in the path, the API version in the query.
                Route("/openai/deployments/{deployment}/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    # ---------------------------------------------------------------- common
    async def _begin(self, request: Request, endpoint: str) -> tuple[dict[str, Any], str] | Response:
        self.calls[endpoint] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.stall:
            stall, self.stall = self.stall, 0.0
            await asyncio.sleep(stall)
        if self.fail_with:
            status, body = self.fail_with.pop(0)
            return Response(
                json.dumps(body), status, media_type="application/json", headers={"x-fake": "error"}
            )
        auth = request.headers.get("authorization", "").removeprefix("Bearer ") or request.headers.get(
            "api-key", ""
        )
        return json.loads(await request.body()), auth

    def _stream(self, events: list[bytes]) -> StreamingResponse:
        drop, self.drop_midstream = self.drop_midstream, False
        stall, self.stall_midstream = self.stall_midstream, 0.0
        gate, self.gate = self.gate, None
        odd, self.odd_event = self.odd_event, None

        async def body() -> AsyncIterator[bytes]:
            half = len(events) // 2
            for i, event in enumerate(events):
                if i == half and gate is not None:
                    deadline = time.monotonic() + 30
                    while not gate.is_set() and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
                    self.gate_timed_out = not gate.is_set()
                if i == half and drop:
                    raise ConnectionResetError(
                        "fake upstream drops the stream"
                    )  # uvicorn cuts the connection
                if i == half and stall:
                    await asyncio.sleep(stall)
                if i == half and odd is not None:
                    yield odd
                if self.keepalive:
                    yield b": keep-alive\n\n"
                yield event

        return StreamingResponse(body(), media_type="text/event-stream", headers={"x-fake": "stream"})

    def _pieces(self, text: str) -> list[str]:
        words = text.split(" ")
        n = self.piece_words
        return [
            " ".join(words[i : i + n]) + (" " if i + n < len(words) else "") for i in range(0, len(words), n)
        ]

    @staticmethod
    def _usage(question: str, answer: str) -> dict[str, int]:
        prompt, completion = len(question.split()) + 7, len(answer.split())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    # ---------------------------------------------------------------- chat
    async def _chat(self, request: Request) -> Response:
        begun = await self._begin(request, "chat")
        if isinstance(begun, Response):
            return begun
        body, key = begun
        question = next(_text(m.get("content")) for m in reversed(body["messages"]) if m["role"] == "user")
        system = next(
            (_text(m.get("content")) for m in body["messages"] if m["role"] in ("system", "developer")), ""
        )
        text = self.answer(question, body["model"], key) + (f" (system: {system})" if system else "")
        ident = f"chatcmpl-fake{sum(self.calls.values())}"
        created = int(time.time())
        usage = self._usage(question, text)
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, "refusal": None}
            return _json(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body["model"],
        }
        if include_usage:
            head["usage"] = None
        deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in self._pieces(text)]
        events = [
            _sse({**head, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}]})
            for d in deltas
        ]
        events.append(
            _sse({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
        )
        if include_usage:
            events.append(_sse({**head, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        return self._stream(events)

    # ---------------------------------------------------------------- completions
    async def _completions(self, request: Request) -> Response:
        begun = await self._begin(request, "completions")
        if isinstance(begun, Response):
            return begun
        body, key = begun
        prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
        text = self.answer(prompt, body["model"], key)
        head = {
            "id": f"cmpl-fake{sum(self.calls.values())}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
        }
        usage = self._usage(prompt, text)
        if not body.get("stream"):
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
            return _json({**head, "choices": [choice], "usage": usage})
        events = [
            _sse({**head, "choices": [{"index": 0, "text": p, "logprobs": None, "finish_reason": None}]})
            for p in self._pieces(text)
        ]
        events.append(
            _sse({**head, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]})
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(_sse({**head, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        return self._stream(events)

    # ---------------------------------------------------------------- responses
    async def _responses(self, request: Request) -> Response:
        begun = await self._begin(request, "responses")
        if isinstance(begun, Response):
            return begun
        body, key = begun
        data = body.get("input")
        if data is None:  # a stored prompt template: its id and variables stand in for the question
            data = json.dumps(body.get("prompt"), sort_keys=True)
        question = (
            data
            if isinstance(data, str)
            else next(_text(item.get("content")) for item in reversed(data) if item.get("role") == "user")
        )
        text = self.answer(question, body["model"], key)
        if body.get("instructions"):
            text += f" (instructions: {body['instructions']})"
        n = sum(self.calls.values())
        usage = self._usage(question, text)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        message = {
            "id": f"msg_fake{n}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
        final = {
            "id": f"resp_fake{n}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "error": None,  # as the real API: present, null when the response succeeded
            "incomplete_details": None,
            "model": body["model"],
            "output": [message],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "instructions": body.get("instructions"),
            "usage": {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
                "total_tokens": usage["total_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
        if not body.get("stream"):
            return _json(final)
        seq = iter(range(1_000_000))
        where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        started = {**final, "status": "in_progress", "output": [], "usage": None}
        events = [
            _event("response.created", next(seq), response=started),
            _event("response.in_progress", next(seq), response=started),
            _event(
                "response.output_item.added",
                next(seq),
                output_index=0,
                item={**message, "status": "in_progress", "content": []},
            ),
            _event("response.content_part.added", next(seq), **where, part={**part, "text": ""}),
        ]
        events += [
            _event("response.output_text.delta", next(seq), **where, delta=p, logprobs=[])
            for p in self._pieces(text)
        ]
        events += [
            _event("response.output_text.done", next(seq), **where, text=text, logprobs=[]),
            _event("response.content_part.done", next(seq), **where, part=part),
            _event("response.output_item.done", next(seq), output_index=0, item=message),
            _event("response.completed", next(seq), response=final),
        ]
        return self._stream(events)

    # ---------------------------------------------------------------- the rest
    async def _embeddings(self, request: Request) -> Response:
        begun = await self._begin(request, "embeddings")
        if isinstance(begun, Response):
            return begun
        body, _ = begun
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]}
            for i, t in enumerate(texts)
        ]
        return _json(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
            }
        )

    async def _models(self, request: Request) -> Response:
        self.calls["models"] += 1
        return _json(
            {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "bsc"}],
            }
        )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content or [] if p.get("type") in ("text", "input_text"))


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), media_type="application/json", headers={"x-fake": "json"})


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _event(kind: str, sequence: int, **fields: Any) -> bytes:
    payload = json.dumps({"type": kind, "sequence_number": sequence, **fields})
    return f"event: {kind}\ndata: {payload}\n\n".encode()


@contextlib.contextmanager
def running(app: Any, *, timeout: float = 60.0, **uvicorn_options: Any) -> Iterator[str]:
    """Runs ``app`` under uvicorn in a background thread on a free 127.0.0.1 port; yields its base URL
    and stops it (lifespan shutdown included) on exit.

    Raises:
        RuntimeError: the server did not start within ``timeout`` seconds.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {"log_level": "warning", "lifespan": "on", **uvicorn_options}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def main() -> None:
    """``python -m bsc.serve.testing --port 9000 --latency 0.3``: run the fake upstream."""
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible upstream for trying bsc serve.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    uvicorn.run(FakeUpstream(latency=args.latency).app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

"""Keys, bypass rules and SSE handling of `bsc serve`, on request bodies directly (no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("starlette")

from bsc.serve.keys import BadRequest, CacheKey, cache_key, parse_body, tenant_of
from bsc.serve.streaming import SSEDecoder, pieces, recorder_for, replay


def key(endpoint: Any, body: dict[str, Any], **kw: Any) -> CacheKey | str:
    return cache_key(endpoint, body, route="/x", tenant="t", **kw)


def chat(question: str, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": question}], **fields}


def test_only_the_last_user_text_is_embedded_and_transport_fields_do_not_split() -> None:
    a = key("chat", chat("Hi there", stream=True, stream_options={"include_usage": True}, user="u1"))
    b = key("chat", chat("Hello there", stream=False, user="u2"))
    assert isinstance(a, CacheKey) and isinstance(b, CacheKey)
    assert (a.text, b.text) == ("Hi there", "Hello there")
    assert a.namespace == b.namespace


def test_text_parts_are_embedded_and_image_parts_must_match_exactly() -> None:
    def with_image(url: str) -> dict[str, Any]:
        parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
        return {"model": "m", "messages": [{"role": "user", "content": parts}]}

    a, b = key("chat", with_image("http://a/1.png")), key("chat", with_image("http://a/2.png"))
    assert isinstance(a, CacheKey) and isinstance(b, CacheKey)
    assert a.text == b.text == "What is this?"
    assert a.namespace != b.namespace


@pytest.mark.parametrize(
    ("endpoint", "body", "reason"),
    [
        ("chat", chat("hi", n=3), "n>1"),
        ("chat", chat("hi", top_logprobs=2), "logprobs"),
        ("chat", {"model": "m", "messages": [{"role": "system", "content": "x"}]}, "no user text"),
        ("chat", chat("   "), "no user text"),
        ("completions", {"model": "m", "prompt": "hi", "echo": True}, "echo"),
        ("completions", {"model": "m", "prompt": ["a", "b"]}, "prompt is not one string"),
        ("completions", {"model": "m", "prompt": "hi", "logprobs": 2}, "logprobs"),
        ("responses", {"model": "m", "input": "hi", "conversation": "conv_1"}, "conversation"),
        ("responses", {"model": "m", "input": "hi", "background": True}, "background"),
        (
            "responses",
            {"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "42"}]},
            "tool results",
        ),
    ],
)
def test_requests_that_must_not_be_cached_name_their_reason(
    endpoint: Any, body: dict[str, Any], reason: str
) -> None:
    assert key(endpoint, body) == reason


def test_responses_instructions_and_previous_response_split_the_namespace() -> None:
    base = {"model": "m", "input": "Hi"}
    namespaces = {
        key("responses", {**base, **extra}).namespace  # type: ignore[union-attr]
        for extra in ({}, {"instructions": "Be brief."}, {"previous_response_id": "resp_1"})
    }
    assert len(namespaces) == 3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "not valid JSON"),
        (b'"text"', "must be a JSON object"),
        (b'{"a": Infinity}', "not valid JSON"),
        (b"\xff", "not valid JSON"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_bad_request(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_body(raw)


def test_tenants_depend_on_the_key_and_the_secret_and_never_contain_the_key() -> None:
    def tenant(headers: dict[str, str], secret: bytes = b"s1", **kw: Any) -> str:
        return tenant_of(headers, secret, shared=kw.get("shared", False), namespace_header=kw.get("header"))

    alice = tenant({"authorization": "Bearer sk-alice"})
    assert "sk-alice" not in alice
    assert alice != tenant({"authorization": "Bearer sk-bob"})
    assert alice != tenant({"authorization": "Bearer sk-alice"}, b"s2")
    assert alice == tenant({"authorization": "Bearer sk-alice"})
    assert tenant({"api-key": "azure-key"}) != tenant({})
    assert tenant({"authorization": "Bearer a"}, shared=True) == tenant({}, shared=True)
    named = tenant({"authorization": "Bearer a", "x-team": "blue"}, header="x-team")
    assert named == tenant({"authorization": "Bearer b", "x-team": "blue"}, header="x-team")


def test_the_sse_decoder_joins_events_split_across_chunks() -> None:
    decoder = SSEDecoder()
    stream = b'event: a\ndata: {"x": 1}\n\ndata: [DONE]\r\n\r\n'
    events = [e for i in range(len(stream)) for e in decoder.feed(stream[i : i + 1])]
    assert [(e.event, e.data) for e in events] == [("a", '{"x": 1}'), (None, "[DONE]")]
    assert b"".join(e.raw for e in events) == stream


def test_pieces_cover_the_text_exactly() -> None:
    text = "Le  mot\tanticonstitutionnellement est long. \n Fin"
    assert "".join(pieces(text, 8)) == text
    assert len(pieces(text, 8)) > 3
    assert pieces("", 8) == []


def test_a_replayed_chat_stream_records_back_into_the_same_body() -> None:
    body = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{
            "index": 0, "logprobs": None, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ]},
        }],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }  # fmt: skip
    recorder = recorder_for("chat")
    for event in SSEDecoder().feed(b"".join(replay("chat", body, include_usage=True, size=4))):
        recorder.add(event.data if event.data == "[DONE]" else json.loads(event.data or "null"))
    assert recorder.finished
    assert recorder.result() == body


def test_a_chat_stream_without_done_or_finish_reason_is_not_complete() -> None:
    recorder = recorder_for("chat")
    recorder.add({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]})
    recorder.add("[DONE]")
    assert recorder.result() is None


@pytest.mark.parametrize("module", ["keys", "streaming", "config", "metrics"])
def test_the_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"bsc.serve.{module}"))
    assert result.attempted > 0 and result.failed == 0

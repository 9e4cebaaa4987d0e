"""`bsc serve` end to end: the real `openai` client -> the proxy (uvicorn on 127.0.0.1) -> a fake upstream.

Only the paid LLM is faked (`bsc.serve.testing.FakeUpstream`); the proxy, uvicorn, httpx, the MiniLM
embedder and the OpenAI client are the real ones. The fake's answers name the question, the model and
the caller's key, so each test can tell whose answer came back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
from bsc import SemanticCache  # noqa: E402
from bsc.serve import ServeConfig, create_app  # noqa: E402
from bsc.serve.testing import FakeUpstream, running  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

FRANCE = "What is the capital of France?"
FRANCE_PARAPHRASE = "Which city is the capital of France?"
BREAD = "How do I bake sourdough bread at home?"


class Proxy:
    """A running proxy and clients for it."""

    def __init__(self, url: str, app: Any) -> None:
        self.url = url
        self.app = app

    @property
    def cache(self) -> SemanticCache:
        cache: SemanticCache = self.app.state.proxy.cache
        return cache

    def client(self, key: str = "sk-alice", **options: Any) -> Any:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **options)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(self.url + "/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture
def start_proxy(upstream_url: str, single_thread_default_embedder: Any) -> Iterator[Any]:
    """``start_proxy(**config)`` runs a proxy in front of the fake upstream; stopped after the test."""
    stack: list[Any] = []

    def start(cache: SemanticCache | None = None, **options: Any) -> Proxy:
        config = ServeConfig(upstream=options.pop("upstream", upstream_url), **options)
        app = create_app(config, cache=cache, embedder=single_thread_default_embedder)
        context = running(app)
        url = context.__enter__()
        stack.append(context)
        return Proxy(url, app)

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def proxy(start_proxy: Any) -> Proxy:
    started: Proxy = start_proxy()
    return started


def chat(
    client: Any, question: str, *, model: str = "gpt-4o-mini", system: str | None = None, **kw: Any
) -> Any:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    return client.chat.completions.with_raw_response.create(model=model, messages=messages, **kw)


def content(raw: Any) -> str:
    text: str = raw.parse().choices[0].message.content
    return text


# ---------------------------------------------------------------- keys: what hits and what misses
def test_a_paraphrase_hits_and_an_unrelated_question_misses(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.client()
    first = chat(client, FRANCE)
    assert first.headers["x-bsc-cache"] == "miss"
    second = chat(client, FRANCE_PARAPHRASE)
    assert second.headers["x-bsc-cache"] == "hit"
    assert 0.8 < float(second.headers["x-bsc-similarity"]) < 1.0
    assert content(second) == content(first) == fake.answer(FRANCE, "gpt-4o-mini", "sk-alice")
    assert fake.calls["chat"] == 1
    other = chat(client, BREAD)
    assert other.headers["x-bsc-cache"] == "miss"
    assert BREAD in content(other)
    assert fake.calls["chat"] == 2


def test_an_exact_repeat_hits_with_similarity_one(proxy: Proxy) -> None:
    client = proxy.client()
    chat(client, FRANCE)
    again = chat(client, FRANCE)
    assert again.headers["x-bsc-cache"] == "hit"
    assert float(again.headers["x-bsc-similarity"]) == 1.0


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"model": "gpt-4o-mini"}, {"model": "gpt-4o"}),
        ({"system": "Answer in French."}, {"system": "Answer in German."}),
        ({"temperature": 0.0}, {"temperature": 1.0}),
        ({"response_format": {"type": "json_object"}}, {}),
    ],
    ids=["model", "system-prompt", "temperature", "response-format"],
)
def test_a_different_model_system_prompt_or_parameter_misses(
    proxy: Proxy, fake: FakeUpstream, first: dict[str, Any], second: dict[str, Any]
) -> None:
    client = proxy.client()
    assert chat(client, FRANCE, **first).headers["x-bsc-cache"] == "miss"
    assert chat(client, FRANCE, **first).headers["x-bsc-cache"] == "hit"
    assert chat(client, FRANCE, **second).headers["x-bsc-cache"] == "miss"
    assert fake.calls["chat"] == 2


def test_the_same_question_after_other_earlier_turns_misses(proxy: Proxy) -> None:
    client = proxy.client()

    def ask(history: list[dict[str, str]]) -> str:
        messages = [*history, {"role": "user", "content": "And what is its population?"}]
        raw = client.chat.completions.with_raw_response.create(model="m", messages=messages)
        return str(raw.headers["x-bsc-cache"])

    paris = [{"role": "user", "content": FRANCE}, {"role": "assistant", "content": "Paris."}]
    rome = [
        {"role": "user", "content": "What is the capital of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
    assert ask(paris) == "miss"
    assert ask(paris) == "hit"
    assert ask(rome) == "miss"


def test_the_guard_refuses_a_near_miss_that_asks_the_opposite(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.client()
    chat(client, "When did World War II end?")
    other = chat(client, "When did World War II start?")
    assert other.headers["x-bsc-cache"] == "miss"
    assert "start?" in content(other)
    assert proxy.metrics()[("bsc_guard_rejections_total", ())] == 1


# ---------------------------------------------------------------- streaming
def stream_text(client: Any, question: str, **kw: Any) -> tuple[str, list[Any], str]:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}], stream=True, **kw
    ) as response:
        chunks = list(response.parse())
        outcome = response.headers["x-bsc-cache"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, outcome


def test_a_streamed_miss_serves_a_streamed_and_a_plain_hit_with_the_same_text(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    client = proxy.client()
    missed, miss_chunks, outcome = stream_text(client, FRANCE)
    assert outcome == "miss"
    assert missed == fake.answer(FRANCE, "gpt-4o-mini", "sk-alice")
    assert all(c.usage is None for c in miss_chunks)  # the usage chunk the proxy asked for is not forwarded
    replayed, chunks, outcome = stream_text(client, FRANCE_PARAPHRASE)
    assert outcome == "hit"
    assert replayed == missed
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3  # in pieces, not one chunk
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    plain = chat(client, FRANCE_PARAPHRASE)
    assert plain.headers["x-bsc-cache"] == "hit"
    assert content(plain) == missed
    assert fake.calls["chat"] == 1


def test_a_stream_with_keep_alive_comments_is_relayed_and_stored(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.keepalive = True  # an SSE comment before every event, as some providers send
    client = proxy.client()
    missed, _, outcome = stream_text(client, FRANCE)
    assert (outcome, missed) == ("miss", fake.answer(FRANCE, "gpt-4o-mini", "sk-alice"))
    replayed, _, outcome = stream_text(client, FRANCE_PARAPHRASE)
    assert (outcome, replayed) == ("hit", missed)
    assert fake.calls["chat"] == 1
    assert proxy.metrics().get(("bsc_stream_interruptions_total", ()), 0) == 0


def test_a_stream_event_the_recorder_cannot_read_is_relayed_and_nothing_is_stored(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    odd = b'data: {"object": "chat.completion.chunk", "choices": [null]}\n\n'
    fake.odd_event = odd
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": FRANCE}], "stream": True}
    headers = {"authorization": "Bearer sk-alice"}
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body, headers=headers) as response:
        received = b"".join(response.iter_bytes())
    assert response.status_code == 200
    assert odd in received and received.rstrip().endswith(b"data: [DONE]")  # relayed whole, to the end
    assert chat(proxy.client(), FRANCE).headers["x-bsc-cache"] == "miss"  # nothing was stored
    assert fake.calls["chat"] == 2


def test_a_streamed_miss_reaches_the_client_while_upstream_is_still_streaming(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    import threading

    fake.gate = gate = threading.Event()  # upstream stops halfway until the client has seen content
    seen: list[str] = []
    with proxy.client().chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": FRANCE}], stream=True
    ) as response:
        for chunk in response.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
                gate.set()
    assert not fake.gate_timed_out  # the gate was opened by content that came through mid-stream
    assert "".join(seen) == fake.answer(FRANCE, "gpt-4o-mini", "sk-alice")


def test_a_replayed_stream_honours_include_usage(proxy: Proxy) -> None:
    client = proxy.client()
    stored = chat(client, FRANCE).parse()
    _, chunks, outcome = stream_text(client, FRANCE, stream_options={"include_usage": True})
    assert outcome == "hit"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == stored.usage.total_tokens
    _, chunks, _ = stream_text(client, FRANCE)
    assert all(c.usage is None for c in chunks)


def test_a_streamed_miss_forwards_usage_when_the_client_asks(proxy: Proxy) -> None:
    _, chunks, outcome = stream_text(proxy.client(), FRANCE, stream_options={"include_usage": True})
    assert outcome == "miss"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_stream_cut_midway_reaches_the_client_as_an_error_and_is_not_stored(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    client = proxy.client()
    fake.drop_midstream = True
    with pytest.raises(openai.APIError, match="interrupted"):
        stream_text(client, FRANCE)
    _, _, outcome = stream_text(client, FRANCE)
    assert outcome == "miss"
    assert fake.calls["chat"] == 2
    assert proxy.metrics()[("bsc_stream_interruptions_total", ())] == 1


def test_a_stream_that_stalls_past_the_read_timeout_is_ended_and_not_stored(
    start_proxy: Any, fake: FakeUpstream
) -> None:
    proxy = start_proxy(read_timeout=0.5)
    client = proxy.client()
    fake.stall_midstream = 3.0
    with pytest.raises(openai.APIError, match="interrupted"):
        stream_text(client, FRANCE)
    assert stream_text(client, FRANCE)[2] == "miss"


def test_a_client_that_stops_reading_a_miss_stores_nothing(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.client()
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": FRANCE}], stream=True
    ) as response:
        next(iter(response.parse()))
    fake.latency = 0.0
    assert chat(client, FRANCE).headers["x-bsc-cache"] in ("miss", "hit")  # never an error
    assert fake.calls["chat"] >= 1


# ---------------------------------------------------------------- completions and responses
def test_completions_hit_on_a_paraphrase_streamed_and_not(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.client()
    first = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt=FRANCE)
    assert first.headers["x-bsc-cache"] == "miss"
    text = first.parse().choices[0].text
    with client.completions.with_streaming_response.create(
        model="gpt-3.5-turbo-instruct", prompt=FRANCE_PARAPHRASE, stream=True
    ) as response:
        chunks = list(response.parse())
        assert response.headers["x-bsc-cache"] == "hit"
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert len(chunks) >= 3
    assert fake.calls["completions"] == 1


def test_a_streamed_completions_miss_is_stored(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.client()
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="m", prompt=BREAD, stream=True)
        if c.choices
    )
    again = client.completions.with_raw_response.create(model="m", prompt=BREAD)
    assert again.headers["x-bsc-cache"] == "hit"
    assert again.parse().choices[0].text == streamed


def test_responses_api_string_and_message_item_input(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.client()
    first = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input=FRANCE, instructions="Be brief."
    )
    assert first.headers["x-bsc-cache"] == "miss"
    items = [{"role": "user", "content": [{"type": "input_text", "text": FRANCE_PARAPHRASE}]}]
    second = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input=items, instructions="Be brief."
    )
    # A string input and an item list are different requests to the API: they must not share answers.
    assert second.headers["x-bsc-cache"] == "miss"
    third = client.responses.with_raw_response.create(
        model="gpt-4o-mini",
        input=[{"role": "user", "content": [{"type": "input_text", "text": FRANCE}]}],
        instructions="Be brief.",
    )
    assert third.headers["x-bsc-cache"] == "hit"
    assert third.parse().output_text == second.parse().output_text
    paraphrase = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input=FRANCE_PARAPHRASE, instructions="Be brief."
    )
    assert paraphrase.headers["x-bsc-cache"] == "hit"
    assert paraphrase.parse().output_text == first.parse().output_text
    other = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input=FRANCE, instructions="Be verbose."
    )
    assert other.headers["x-bsc-cache"] == "miss"
    assert fake.calls["responses"] == 3


def test_responses_api_streams_miss_and_hit_with_the_same_text(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.client()

    def streamed(question: str) -> tuple[str, list[str]]:
        events = list(client.responses.create(model="gpt-4o-mini", input=question, stream=True))
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text == "".join(deltas)
        return "".join(deltas), [e.type for e in events]

    missed, _ = streamed(FRANCE)
    replayed, kinds = streamed(FRANCE_PARAPHRASE)
    assert replayed == missed == fake.answer(FRANCE, "gpt-4o-mini", "sk-alice")
    assert kinds[0] == "response.created" and kinds.count("response.output_text.delta") >= 3
    with client.responses.stream(model="gpt-4o-mini", input=FRANCE) as stream:  # the SDK's event accumulator
        final = stream.get_final_response()
    assert final.output_text == missed
    plain = client.responses.with_raw_response.create(model="gpt-4o-mini", input=FRANCE_PARAPHRASE)
    assert plain.headers["x-bsc-cache"] == "hit"
    assert plain.parse().output_text == missed
    assert fake.calls["responses"] == 1


def test_a_responses_request_from_a_stored_prompt_without_input_is_forwarded(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    # `input` is optional: a stored prompt and its variables hold the question, so there is nothing to embed.
    client = proxy.client()
    for _ in range(2):
        raw = client.responses.with_raw_response.create(
            model="gpt-4o-mini", prompt={"id": "pmpt_1", "variables": {"city": "Paris"}}
        )
        assert raw.headers["x-bsc-cache"] == "bypass"
        assert raw.parse().output_text
    assert fake.calls["responses"] == 2
    assert proxy.metrics()[("bsc_bypass_total", (("reason", "no input"),))] == 2


def test_embeddings_and_models_pass_through(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.client()
    embedded = client.embeddings.create(model="text-embedding-3-small", input=["abc", "de"])
    assert [d.embedding[0] for d in embedded.data] == [3.0, 2.0]
    assert [m.id for m in client.models.list()] == ["fake-model"]
    assert fake.calls["embeddings"] == 1 and fake.calls["models"] == 1


def test_azure_style_paths_are_cached_per_deployment(
    start_proxy: Any, upstream_url: str, fake: FakeUpstream
) -> None:
    proxy = start_proxy(upstream=upstream_url.removesuffix("/v1") + "/openai", prefix="/openai")

    def ask(deployment: str, question: str) -> Any:
        client = openai.AzureOpenAI(
            azure_endpoint=proxy.url,
            api_key="azure-key",
            api_version="2024-06-01",
            azure_deployment=deployment,
            max_retries=0,
        )
        return chat(client, question, model=deployment)

    assert content(ask("gpt4", FRANCE)) == fake.answer(FRANCE, "gpt4", "azure-key")
    assert ask("gpt4", FRANCE_PARAPHRASE).headers["x-bsc-cache"] == "hit"
    assert ask("gpt35", FRANCE).headers["x-bsc-cache"] == "miss"  # another deployment, another path
    assert fake.calls["chat"] == 2


def test_a_path_outside_the_api_prefix_is_an_openai_style_404(proxy: Proxy) -> None:
    response = httpx.get(proxy.url + "/nothing/here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


# ---------------------------------------------------------------- bypass and control headers
@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"n": 2}, "n>1"),
        ({"logprobs": True}, "logprobs"),
        ({"extra_headers": {"x-bsc-cache": "bypass"}}, "client"),
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
    ],
    ids=["n", "logprobs", "header", "legacy functions"],
)
def test_requests_that_must_not_be_cached_pass_through_and_are_counted(
    proxy: Proxy, fake: FakeUpstream, kwargs: dict[str, Any], reason: str
) -> None:
    client = proxy.client()
    for _ in range(2):
        assert chat(client, FRANCE, **kwargs).headers["x-bsc-cache"] == "bypass"
    assert fake.calls["chat"] == 2
    assert chat(client, FRANCE).headers["x-bsc-cache"] == "miss"  # nothing was stored
    assert proxy.metrics()[("bsc_bypass_total", (("reason", reason),))] == 2


def test_tool_results_bypass_unless_configured(start_proxy: Any, fake: FakeUpstream) -> None:
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    for options, outcomes in (({}, ["bypass", "bypass"]), ({"cache_tool_results": True}, ["miss", "hit"])):
        client = start_proxy(**options).client()
        seen = [
            client.chat.completions.with_raw_response.create(model="m", messages=messages).headers[
                "x-bsc-cache"
            ]
            for _ in range(2)
        ]
        assert seen == outcomes


def test_cache_control_no_cache_refreshes_and_no_store_does_not_store(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    client = proxy.client()
    assert chat(client, BREAD, extra_headers={"cache-control": "no-store"}).headers["x-bsc-cache"] == "miss"
    assert chat(client, BREAD).headers["x-bsc-cache"] == "miss"  # the no-store answer was not kept
    assert chat(client, BREAD).headers["x-bsc-cache"] == "hit"
    fake.answer = lambda question, model, key: "a fresher answer"  # type: ignore[method-assign]
    refreshed = chat(client, BREAD, extra_headers={"cache-control": "no-cache"})
    assert refreshed.headers["x-bsc-cache"] == "miss"
    assert content(chat(client, BREAD)) == "a fresher answer"


def test_a_per_request_ttl_expires_the_answer(proxy: Proxy, fake: FakeUpstream) -> None:
    import time

    client = proxy.client()
    chat(client, FRANCE, extra_headers={"x-bsc-ttl": "0.3"})
    assert chat(client, FRANCE).headers["x-bsc-cache"] == "hit"
    time.sleep(0.5)
    assert chat(client, FRANCE).headers["x-bsc-cache"] == "miss"
    with pytest.raises(openai.BadRequestError, match="x-bsc-ttl"):
        chat(client, FRANCE, extra_headers={"x-bsc-ttl": "soon"})


# ---------------------------------------------------------------- tenants
def test_two_api_keys_never_share_answers(proxy: Proxy, fake: FakeUpstream) -> None:
    alice, bob = proxy.client("sk-alice"), proxy.client("sk-bob")
    assert content(chat(alice, FRANCE)).startswith("[gpt-4o-mini|sk-alice]")
    bobs = chat(bob, FRANCE)
    assert bobs.headers["x-bsc-cache"] == "miss"
    assert content(bobs).startswith("[gpt-4o-mini|sk-bob]")
    assert content(chat(alice, FRANCE_PARAPHRASE)).startswith("[gpt-4o-mini|sk-alice]")
    assert content(chat(bob, FRANCE_PARAPHRASE)).startswith("[gpt-4o-mini|sk-bob]")
    assert fake.calls["chat"] == 2


def test_keys_are_never_stored_in_the_cache(proxy: Proxy, tmp_path: Path) -> None:
    chat(proxy.client("sk-very-secret-key"), FRANCE)
    for namespace in proxy.cache.cache.namespaces():
        assert "sk-very-secret-key" not in namespace


def test_shared_cache_and_namespace_header_opt_into_sharing(start_proxy: Any, fake: FakeUpstream) -> None:
    shared = start_proxy(shared_cache=True)
    chat(shared.client("sk-alice"), FRANCE)
    assert chat(shared.client("sk-bob"), FRANCE).headers["x-bsc-cache"] == "hit"
    named = start_proxy(namespace_header="x-team")
    team: dict[str, Any] = {"extra_headers": {"x-team": "search"}}
    chat(named.client("sk-alice"), BREAD, **team)
    assert chat(named.client("sk-bob"), BREAD, **team).headers["x-bsc-cache"] == "hit"
    assert chat(named.client("sk-bob"), BREAD).headers["x-bsc-cache"] == "miss"


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("status", "error_class"),
    [(429, "RateLimitError"), (500, "InternalServerError"), (400, "BadRequestError")],
)
def test_upstream_errors_reach_the_client_unchanged_and_are_not_cached(
    proxy: Proxy, fake: FakeUpstream, status: int, error_class: str
) -> None:
    body = {"error": {"message": f"upstream says {status}", "type": "test", "param": None, "code": "x"}}
    fake.fail_with.append((status, body))
    client = proxy.client()
    with pytest.raises(getattr(openai, error_class)) as caught:
        chat(client, FRANCE)
    assert caught.value.status_code == status
    assert caught.value.body == body["error"]
    assert caught.value.response.headers["x-fake"] == "error"  # upstream's own response
    assert chat(client, FRANCE).headers["x-bsc-cache"] == "miss"
    assert fake.calls["chat"] == 2


def test_an_upstream_error_on_a_streaming_request_keeps_its_status(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.fail_with.append(
        (429, {"error": {"message": "slow down", "type": "rate", "param": None, "code": None}})
    )
    with pytest.raises(openai.RateLimitError, match="slow down"):
        stream_text(proxy.client(), FRANCE)


def test_an_upstream_timeout_is_an_openai_style_504(start_proxy: Any, fake: FakeUpstream) -> None:
    proxy = start_proxy(read_timeout=0.5)
    fake.stall = 3.0
    with pytest.raises(openai.APIStatusError) as caught:
        chat(proxy.client(), FRANCE)
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "upstream_timeout"


def test_an_unreachable_upstream_is_an_openai_style_502(start_proxy: Any) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = start_proxy(upstream=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(openai.APIStatusError) as caught:
        chat(proxy.client(), FRANCE)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_unreachable"
    assert httpx.get(proxy.url + "/health").json() == {"status": "ok"}


class HangingUpUpstream:
    """A raw HTTP upstream that, for each connection in turn, hangs up without answering after reading
    the request (after a number of seconds), or answers (``None``): what a proxy meets when a pooled
    connection was closed as idle, or when the upstream drops a call it was working on."""

    ANSWER = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "answered"}, "finish_reason": "stop"}
            ],
        }
    ).encode()

    def __init__(self, hang_ups: list[float | None]) -> None:
        import socket
        import threading

        self.hang_ups = hang_ups
        self.requests = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import time

        for after in self.hang_ups:
            connection, _ = self._server.accept()
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                while len(body) < length:
                    body += connection.recv(65536)
                self.requests += 1
                if after is not None:
                    time.sleep(after)
                    continue
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    + f"content-length: {len(self.ANSWER)}\r\n\r\n".encode()
                    + self.ANSWER
                )


def test_a_connection_closed_before_any_answer_is_tried_once_more(start_proxy: Any) -> None:
    # A pooled connection the upstream closed as idle just as the proxy reused it fails at once.
    upstream = HangingUpUpstream([0.0, None])
    proxy = start_proxy(upstream=upstream.url)
    assert chat(proxy.client(), FRANCE).parse().choices[0].message.content == "answered"
    assert upstream.requests == 2


def test_a_call_the_upstream_drops_midway_is_not_sent_twice(start_proxy: Any) -> None:
    # The upstream worked on it for a second: it may have run (and billed) the call, so it is not resent.
    upstream = HangingUpUpstream([1.0, None])
    proxy = start_proxy(upstream=upstream.url)
    with pytest.raises(openai.APIStatusError) as caught:
        chat(proxy.client(), FRANCE)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_unreachable"
    assert upstream.requests == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "m", "messages": [', None),
        (b"[1, 2]", None),
        (b'{"model": "m", "messages": "hello"}', "messages"),
        (b'{"model": 3, "messages": []}', "model"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
        (b'{"model": "m", "messages": [], "temperature": NaN}', None),
        (b'{"model": "m", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "best_of": "2"}', "best_of"),
    ],
)
def test_a_malformed_request_is_an_openai_style_400(
    proxy: Proxy, fake: FakeUpstream, body: bytes, param: str | None
) -> None:
    response = httpx.post(
        proxy.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert fake.calls["chat"] == 0


def test_a_lone_surrogate_in_a_request_is_keyed_and_cached_not_a_500(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    # A string cut through an emoji (a lone UTF-16 surrogate, valid JSON) in the system prompt.
    body = (
        b'{"model": "m", "messages": [{"role": "system", "content": "Be brief \\ud83d"},'
        b' {"role": "user", "content": "What is the capital of France?"}]}'
    )
    outcomes, answers = [], []
    for stream in (False, False, True):
        streamed = body[:-1] + b', "stream": true}' if stream else body
        response = httpx.post(
            proxy.url + "/v1/chat/completions",
            content=streamed,
            headers={"content-type": "application/json", "authorization": "Bearer sk-alice"},
        )
        assert response.status_code == 200, response.text
        outcomes.append(response.headers["x-bsc-cache"])
        if not stream:
            answers.append(response.json()["choices"][0]["message"]["content"])
    assert outcomes == ["miss", "hit", "hit"]
    assert answers[0] == answers[1] and answers[0].endswith("\ud83d)")  # the fake echoes the system prompt
    assert b"\\ud83d" in response.content  # the streamed hit carries it as its JSON escape
    assert fake.calls["chat"] == 1


def test_the_openai_client_sees_a_400_as_bad_request(proxy: Proxy) -> None:
    with pytest.raises(openai.BadRequestError, match="input must be a string or an array"):
        proxy.client().responses.create(model="m", input=42)


def test_a_body_over_the_limit_is_a_413(start_proxy: Any, fake: FakeUpstream) -> None:
    proxy = start_proxy(max_body_bytes=10_000)
    with pytest.raises(openai.APIStatusError) as caught:
        chat(proxy.client(), "x " * 10_000)
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large"
    chunked = httpx.post(proxy.url + "/v1/chat/completions", content=iter([b"{" + b" " * 20_000 + b"}"]))
    assert chunked.status_code == 413
    assert fake.calls["chat"] == 0


class _BrokenEmbedder:
    """Wraps the real embedder and fails every call, like an embedding service that is down."""

    def __init__(self, real: Any) -> None:
        self.dim, self.name = real.dim, real.name
        self.broken = False
        self._real = real

    def embed(self, texts: list[str]) -> Any:
        if self.broken:
            raise ConnectionError("embedding service down")
        return self._real.embed(texts)

    async def aembed(self, texts: list[str]) -> Any:
        if self.broken:
            raise ConnectionError("embedding service down")
        return await self._real.aembed(texts)


def test_a_failing_cache_never_fails_a_request(
    start_proxy: Any, fake: FakeUpstream, single_thread_default_embedder: Any
) -> None:
    embedder = _BrokenEmbedder(single_thread_default_embedder)
    proxy = start_proxy(cache=SemanticCache(embedder))
    client = proxy.client()
    chat(client, FRANCE)
    embedder.broken = True
    for question in (FRANCE_PARAPHRASE, BREAD):
        served = chat(client, question)
        assert question in content(served) or FRANCE in content(served)
    metrics = proxy.metrics()
    assert metrics[("bsc_cache_errors_total", (("operation", "lookup"),))] >= 1
    assert metrics[("bsc_cache_errors_total", (("operation", "store"),))] >= 1


# ---------------------------------------------------------------- metrics, health, persistence, CLI
def test_metrics_count_what_happened(proxy: Proxy, fake: FakeUpstream) -> None:
    client = proxy.client()
    chat(client, FRANCE)
    chat(client, FRANCE_PARAPHRASE)
    chat(client, FRANCE)
    chat(client, FRANCE, n=2)
    fake.fail_with.append((500, {"error": {"message": "boom", "type": "x", "param": None, "code": None}}))
    with pytest.raises(openai.InternalServerError):
        chat(client, BREAD)
    m = proxy.metrics()
    requests = {dict(labels)["outcome"]: v for (name, labels), v in m.items() if name == "bsc_requests_total"}
    assert requests == {"miss": 1, "hit": 2, "bypass": 1, "error": 1}
    assert m[("bsc_hit_latency_seconds_count", (("endpoint", "chat"),))] == 2
    assert m[("bsc_upstream_latency_seconds_count", (("endpoint", "chat"),))] == 3
    assert m[("bsc_cache_entries", ())] == 1
    assert m[("bsc_cache_lookup_hits_total", (("kind", "exact"),))] == 1
    assert m[("bsc_cache_lookup_hits_total", (("kind", "semantic"),))] == 1
    usage = chat(client, FRANCE).parse().usage
    m = proxy.metrics()
    assert m[("bsc_tokens_saved_total", (("kind", "completion"),))] == 3 * usage.completion_tokens
    expected_dollars = 3 * (usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.60) / 1e6  # gpt-4o-mini
    assert m[("bsc_dollars_saved_total", ())] == pytest.approx(expected_dollars)


def test_health_and_ready(proxy: Proxy) -> None:
    assert httpx.get(proxy.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(proxy.url + "/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_a_snapshot_written_at_shutdown_answers_after_a_restart(
    upstream_url: str, fake: FakeUpstream, single_thread_default_embedder: Any, tmp_path: Path
) -> None:
    config = ServeConfig(upstream=upstream_url, path=str(tmp_path / "cache.bsc"))
    with running(create_app(config, embedder=single_thread_default_embedder)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-alice", max_retries=0)
        chat(client, FRANCE)
    assert (tmp_path / "cache.bsc").exists()
    with running(create_app(config, embedder=single_thread_default_embedder)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-alice", max_retries=0)
        assert chat(client, FRANCE_PARAPHRASE).headers["x-bsc-cache"] == "hit"
        other = openai.OpenAI(base_url=url + "/v1", api_key="sk-bob", max_retries=0)
        assert chat(other, FRANCE).headers["x-bsc-cache"] == "miss"
    assert fake.calls["chat"] == 2


def test_snapshots_are_also_written_periodically(start_proxy: Any, tmp_path: Path) -> None:
    import time

    path = tmp_path / "cache.bsc"
    proxy = start_proxy(path=str(path), snapshot_interval=0.2)
    chat(proxy.client(), FRANCE)
    deadline = time.monotonic() + 30

    def saved_entries() -> int:
        return len(SemanticCache.load(path, embedder=proxy.cache.embedder)) if path.exists() else 0

    # A snapshot taken after the answer was stored, while the proxy still runs (none at shutdown yet).
    while saved_entries() != 1:
        assert time.monotonic() < deadline, "no periodic snapshot holds the answer"
        time.sleep(0.1)


def _bsc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bsc.cli", "serve", *args], capture_output=True, text=True, timeout=120
    )


def test_the_cli_lists_the_serve_options_and_rejects_bad_settings(tmp_path: Path) -> None:
    helped = _bsc("--help")
    assert helped.returncode == 0 and "--upstream" in helped.stdout and "--redis" in helped.stdout
    bad = _bsc("--upstream", "ftp://example")
    assert bad.returncode == 2 and "upstream must be an http:// or https:// URL" in bad.stderr
    config = tmp_path / "serve.toml"
    config.write_text("[serve]\nportt = 1\n")
    typo = _bsc("--config", str(config))
    assert typo.returncode == 2 and "unknown bsc serve setting(s) ['portt']" in typo.stderr


def test_config_from_file_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text('[serve]\nupstream = "http://127.0.0.1:11434/v1"\nport = 9000\nshared-cache = true\n')
    env = {
        "BSC_SERVE_PORT": "9100",
        "BSC_SERVE_READ_TIMEOUT": "5",
        "BSC_SERVE_PRICES": json.dumps({"m": [1, 2]}),
    }
    config = ServeConfig.from_sources({"host": "0.0.0.0"}, config_file=path, environ=env)
    assert (config.upstream, config.port, config.shared_cache, config.host) == (
        "http://127.0.0.1:11434/v1",
        9100,
        True,
        "0.0.0.0",
    )
    assert config.read_timeout == 5.0 and config.price_of("m-1") == (1, 2)
    with pytest.raises(ValueError, match="BSC_SERVE_PORT must be an integer"):
        ServeConfig.from_sources({}, environ={"BSC_SERVE_PORT": "eighty"})
    with pytest.raises(ValueError, match="path with workers > 1"):
        ServeConfig(path="x.bsc", workers=2)


def test_the_readme_example_runs_and_prints_what_it_says(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## bsc serve:", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in section.split("```python\n")[1:] if "FakeUpstream" in b).split("```", 1)[0]
    exec(compile(block, "README.md", "exec"), {})
    expected = [line.removeprefix("# ") for line in block.splitlines() if line.startswith("# ")]
    assert capsys.readouterr().out.splitlines() == expected


@pytest.mark.slow
def test_the_bsc_serve_command_serves_and_snapshots_at_shutdown(
    upstream_url: str, fake: FakeUpstream, tmp_path: Path
) -> None:
    import os
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    snapshot = tmp_path / "cache.bsc"
    args = [
        "--upstream",
        upstream_url,
        "--port",
        str(port),
        "--path",
        str(snapshot),
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsc.cli", "serve", *args], env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "bsc serve did not become ready"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-alice", max_retries=0)
        assert chat(client, FRANCE).headers["x-bsc-cache"] == "miss"
        assert chat(client, FRANCE_PARAPHRASE).headers["x-bsc-cache"] == "hit"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful shutdown
    assert snapshot.exists() and (tmp_path / "cache.bsc.secret").exists()
    assert fake.calls["chat"] == 1

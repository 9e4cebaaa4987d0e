"""A cache failure never fails the user's call: the embedding server goes down, the model still answers.

The embedder is bsc's real `OllamaEmbedder` talking HTTP to a server on 127.0.0.1 (the one the embedder
tests use); once the cache is built, the server answers HTTP 500, as a crashed or overloaded server does.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import test_embedders
from bsc import SemanticCache
from bsc.fail_open import FailOpenCache
from test_embedders import FakeEmbeddingServer, ollama_embedder

SERVER_DOWN: tuple[int, Any, dict[str, str]] = (500, {"error": "server crashed"}, {})


server = test_embedders.server  # the embedder tests' server fixture: started, and stopped at teardown


def _going_down(server: FakeEmbeddingServer) -> None:
    server.failures.extend([SERVER_DOWN] * 50)


def _failures(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if f"semantic cache {what} failed" in r.getMessage() and r.exc_info]


def _langchain_view(server: FakeEmbeddingServer) -> Any:
    """A LangChain ``Embeddings`` over the same HTTP embedder (so it fails when the server does)."""
    from langchain_core.embeddings import Embeddings

    ollama = ollama_embedder(server, max_retries=0)

    class OllamaEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[float(x) for x in row] for row in ollama.embed(texts)]

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    return OllamaEmbeddings()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_lookup_and_update_log_the_failure_and_report_a_miss(
    server: FakeEmbeddingServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FailOpenCache(
        SemanticCache(ollama_embedder(server, max_retries=0), guard=False), logging.getLogger("test")
    )
    cache.update("What is the capital of France?", "Paris", namespace="a")
    _going_down(server)
    with caplog.at_level(logging.WARNING, logger="test"):
        if mode == "sync":
            hit = cache.lookup("Which city is the capital of France?", namespace="a")
            cache.update("What is the capital of Spain?", "Madrid", namespace="a")
        else:
            hit = await cache.alookup("Which city is the capital of France?", namespace="a")
            await cache.aupdate("What is the capital of Spain?", "Madrid", namespace="a")
    assert hit is None
    assert len(_failures(caplog, "lookup")) == 1
    assert len(_failures(caplog, "update")) == 1
    assert len(cache.cache) == 1  # the failed update stored nothing


def test_clear_prefix_empties_only_the_namespaces_under_it(server: FakeEmbeddingServer) -> None:
    cache = FailOpenCache(SemanticCache(ollama_embedder(server), guard=False), logging.getLogger("test"))
    namespaces = ("app:a", "app:b", "apple", "other")
    for namespace in namespaces:
        cache.update("What is 2 + 2?", "4", namespace=namespace)
    cache.clear_prefix("app:")
    found = {ns: cache.lookup("What is 2 + 2?", namespace=ns) is not None for ns in namespaces}
    assert found == {"app:a": False, "app:b": False, "apple": True, "other": True}


def test_failopen_cache_takes_only_a_semantic_cache() -> None:
    with pytest.raises(TypeError, match=r"bsc\.SemanticCache, got dict"):
        FailOpenCache({}, logging.getLogger("test"))  # type: ignore[arg-type]


async def test_llamaindex_wrapper_answers_from_the_model_when_the_cache_fails(
    server: FakeEmbeddingServer, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.llms import MockLLM
    from llamaindex_bsc import CachingLLM

    llm = CachingLLM(llm=MockLLM(max_tokens=2), embedder=ollama_embedder(server, max_retries=0))
    llm.chat([ChatMessage(role="user", content="What is the capital of France?")])
    llm.complete("Name a city in France")
    _going_down(server)
    # Paraphrases, so each lookup has to embed (an identical prompt is an exact hit without embedding).
    paraphrase = [ChatMessage(role="user", content="Which city is the capital of France?")]
    with caplog.at_level(logging.WARNING, logger="llamaindex_bsc"):
        assert llm.chat(paraphrase).message.content == "text text"
        assert (await llm.acomplete("Name one city in France")).text == "text text"
        assert "".join(r.delta or "" for r in llm.stream_complete("Name any city in France")) == "text text"
    assert len(_failures(caplog, "lookup")) == 3
    assert len(_failures(caplog, "update")) == 3
    assert _failures(caplog, "lookup") and _failures(caplog, "update")


def test_langchain_cache_answers_from_the_model_when_the_cache_fails(
    server: FakeEmbeddingServer, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_bsc import BinarySemanticLLMCache
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    model = FakeListChatModel(
        responses=["Paris", "Madrid"], cache=BinarySemanticLLMCache(_langchain_view(server))
    )
    assert model.invoke("What is the capital of France?").content == "Paris"
    _going_down(server)
    with caplog.at_level(logging.WARNING, logger="langchain_bsc"):
        assert model.invoke("What is the capital of Spain?").content == "Madrid"
    assert len(_failures(caplog, "lookup")) == 1
    assert len(_failures(caplog, "update")) == 1


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "abatch"])
async def test_langchain_runnable_answers_from_the_chain_when_the_cache_fails(
    server: FakeEmbeddingServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_bsc import SemanticCacheRunnable
    from langchain_core.runnables import RunnableLambda

    calls: list[str] = []

    def answer(question: str) -> str:
        calls.append(question)
        return f"answer to {question}"

    chain = SemanticCacheRunnable(RunnableLambda(answer), embedding=_langchain_view(server))
    chain.invoke("What is the capital of France?")
    _going_down(server)
    questions = ["Which city is the capital of France?", "Name a city in Spain"]
    with caplog.at_level(logging.WARNING, logger="langchain_bsc"):
        if mode == "invoke":
            out = [chain.invoke(q) for q in questions]
        elif mode == "ainvoke":
            out = [await chain.ainvoke(q) for q in questions]
        elif mode == "batch":
            out = chain.batch(questions)
        else:
            out = await chain.abatch(questions)
    assert out == [f"answer to {q}" for q in questions]
    assert sorted(calls[1:]) == sorted(questions)  # the chain answered every call (abatch: concurrently)
    assert _failures(caplog, "lookup") and _failures(caplog, "update")


def test_langchain_chat_model_wrapper_answers_from_the_model_when_the_cache_fails(
    server: FakeEmbeddingServer, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_bsc import BinarySemanticLLMCache, SemanticCacheChatModel
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    model = SemanticCacheChatModel(
        model=FakeListChatModel(responses=["Paris", "Still Paris"]),
        semantic_cache=BinarySemanticLLMCache(_langchain_view(server)),
    )
    assert model.invoke("What is the capital of France?").content == "Paris"
    _going_down(server)
    with caplog.at_level(logging.WARNING, logger="langchain_bsc"):
        assert model.invoke("Which city is the capital of France?").content == "Still Paris"
    assert _failures(caplog, "lookup") and _failures(caplog, "update")


def test_langchain_agent_middleware_answers_from_the_model_when_the_cache_fails(
    server: FakeEmbeddingServer, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from langchain_bsc import SemanticCacheMiddleware
    from test_langchain_agents import _ask, _model

    model = _model()
    agent = create_agent(model, middleware=[SemanticCacheMiddleware(_langchain_view(server))])
    _ask(agent, "What is the capital of France?")
    _going_down(server)
    with caplog.at_level(logging.WARNING, logger="langchain_bsc"):
        answer = _ask(agent, "Which city is the capital of France?")
    assert "bsc_cache" not in answer.response_metadata  # answered by the model, not the cache
    assert model.calls == ["What is the capital of France?", "Which city is the capital of France?"]
    assert _failures(caplog, "lookup")

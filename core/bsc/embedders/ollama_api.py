"""Embeddings from a local or remote Ollama server over its ``/api/embed`` HTTP API."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from bsc.embedders.protocol import _chunks, _HttpEmbedderBase, _PerLoop

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 8.0


class OllamaError(OSError):
    """A request to Ollama failed: a 4xx, a 5xx or connection failure after retries, or a bad reply.

    Attributes:
        status_code: HTTP status, or None when no valid response arrived.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def _server_message(response: httpx.Response) -> str:
    # Ollama reports errors as {"error": "..."}; fall back to the raw body for proxies etc.
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return response.text[:500]


class OllamaEmbedder(_HttpEmbedderBase):
    """Embeds with a model served by Ollama.

    5xx responses and connection errors/timeouts are retried with exponential backoff and
    jitter (`backoff`, doubling, at most 8 s) up to `max_retries` times; a 4xx raises at once
    with the server's message (e.g. a model that has not been pulled). Use it as a context
    manager (``with`` or ``async with``), or call `close` / `aclose`, to release connections.

    Args:
        model: Ollama model name, e.g. ``"nomic-embed-text"``.
        base_url: Server address.
        timeout: Seconds per request attempt.
        max_retries: Retries after the first attempt.
        backoff: First retry delay in seconds.
        batch_size: Texts per request, so one huge call cannot hit the timeout.

    Raises:
        ImportError: If `httpx` is missing.
        ValueError: If `batch_size` is not positive or `max_retries` or `backoff` is negative.
        OllamaError: On failed requests (see the class description).

    Example (needs a running ``ollama serve``; skipped as a doctest):
        >>> e = OllamaEmbedder("nomic-embed-text")  # doctest: +SKIP
        >>> e.embed(["hello"]).shape  # doctest: +SKIP
        (1, 768)
    """

    def __init__(
        self,
        model: str = "nomic-embed-text",
        *,
        base_url: str = "http://127.0.0.1:11434",
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        batch_size: int = 64,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if max_retries < 0 or backoff < 0:
            raise ValueError(f"max_retries and backoff must be >= 0, got {max_retries} and {backoff}")
        try:
            import httpx
        except ImportError as exc:
            raise ImportError('OllamaEmbedder needs httpx: pip install "bsc-cache[ollama]"') from exc
        self._httpx = httpx
        self._model = model
        self._base_url = base_url.rstrip("/")
        self._max_retries = max_retries
        self._backoff = backoff
        self._batch_size = batch_size
        self._client = httpx.Client(base_url=self._base_url, timeout=timeout)
        self._aclient: _PerLoop[httpx.AsyncClient] = _PerLoop(
            lambda: httpx.AsyncClient(base_url=self._base_url, timeout=timeout)
        )

    @property
    def name(self) -> str:
        """``"ollama:<model>"``."""
        return f"ollama:{self._model}"

    def _delay(self, attempt: int) -> float:
        return min(self._backoff * 2.0**attempt, _MAX_BACKOFF) * (1.0 - 0.25 * random.random())

    def _retryable(self) -> tuple[type[Exception], ...]:
        h = self._httpx
        return (h.TimeoutException, h.NetworkError, h.RemoteProtocolError)

    def _parse(self, response: httpx.Response, n_texts: int) -> list[list[float]]:
        if response.status_code >= 400:
            raise OllamaError(
                f"Ollama at {self._base_url} answered HTTP {response.status_code} for model "
                f"{self._model!r}: {_server_message(response)}",
                status_code=response.status_code,
            )
        try:
            embeddings = response.json()["embeddings"]
        except (ValueError, KeyError, TypeError) as exc:
            raise OllamaError(
                f"Ollama at {self._base_url} sent a reply without 'embeddings': {response.text[:200]!r}",
                status_code=response.status_code,
            ) from exc
        if not isinstance(embeddings, list) or len(embeddings) != n_texts:
            raise OllamaError(
                f"Ollama returned {len(embeddings) if isinstance(embeddings, list) else 'no'} "
                f"embeddings for {n_texts} texts",
                status_code=response.status_code,
            )
        return embeddings

    def _should_retry(self, attempt: int, failure: str, cause: Exception | None) -> bool:
        """Log and say whether to retry; after the last attempt, raise for connection failures."""
        if attempt < self._max_retries:
            total = self._max_retries + 1
            logger.warning("Ollama %s (attempt %d of %d), retrying", failure, attempt + 1, total)
            return True
        if cause is not None:
            raise OllamaError(
                f"could not reach Ollama at {self._base_url} after {attempt + 1} attempts: {cause!r}; "
                "is `ollama serve` running?"
            ) from cause
        return False

    def _embed_batch(self, texts: list[str]) -> object:
        return [row for batch in _chunks(texts, self._batch_size) for row in self._post(batch)]

    async def _aembed_batch(self, texts: list[str]) -> object:
        client = self._aclient.get()
        return [row for batch in _chunks(texts, self._batch_size) for row in await self._apost(client, batch)]

    def _post(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self._model, "input": texts}
        attempt = 0
        while True:
            try:
                response = self._client.post("/api/embed", json=body)
            except self._retryable() as exc:
                self._should_retry(attempt, f"request failed: {exc!r}", exc)
            else:
                if response.status_code < 500 or not self._should_retry(
                    attempt, f"HTTP {response.status_code}", None
                ):
                    return self._parse(response, len(texts))
            time.sleep(self._delay(attempt))
            attempt += 1

    async def _apost(self, client: httpx.AsyncClient, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self._model, "input": texts}
        attempt = 0
        while True:
            try:
                response = await client.post("/api/embed", json=body)
            except self._retryable() as exc:
                self._should_retry(attempt, f"request failed: {exc!r}", exc)
            else:
                if response.status_code < 500 or not self._should_retry(
                    attempt, f"HTTP {response.status_code}", None
                ):
                    return self._parse(response, len(texts))
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

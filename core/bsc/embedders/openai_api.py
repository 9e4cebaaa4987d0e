"""Embeddings from the OpenAI API (or any server that speaks its ``/embeddings`` protocol)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bsc.embedders.protocol import _chunks, _HttpEmbedderBase, _PerLoop

if TYPE_CHECKING:
    import openai

logger = logging.getLogger(__name__)

# Widths of the standard models at full size, so `dim` costs no request.
_KNOWN_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


def _rows(response: Any) -> list[list[float]]:
    # The API documents `index`; order by it rather than trusting response order.
    return [item.embedding for item in sorted(response.data, key=lambda item: item.index)]


class OpenAIEmbedder(_HttpEmbedderBase):
    """Embeds with the OpenAI embeddings API through the official `openai` client.

    Rate limits (429), server errors (5xx), 408/409 and timeouts are retried by the client
    itself with exponential backoff and jitter (honouring ``Retry-After``), up to
    `max_retries` times; other 4xx errors raise at once. Use it as a context manager (``with``
    or ``async with``), or call `close` / `aclose`, to release pooled connections.

    Args:
        model: Embedding model id.
        api_key: API key; None reads ``OPENAI_API_KEY``.
        base_url: Alternative endpoint, e.g. an OpenAI-compatible local server.
        dimensions: Shorter output width (text-embedding-3 models only); part of `name`.
        batch_size: Texts per request.
        timeout: Seconds per request attempt.
        max_retries: Retries after the first attempt.

    Raises:
        ImportError: If the `openai` package is missing.
        openai.OpenAIError: If no API key is given or found in the environment, and on
            failed requests (e.g. `openai.BadRequestError`, `openai.RateLimitError`).
        ValueError: If `batch_size` or `dimensions` is not positive.

    Example (needs an OpenAI API key and the network; skipped as a doctest):
        >>> e = OpenAIEmbedder("text-embedding-3-small", dimensions=256)  # doctest: +SKIP
        >>> e.embed(["hello"]).shape  # doctest: +SKIP
        (1, 256)
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        dimensions: int | None = None,
        batch_size: int = 512,
        timeout: float = 30.0,
        max_retries: int = 5,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if dimensions is not None and dimensions <= 0:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        try:
            import openai
        except ImportError as exc:
            raise ImportError(
                'OpenAIEmbedder needs the openai package: pip install "bsc-cache[openai]"'
            ) from exc
        self._model = model
        self._dimensions = dimensions
        self._batch_size = batch_size
        self._dim = dimensions if dimensions is not None else _KNOWN_DIMS.get(model)
        options: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._client = openai.OpenAI(**options)
        self._aclient: _PerLoop[openai.AsyncOpenAI] = _PerLoop(lambda: openai.AsyncOpenAI(**options))

    @property
    def name(self) -> str:
        """``"openai:<model>"``, with ``":<dimensions>"`` appended when shortened."""
        suffix = f":{self._dimensions}" if self._dimensions is not None else ""
        return f"openai:{self._model}{suffix}"

    async def _close_async_client(self, client: Any) -> None:
        await client.close()  # the openai client's async close is `close`

    def _request_args(self, batch: list[str]) -> dict[str, Any]:
        args: dict[str, Any] = {"model": self._model, "input": batch}
        if self._dimensions is not None:
            args["dimensions"] = self._dimensions
        return args

    def _embed_batch(self, texts: list[str]) -> object:
        rows: list[list[float]] = []
        for batch in _chunks(texts, self._batch_size):
            rows.extend(_rows(self._client.embeddings.create(**self._request_args(batch))))
        return rows

    async def _aembed_batch(self, texts: list[str]) -> object:
        client = self._aclient.get()
        rows: list[list[float]] = []
        for batch in _chunks(texts, self._batch_size):
            rows.extend(_rows(await client.embeddings.create(**self._request_args(batch))))
        return rows

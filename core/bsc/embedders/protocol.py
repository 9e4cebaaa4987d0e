"""The `Embedder` protocol and the input/output contract every embedder in `bsc` enforces.

The cache binarizes embeddings by sign after a random projection, so it needs rows that are
unit-length float32 in a fixed dimension. Models disagree on all three (some normalise, some
return float64 lists, some return a different width than advertised), so the contract is
enforced once here rather than trusted per backend.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Text sent when a backend's width is unknown and must be discovered with one real call.
_DIM_PROBE = "dimension probe"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors of a fixed width.

    Implementations guarantee that `embed` returns a C-contiguous ``(len(texts), dim)``
    float32 array whose rows have L2 norm 1, that an empty list gives shape ``(0, dim)``,
    that a non-str item raises `TypeError` naming its index, and that `aembed` does not
    block the running event loop.

    Optionally, an embedder that truncates long input says so with
    ``overflows(texts: list[str]) -> list[bool]`` (the local embedders do): `bsc.SemanticCache`
    then matches such texts exactly only, since their tail never reached the embedding. One that can
    tell from the tokenisation it embeds with also offers
    ``embed_with_overflow(texts) -> (vectors, list[bool])`` and its awaitable twin
    ``aembed_with_overflow`` (the default `NativeEmbedder` does), which the cache prefers: each text is
    then tokenised once. See `OverflowAwareEmbedder`.

    Example:
        >>> def width(e: Embedder) -> int:
        ...     return e.embed(["hello"]).shape[1]
    """

    @property
    def dim(self) -> int:
        """Width of every embedding row."""
        ...

    @property
    def name(self) -> str:
        """Stable model identifier, e.g. ``"sentence-transformers:all-MiniLM-L6-v2"``; keys caches."""
        ...

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Embed `texts` into a ``(len(texts), dim)`` unit-row float32 array."""
        ...

    async def aembed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Like `embed`, without blocking the event loop."""
        ...


@runtime_checkable
class OverflowAwareEmbedder(Protocol):
    """An embedder that reports, with the vectors and from the same tokenisation, which texts were
    longer than the model reads (and so were cut before embedding). ``flags[i]`` must equal what
    ``overflows([texts[i]])`` would say.

    Example:
        >>> def embed_checked(e: OverflowAwareEmbedder, text: str) -> bool:
        ...     _, (too_long,) = e.embed_with_overflow([text])
        ...     return too_long
    """

    def embed_with_overflow(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[bool]]:
        """`Embedder.embed`'s array, and one flag per text: True where the text was truncated."""
        ...

    async def aembed_with_overflow(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[bool]]:
        """Like `embed_with_overflow`, without blocking the event loop."""
        ...


def _checked_texts(texts: Sequence[str]) -> list[str]:
    """Return `texts` as a list after checking every item is a str.

    Raises:
        TypeError: If `texts` is itself a str/bytes (a common slip that would embed single
            characters) or any item is not a str; the message names the first bad index.
    """
    if isinstance(texts, str | bytes):
        raise TypeError(f"texts must be a list of str, got a single {type(texts).__name__}; wrap it in [...]")
    batch = list(texts)
    for i, text in enumerate(batch):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}")
    return batch


def _chunks(texts: list[str], size: int) -> Iterator[list[str]]:
    """Consecutive slices of at most `size` texts, for backends with a per-request limit."""
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def _unit_rows(raw: object, n_rows: int, dim: int | None) -> npt.NDArray[np.float32]:
    """Convert a backend's output to a C-contiguous float32 array with unit-length rows.

    Args:
        raw: Array-like of shape ``(n_rows, d)`` as returned by a model or an API.
        n_rows: How many rows were asked for.
        dim: Expected width, or None when not known yet.

    Raises:
        ValueError: If the shape is wrong, a value is not finite, or a row is all zeros
            (a zero vector has no direction, so it cannot be binarized meaningfully).
    """
    rows = np.array(raw, dtype=np.float32, order="C", copy=True)
    if rows.ndim != 2 or rows.shape[0] != n_rows:
        raise ValueError(f"embedding backend returned shape {rows.shape}, expected ({n_rows}, dim)")
    if dim is not None and rows.shape[1] != dim:
        raise ValueError(f"embedding backend returned width {rows.shape[1]}, expected {dim}")
    if not np.isfinite(rows).all():
        bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
        raise ValueError(f"embedding of texts[{bad}] contains NaN or infinity")
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    if (norms == 0.0).any():
        raise ValueError(f"embedding of texts[{int(np.flatnonzero(norms == 0.0)[0])}] is the zero vector")
    rows /= norms[:, None].astype(np.float32)
    return rows


class _EmbedderBase(ABC):
    """Shared `embed`/`aembed` that validate input and normalise output around a backend call.

    Subclasses implement `_embed_batch` / `_aembed_batch` (raw vectors for a non-empty list of
    str) and either set `_dim` up front or leave it None to learn it from the first response.
    """

    _dim: int | None = None

    @property
    @abstractmethod
    def name(self) -> str:
        """Stable model identifier."""

    @property
    def dim(self) -> int:
        """Width of every embedding row; may cost one backend call the first time if unknown."""
        if self._dim is None:
            logger.debug("%s: width unknown, probing with one call", self.name)
            self.embed([_DIM_PROBE])
        assert self._dim is not None
        return self._dim

    @abstractmethod
    def _embed_batch(self, texts: list[str]) -> object:
        """Raw embeddings (array-like, one row per text) for a non-empty list."""

    @abstractmethod
    async def _aembed_batch(self, texts: list[str]) -> object:
        """Async twin of `_embed_batch`; must not block the event loop."""

    def _finish(self, raw: object, n_rows: int) -> npt.NDArray[np.float32]:
        rows = _unit_rows(raw, n_rows, self._dim)
        if self._dim is None:
            self._dim = int(rows.shape[1])
        return rows

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed `texts` into a ``(len(texts), dim)`` float32 array of unit rows.

        Raises:
            TypeError: If `texts` is a str or holds a non-str item (the index is named).
            ValueError: If the backend returns a wrong shape, non-finite values or a zero vector.
        """
        batch = _checked_texts(texts)
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._finish(self._embed_batch(batch), len(batch))

    async def aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Async `embed`: same contract, without blocking the event loop."""
        batch = _checked_texts(texts)
        if not batch:
            if self._dim is None:
                await self.aembed([_DIM_PROBE])
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._finish(await self._aembed_batch(batch), len(batch))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class _PerLoop(Generic[_T]):
    """One async client per running event loop.

    Async HTTP clients keep pooled connections bound to the loop that opened them; reusing
    one from another loop (a second `asyncio.run`, or pytest's per-test loops) fails with
    "Event loop is closed". Keying by loop keeps one embedder usable from any loop.
    """

    def __init__(self, factory: Callable[[], _T]) -> None:
        self._factory = factory
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # loops in different threads may ask at the same time

    def get(self) -> _T:
        """The client for the running loop, created on first use in that loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = self._factory()
                self._clients[loop] = client
            return client

    def pop(self) -> _T | None:
        """Remove and return the running loop's client, if it made one, so the caller can close it."""
        loop = asyncio.get_running_loop()
        with self._lock:
            return self._clients.pop(loop, None)


class _HttpEmbedderBase(_EmbedderBase):
    """Closing for embedders that hold a sync HTTP client in ``_client`` and per-loop async clients in
    ``_aclient``, as plain calls and as sync/async context managers."""

    _client: Any
    _aclient: _PerLoop[Any]

    def close(self) -> None:
        """Close the synchronous HTTP client's connections. Async clients need `aclose`."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the async client of the running event loop and the synchronous client."""
        client = self._aclient.pop()
        if client is not None:
            await self._close_async_client(client)
        self._client.close()

    async def _close_async_client(self, client: Any) -> None:
        await client.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

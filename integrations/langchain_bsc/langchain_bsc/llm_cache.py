"""`BinarySemanticLLMCache`: a LangChain ``BaseCache`` backed by `bsc.SemanticCache`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from bsc import DEFAULT_THRESHOLD, SemanticCacheStats
from bsc.digest import digest
from bsc.store import RedisStore
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.embeddings import Embeddings

from langchain_bsc._cache import fail_open_cache
from langchain_bsc._serialization import GENERATION_CLASSES, dump, load
from langchain_bsc.hits import areport_hit, marked, marker, report_hit
from langchain_bsc.keys import PromptKeyFunction, default_prompt_key
from langchain_bsc.tenancy import current_namespace

__all__ = ["BinarySemanticLLMCache"]

logger = logging.getLogger("langchain_bsc")


def _digest(text: str) -> str:
    return digest(text).hex()


class BinarySemanticLLMCache(BaseCache):
    """A semantic LLM cache for LangChain: paraphrases of a cached prompt are answered from the cache.

    Drop it in with ``set_llm_cache(BinarySemanticLLMCache())`` or per model with ``cache=``. Each
    prompt is split by ``key`` (see `default_prompt_key`) into a text that is embedded and matched
    semantically and a partition that must match exactly, together with the ``llm_string`` (the
    model and its parameters) and ``namespace``. So another model or other parameters never get this
    one's answers, and for chat models only the last human message is compared by meaning: the same
    follow-up under another system prompt or conversation history is a miss.

    LangChain builds a text LLM's ``llm_string`` without call-time kwargs (langchain issue #40403), so
    ``llm.invoke(p, temperature=0)`` and ``llm.invoke(p, temperature=1)`` share a partition; chat models
    include them. Models that implement streaming skip the cache in ``.stream()``: LangChain consults it
    in ``invoke``/``batch``/``generate`` and their async twins only; wrap the model in
    `SemanticCacheChatModel` for streamed hits.

    A served chat message carries ``response_metadata["bsc_cache"]`` (see `langchain_bsc.hits`), and
    the hit is dispatched as the custom event ``"bsc_cache_hit"`` when the model runs inside a chain.
    Inside a ``with cache_namespace("tenant"):`` block (see `langchain_bsc.tenancy`) every lookup,
    update and ``clear`` applies to that tenant's partition only.

    Args:
        embedding: any LangChain ``Embeddings``; None uses bsc's local all-MiniLM-L6-v2 (offline,
            loaded once per process).
        threshold: minimum cosine similarity of two question texts for a hit.
        max_entries: capacity; the least recently used entry is evicted beyond it.
        ttl: seconds an entry lives, or None for no expiry.
        namespace: kept apart from every other namespace's entries (exact partition).
        key: splits a prompt into `PromptKey` ``(text, partition)``; defaults to `default_prompt_key`.
        path: a snapshot file (see `bsc.SemanticCache`): loaded if it exists, and where `save` writes.
            Namespaces are stable hashes, so a snapshot serves the same models, conversations and
            ``namespace`` in a later process; use it with the embedding model that wrote it.
        autosave: also save to ``path`` when the interpreter exits.
        redis_url: share the cache with every worker and replica that uses this Redis (see
            `bsc.store`); lookups stay local. Fails open: with Redis down it keeps serving locally
            and logs one warning, never failing an LLM call.

    Raises:
        TypeError: if ``embedding`` is not a LangChain ``Embeddings``.
        ValueError: for a threshold outside [-1, 1], a non-positive ``max_entries`` or ``ttl``,
            ``autosave`` without ``path``, or a snapshot whose settings differ from the options.
        bsc.CacheFormatError: ``path`` exists but is not a valid snapshot.

    Example:
        >>> from langchain_core.globals import set_llm_cache
        >>> cache = BinarySemanticLLMCache()
        >>> set_llm_cache(cache)
        >>> from langchain_core.outputs import Generation
        >>> cache.update("What is the capital of France?", "model=x", [Generation(text="Paris")])
        >>> cache.lookup("Which city is the capital of France?", "model=x")[0].text
        'Paris'
        >>> cache.lookup("Which city is the capital of France?", "model=y") is None
        True
        >>> set_llm_cache(None)
    """

    def __init__(
        self,
        embedding: Embeddings | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        max_entries: int = 100_000,
        ttl: float | None = None,
        namespace: str = "default",
        key: PromptKeyFunction | None = None,
        path: str | os.PathLike[str] | None = None,
        autosave: bool = False,
        redis_url: str | None = None,
    ) -> None:
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
        # Lookups and updates go through this: a cache failure must not fail the model call.
        self._fail_open = fail_open_cache(
            embedding,
            threshold=threshold,
            max_entries=max_entries,
            ttl=ttl,
            path=path,
            autosave=autosave,
            store=None if redis_url is None else RedisStore(redis_url, fail_open=True),
        )
        self._cache = self._fail_open.cache
        self.namespace = namespace
        self._key: PromptKeyFunction = key if key is not None else default_prompt_key
        # Every bsc namespace this cache writes starts with this, so clear() can find them.
        self._prefix = f"lc:{_digest(namespace)}:"

    # ---------------------------------------------------------------- keys
    def _tenant_prefix(self) -> str:
        tenant = current_namespace()
        return self._prefix if tenant is None else f"{self._prefix}t{_digest(tenant)}:"

    def _llm_prefix(self, llm_string: str) -> str:
        return f"{self._tenant_prefix()}{_digest(llm_string)}:"

    def _locate(self, prompt: str, llm_string: str) -> tuple[str, str]:
        """(text to embed, bsc namespace) of a prompt under a model configuration."""
        if not isinstance(prompt, str) or not isinstance(llm_string, str):
            raise TypeError(
                "prompt and llm_string must be str, got "
                f"{type(prompt).__name__} and {type(llm_string).__name__}"
            )
        text, partition = self._key(prompt)
        return text, self._llm_prefix(llm_string) + _digest(partition)

    # ---------------------------------------------------------------- BaseCache
    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for ``prompt`` (or a paraphrase of its question) under ``llm_string``,
        as a new list, or None on a miss."""
        found = self.lookup_hit(prompt, llm_string)
        if found is None:
            return None
        report_hit(found[1])
        return found[0]

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """`lookup` that awaits the embedder instead of blocking the event loop."""
        found = await self.alookup_hit(prompt, llm_string)
        if found is None:
            return None
        await areport_hit(found[1])
        return found[0]

    def lookup_hit(self, prompt: str, llm_string: str) -> tuple[RETURN_VAL_TYPE, dict[str, Any]] | None:
        """`lookup` that also returns the hit's marker (``{"hit", "similarity", "exact"}``) and
        dispatches no event; the generations' messages carry the marker already."""
        text, namespace = self._locate(prompt, llm_string)
        return self._generations(self._fail_open.lookup(text, namespace=namespace))

    async def alookup_hit(
        self, prompt: str, llm_string: str
    ) -> tuple[RETURN_VAL_TYPE, dict[str, Any]] | None:
        """`lookup_hit` that awaits the embedder."""
        text, namespace = self._locate(prompt, llm_string)
        return self._generations(await self._fail_open.alookup(text, namespace=namespace))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Caches ``return_val`` for ``prompt`` under ``llm_string``; replaces an earlier answer to the
        identical prompt. Generations that LangChain cannot serialize are not cached."""
        text, namespace = self._locate(prompt, llm_string)
        value = dump(list(return_val))
        if value is not None:
            self._fail_open.update(text, value, namespace=namespace)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """`update` that awaits the embedder instead of blocking the event loop."""
        text, namespace = self._locate(prompt, llm_string)
        value = dump(list(return_val))
        if value is not None:
            await self._fail_open.aupdate(text, value, namespace=namespace)

    def clear(self, **kwargs: Any) -> None:
        """Removes every entry of this cache, or with ``llm_string=...`` only that model configuration's;
        inside a `cache_namespace` block, only that tenant's.

        Raises:
            TypeError: for a keyword other than ``llm_string``.
        """
        llm_string = kwargs.pop("llm_string", None)
        if kwargs:
            raise TypeError(f"clear() got unexpected keyword arguments {sorted(kwargs)}; expected llm_string")
        self._fail_open.clear_prefix(
            self._tenant_prefix() if llm_string is None else self._llm_prefix(llm_string)
        )

    async def aclear(self, **kwargs: Any) -> None:
        """`clear`; it embeds nothing and does not wait on I/O, so it runs inline."""
        self.clear(**kwargs)

    # ---------------------------------------------------------------- the rest
    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Writes a snapshot atomically to ``path``, or to the ``path`` given at construction.

        Raises:
            ValueError: no path given here or at construction.
            OSError: the file cannot be written.

        Example:
            >>> BinarySemanticLLMCache(path="llm_cache.bsc").save()  # doctest: +SKIP
        """
        self._cache.save(path)

    def stats(self) -> SemanticCacheStats:
        """Exact and semantic hits, misses, hit rate, guard rejections, entries and bytes in use.

        Example:
            >>> BinarySemanticLLMCache().stats().misses
            0
        """
        return self._cache.stats()

    def __len__(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        return f"BinarySemanticLLMCache(namespace={self.namespace!r}, cache={self._cache!r})"

    @staticmethod
    def _generations(hit: Any) -> tuple[RETURN_VAL_TYPE, dict[str, Any]] | None:
        if hit is None:
            return None
        ok, value = load(hit.response, GENERATION_CLASSES)
        # LangChain treats anything but a list as a miss; say so here rather than rely on it.
        if not ok or not isinstance(value, list):
            return None
        mark = marker(hit)
        generations: Sequence[Any] = value
        out = [
            g.model_copy(update={"message": marked(g.message, mark)}) if hasattr(g, "message") else g
            for g in generations
        ]
        return out, mark

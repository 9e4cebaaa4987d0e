"""`SemanticCacheRunnable`: a question-level semantic cache in front of any LangChain chain.

A RAG chain pastes the retrieved context into the model's prompt, so the prompt's embedding is
dominated by the context and two different questions over the same documents look alike to a
prompt-level cache. This wrapper keys the cache on the user's question itself, before retrieval: a hit
returns the chain's cached output without retrieving or generating anything.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bsc import DEFAULT_THRESHOLD, SemanticCacheStats
from bsc.digest import digest
from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.embeddings import Embeddings
from langchain_core.load import dumps
from langchain_core.load.serializable import Serializable
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from langchain_core.runnables.utils import accepts_config, gather_with_concurrency

from langchain_bsc._cache import fail_open_cache
from langchain_bsc._serialization import OUTPUT_CLASSES, dump, load
from langchain_bsc.hits import areport_hit, marked, marker, report_hit
from langchain_bsc.tenancy import namespace_from

__all__ = ["SemanticCacheRunnable"]

logger = logging.getLogger("langchain_bsc")

_MISS = object()

#: ``partition(input) -> str``, or ``partition(input, config) -> str`` (a parameter named ``config``).
_Partition = Callable[[Any], str] | Callable[[Any, RunnableConfig], str]


class SemanticCacheRunnable(Runnable[Any, Any]):
    """Wraps a chain so that a question already answered (or a paraphrase of it) is served from a cache.

    The question is taken from each input by ``key``. Everything else that can change the answer must
    match exactly: by default, for a mapping input with a field-name ``key``, every other field of the
    input (so ``{"question": q, "tenant": "a"}`` never gets tenant "b"'s answer); ``partition``
    overrides that. The call's ``config["configurable"]`` must match too (the ``session_id`` of a
    ``RunnableWithMessageHistory``, the choice of a ``configurable_alternatives`` model, a tenant id),
    compared as canonical JSON; keys starting with ``"__"`` are left out, as LangChain does for
    tracing, because they hold runtime objects (LangGraph's ``__pregel_*``), not choices. A call whose
    ``configurable`` holds a value JSON cannot represent bypasses the cache: it runs the chain and
    stores nothing. A ``partition`` with a parameter named ``config`` is called as
    ``partition(input, config=config)`` and then decides alone what of the config counts.

    Outputs are stored as LangChain JSON: strings, numbers, lists, dicts, messages, documents and
    generations by default (``allowed_objects`` widens that); an output that LangChain cannot
    serialize (a plain pydantic model, say) is returned but not cached.

    ``invoke``, ``ainvoke``, ``batch`` and ``abatch`` consult the cache (``batch`` embeds its questions
    in one call per partition and sends only the misses through the chain, in one ``chain.batch``;
    identical questions in one batch, under the same partition, run the chain once and share its
    output). ``stream`` falls back to ``invoke``, so it yields the whole output at once.

    A cache failure (an embedding server that is down, say) is logged and the chain answers: the
    call never fails because of the cache.

    A cached ``AIMessage`` output carries ``response_metadata["bsc_cache"]``; every hit is dispatched
    as the custom event ``"bsc_cache_hit"`` (see `langchain_bsc.hits`).

    Args:
        chain: the runnable to wrap (a retriever-and-model chain, usually).
        key: the input field holding the question, or ``key(input) -> question``; None when each
            input is the question itself (a str).
        partition: ``partition(input) -> str`` that must match exactly for a hit (besides the
            config's ``configurable``), or ``partition(input, config) -> str`` that replaces both;
            see above for the default.
        embedding: any LangChain ``Embeddings``; None uses bsc's local all-MiniLM-L6-v2 (offline).
        threshold: minimum cosine similarity of two questions for a hit.
        max_entries: capacity; the least recently used entry is evicted beyond it.
        ttl: seconds an entry lives, or None for no expiry.
        namespace: kept apart from every other namespace's entries.
        namespace_key: a key naming the tenant of a call, read from its ``config["configurable"]``
            or ``config["metadata"]``; each tenant gets its own partition. Without it (or when the
            call has no such key) a surrounding `cache_namespace` block names the tenant.
        allowed_objects: LangChain classes a cached output may contain.

    Raises:
        TypeError: if ``embedding`` is not a LangChain ``Embeddings``; at call time, if the question
            is not a str or a field-name ``key`` meets an input that is not a mapping.
        KeyError: at call time, if the input lacks the ``key`` field.

    Example:
        >>> from langchain_core.runnables import RunnableLambda
        >>> calls = []
        >>> def answer(inputs: dict) -> str:
        ...     calls.append(inputs["question"])
        ...     return "Paris"
        >>> cached = SemanticCacheRunnable(RunnableLambda(answer), key="question")
        >>> cached.invoke({"question": "What is the capital of France?"})
        'Paris'
        >>> cached.invoke({"question": "Which city is the capital of France?"})
        'Paris'
        >>> len(calls)
        1
    """

    def __init__(
        self,
        chain: Runnable[Any, Any],
        *,
        key: str | Callable[[Any], str] | None = None,
        partition: _Partition | None = None,
        embedding: Embeddings | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        max_entries: int = 100_000,
        ttl: float | None = None,
        namespace: str = "default",
        namespace_key: str | None = None,
        allowed_objects: Sequence[type[Serializable]] = OUTPUT_CLASSES,
    ) -> None:
        if not isinstance(chain, Runnable):
            raise TypeError(f"chain must be a LangChain Runnable, got {type(chain).__name__}")
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
        self.chain = chain
        self.key = key
        self.partition = partition
        self._partition_takes_config = partition is not None and accepts_config(partition)
        self.namespace = namespace
        self.namespace_key = namespace_key
        self.allowed_objects = tuple(allowed_objects)
        # Fail-open: an embedder that fails (a server down) costs a chain call, never the user's call.
        self._cache = fail_open_cache(embedding, threshold=threshold, max_entries=max_entries, ttl=ttl)

    # ---------------------------------------------------------------- Runnable plumbing
    @property
    def InputType(self) -> Any:
        """The wrapped chain's input type."""
        return self.chain.InputType

    @property
    def OutputType(self) -> Any:
        """The wrapped chain's output type."""
        return self.chain.OutputType

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        """``SemanticCache(<chain name>)`` so traces show what was wrapped."""
        return name or f"SemanticCache({self.chain.get_name()})" + (suffix or "")

    # ---------------------------------------------------------------- keys
    def _locate(self, input: Any, config: RunnableConfig) -> tuple[str, str] | None:
        """(question, bsc namespace) of one call, or None when the call must bypass the cache."""
        if self.key is None:
            question = input
        elif callable(self.key):
            question = self.key(input)
        else:
            if not isinstance(input, Mapping):
                raise TypeError(f"key={self.key!r} needs a mapping input, got {type(input).__name__}")
            question = input[self.key]
        if not isinstance(question, str):
            raise TypeError(
                f"the question must be a str, got {type(question).__name__}; "
                "pass key= to pick it from the input"
            )
        # Typed loosely: which of the two signatures it has was found by accepts_config.
        partition: Callable[..., str] | None = self.partition
        configurable: str | None = ""
        if partition is not None and self._partition_takes_config:
            exact = partition(input, config=config)
        else:
            configurable = _configurable_key(config)
            if configurable is None:
                logger.debug("not caching a call whose config['configurable'] is not JSON")
                return None
            if partition is not None:
                exact = partition(input)
            elif isinstance(self.key, str):
                rest = {k: v for k, v in input.items() if k != self.key}
                exact = dumps(rest, sort_keys=True) if rest else ""
            else:
                exact = ""
        tenant = namespace_from(self.namespace_key, config.get("configurable"), config.get("metadata"))
        key = json.dumps([self.namespace, exact, configurable] + ([] if tenant is None else [tenant]))
        return question, f"chain:{digest(key).hex()}"

    def _output(self, hit: Any) -> Any:
        if hit is None:
            return _MISS
        ok, value = load(hit.response, self.allowed_objects)
        if not ok:
            return _MISS
        return marked(value, marker(hit)) if isinstance(value, AIMessage) else value

    def _store(self, question: str, namespace: str, output: Any) -> None:
        value = dump(output)
        if value is not None:
            self._cache.update(question, value, namespace=namespace)

    # ---------------------------------------------------------------- invoke
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """The cached output for the input's question, or the chain's output (then cached)."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    def _invoke(
        self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig, **kwargs: Any
    ) -> Any:
        located = self._locate(input, config)
        if located is None:
            return self.chain.invoke(input, config, **kwargs)
        question, namespace = located
        hit = self._cache.lookup(question, namespace=namespace)
        cached = self._output(hit)
        if hit is not None and cached is not _MISS:
            report_hit(marker(hit), run_manager)
            return cached
        output = self.chain.invoke(input, config, **kwargs)
        self._store(question, namespace, output)
        return output

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """`invoke` that awaits the embedder and the chain."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig, **kwargs: Any
    ) -> Any:
        located = self._locate(input, config)
        if located is None:
            return await self.chain.ainvoke(input, config, **kwargs)
        question, namespace = located
        hit = await self._cache.alookup(question, namespace=namespace)
        cached = self._output(hit)
        if hit is not None and cached is not _MISS:
            await areport_hit(marker(hit), run_manager)
            return cached
        output = await self.chain.ainvoke(input, config, **kwargs)
        value = dump(output)
        if value is not None:
            await self._cache.aupdate(question, value, namespace=namespace)
        return output

    # ---------------------------------------------------------------- batch
    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """`invoke` for many inputs: questions embedded together, only the misses sent through the chain
        (in one ``chain.batch``)."""
        if not inputs:
            return []

        def run(
            inputs: list[Any], run_manager: list[CallbackManagerForChainRun], config: list[RunnableConfig]
        ) -> list[Any]:
            return self._batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

        # _batch_with_config keeps return_exceptions to itself, hence the closure.
        return self._batch_with_config(run, inputs, config, return_exceptions=return_exceptions)

    def _batch(
        self,
        inputs: list[Any],
        config: list[RunnableConfig],
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        outputs: list[Any] = [_MISS] * len(inputs)
        located: list[tuple[str, str] | None] = [None] * len(inputs)
        by_namespace: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for i, (item, item_config) in enumerate(zip(inputs, config, strict=True)):
            # Each input is keyed on its own, so one that cannot be keyed fails alone (as in abatch).
            try:
                where = self._locate(item, item_config)
            except Exception as exc:
                if not return_exceptions:
                    raise
                outputs[i] = exc
                continue
            located[i] = where
            if where is not None:
                by_namespace[where[1]].append((i, where[0]))
        for namespace, rows in by_namespace.items():
            hits = self._cache.lookup_many([question for _, question in rows], namespace=namespace)
            for (i, _), hit in zip(rows, hits, strict=True):
                outputs[i] = self._output(hit)
        # Misses with the same question under the same partition run the chain once.
        first_of: dict[tuple[str, str], int] = {}
        duplicates: dict[int, int] = {}
        misses: list[int] = []
        for i, out in enumerate(outputs):
            if out is not _MISS:
                continue
            where = located[i]
            if where is not None and where in first_of:
                duplicates[i] = first_of[where]
                continue
            if where is not None:
                first_of[where] = i
            misses.append(i)
        if misses:
            fresh = self.chain.batch(
                [inputs[i] for i in misses],
                [config[i] for i in misses],
                return_exceptions=return_exceptions,
                **kwargs,
            )
            for i, out in zip(misses, fresh, strict=True):
                outputs[i] = out
                where = located[i]
                if where is not None and not isinstance(out, Exception):
                    self._store(*where, out)
        for i, source in duplicates.items():
            outputs[i] = outputs[source]
        return outputs

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """`batch` that awaits the embedder (one lookup per input, concurrently) and the chain."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        # Identical questions under the same partition run once (the rest share the first's output);
        # every other input is its own traced run, as in Runnable.abatch, and hits or misses alone.
        first_of: dict[tuple[str, str], int] = {}
        source = list(range(len(inputs)))
        for i, (item, item_config) in enumerate(zip(inputs, configs, strict=True)):
            try:
                where = self._locate(item, item_config)
            except Exception:  # reported by the input's own run below
                continue
            if where is not None:
                source[i] = first_of.setdefault(where, i)
        unique = sorted(set(source))
        results = await gather_with_concurrency(
            configs[0].get("max_concurrency"),
            *(self._ainvoke_safe(inputs[i], configs[i], return_exceptions, **kwargs) for i in unique),
        )
        by_index = dict(zip(unique, results, strict=True))
        return [by_index[source[i]] for i in range(len(inputs))]

    async def _ainvoke_safe(
        self, input: Any, config: RunnableConfig, return_exceptions: bool, **kwargs: Any
    ) -> Any:
        if not return_exceptions:
            return await self.ainvoke(input, config, **kwargs)
        try:
            return await self.ainvoke(input, config, **kwargs)
        except Exception as exc:
            return exc

    # ---------------------------------------------------------------- the rest
    def clear(self) -> None:
        """Forgets every cached output."""
        self._cache.cache.clear()

    def stats(self) -> SemanticCacheStats:
        """Exact and semantic hits, misses, hit rate, guard rejections, entries and bytes in use."""
        return self._cache.cache.stats()


def _configurable_key(config: RunnableConfig) -> str | None:
    """Canonical JSON of the config's ``configurable`` without ``"__"`` keys; None if not JSON."""
    configurable = {
        k: v
        for k, v in (config.get("configurable") or {}).items()
        if not (isinstance(k, str) and k.startswith("__"))
    }
    if not configurable:
        return ""
    try:
        return json.dumps(
            configurable, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError):  # an object, a circular structure, mixed key types, NaN
        return None

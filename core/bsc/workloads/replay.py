"""Replay a request stream through a real `SemanticCache` and measure what it saves.

Every request is looked up; a miss is answered by a *simulated* upstream LLM (its latency and price follow
`CostModel`, nothing is slept or paid) and the answer is stored. The cache, its guard and its embedder are
the real ones. With `PrecomputedEmbedder` the embeddings are computed once, in batches, by the real model
before the replay, so lookups measure the cache without the model's ~10 ms per text; the hit decisions
are the same.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bsc.embedders import Embedder
from bsc.embedders.protocol import _EmbedderBase
from bsc.text_cache import SemanticCache
from bsc.workloads.requests import Request, distinct_prompts

__all__ = [
    "CostModel",
    "PlanRow",
    "PrecomputedEmbedder",
    "ReplayResult",
    "format_report",
    "plan_table",
    "replay",
]

logger = logging.getLogger(__name__)

_MB = 1_000_000


@dataclass(frozen=True, slots=True)
class CostModel:
    """The simulated upstream: a hosted GPT-4o-class API (list prices, typical throughput), as in
    ``bsc demo``. An answer without a logged ``output_tokens`` gets 80-320 tokens, fixed per label (or
    prompt), so every request for one answer costs the same.

    Example:
        >>> CostModel().dollars(1000, 100)
        0.0035
    """

    first_token_seconds: float = 0.40
    seconds_per_output_token: float = 0.012
    dollars_per_input_token: float = 2.50 / 1_000_000
    dollars_per_output_token: float = 10.00 / 1_000_000
    chars_per_token: int = 4

    def input_tokens(self, request: Request) -> int:
        """Prompt length in tokens (characters / ``chars_per_token``, context included)."""
        return max(1, (len(request.prompt) + len(request.context)) // self.chars_per_token)

    def output_tokens(self, request: Request) -> int:
        """The answer's length: logged, or 80-320 tokens chosen by a hash of the label (or prompt)."""
        if request.output_tokens is not None:
            return request.output_tokens
        key = (request.label if request.label is not None else request.prompt).encode()
        return 80 + int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little") % 241

    def seconds(self, output_tokens: int) -> float:
        """Latency of one upstream call."""
        return self.first_token_seconds + self.seconds_per_output_token * output_tokens

    def dollars(self, input_tokens: int, output_tokens: int) -> float:
        """Price of one upstream call."""
        return input_tokens * self.dollars_per_input_token + output_tokens * self.dollars_per_output_token


class PrecomputedEmbedder(_EmbedderBase):
    """An embedder that answers from vectors the wrapped model computed once, in batches.

    Texts it was not given up front are embedded by the wrapped model on demand (and kept). The name is
    the wrapped model's, so snapshots and hit decisions are those of the real model.

    Args:
        embedder: the real model.
        texts: texts to embed now.
        batch_size: texts per call to the model while precomputing.

    Example:
        >>> fast = PrecomputedEmbedder(default_embedder(), ["hello", "hi"])  # doctest: +SKIP
        >>> fast.embed(["hi"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, embedder: Embedder, texts: Iterable[str], *, batch_size: int = 256) -> None:
        self._inner = embedder
        self._dim = embedder.dim
        unique = list(dict.fromkeys(texts))
        self._vectors: dict[str, npt.NDArray[np.float32]] = {}
        self._overflow: dict[str, bool] = {}
        start = time.perf_counter()
        for i in range(0, len(unique), batch_size):
            self._add(unique[i : i + batch_size])
        self.seconds = time.perf_counter() - start
        logger.info("precomputed %d embeddings in %.1f s", len(unique), self.seconds)

    def _add(self, batch: list[str]) -> None:
        if not batch:
            return
        vectors = self._inner.embed(batch)
        check = getattr(self._inner, "overflows", None)
        long = list(check(batch)) if callable(check) else [False] * len(batch)
        for text, v, over in zip(batch, vectors, long, strict=True):
            self._vectors[text] = v
            self._overflow[text] = over

    @property
    def name(self) -> str:
        return self._inner.name

    def overflows(self, texts: list[str]) -> list[bool]:
        """As the wrapped model says (asked once per text)."""
        self._add([t for t in dict.fromkeys(texts) if t not in self._overflow])
        return [self._overflow[t] for t in texts]

    def _embed_batch(self, texts: list[str]) -> object:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            self._add(missing)
        return np.stack([self._vectors[t] for t in texts])

    async def _aembed_batch(self, texts: list[str]) -> object:
        return self._embed_batch(texts)


@dataclass(slots=True)
class ReplayResult:
    """What a replay measured. Rates are shares of all requests, but ``false_hit_rate`` is false hits over
    hits whose request and cached entry are both labelled (the share of served answers that are wrong);
    ``false_hits_per_lookup`` is false hits over all requests. Memory is the cache's index and rerank
    copies (``CacheStats.bytes_per_entry``), not responses or prompts."""

    workload: str
    eviction: str
    capacity: int
    distinct_prompts: int
    embeddings: str
    requests: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    false_hits: int = 0
    labelled_hits: int = 0
    evictions: int = 0
    lookup_ms_p50: float = 0.0
    lookup_ms_p99: float = 0.0
    update_ms_p50: float = 0.0
    bytes_per_entry: float = 0.0
    tokens_total: int = 0
    tokens_saved: int = 0
    dollars_total: float = 0.0
    dollars_saved: float = 0.0
    llm_seconds_total: float = 0.0
    llm_seconds_saved: float = 0.0
    hits_by_kind: dict[str, int] = field(default_factory=dict)
    requests_by_kind: dict[str, int] = field(default_factory=dict)
    #: hit rate per window of the stream, in order (``curve_points`` windows).
    hit_rate_curve: list[float] = field(default_factory=list)
    #: per false hit: (the request's position in the stream, the position of the request that stored the
    #: entry it was served), for telling which entries serve wrong answers.
    false_hit_sources: list[tuple[int, int]] = field(default_factory=list)
    #: false hits whose request's own answer (an entry stored under its label) was in the cache at the time.
    false_hits_own_answer_cached: int = 0

    @property
    def hits(self) -> int:
        return self.exact_hits + self.semantic_hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def false_hit_rate(self) -> float:
        return self.false_hits / self.labelled_hits if self.labelled_hits else 0.0

    @property
    def false_hits_per_lookup(self) -> float:
        return self.false_hits / self.requests if self.requests else 0.0

    @property
    def cost_savings(self) -> float:
        return self.dollars_saved / self.dollars_total if self.dollars_total else 0.0

    @property
    def memory_mb_per_100k(self) -> float:
        return self.bytes_per_entry * 100_000 / _MB

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the fields and the derived rates."""
        out = asdict(self)
        rates = ("hit_rate", "false_hit_rate", "false_hits_per_lookup", "cost_savings", "memory_mb_per_100k")
        for name in rates:
            out[name] = getattr(self, name)
        return out


def replay(
    requests: Sequence[Request],
    cache: SemanticCache,
    *,
    workload: str = "log",
    cost: CostModel | None = None,
    progress: bool = False,
    curve_points: int = 50,
) -> ReplayResult:
    """Sends every request through ``cache`` (lookup; on a miss, a simulated LLM call and an update).

    Args:
        requests: the stream, in order.
        cache: the cache to measure (its embedder, guard, capacity and eviction policy are used as given).
        workload: a name for the report.
        cost: the simulated upstream (default `CostModel()`).
        progress: show a progress bar on stderr (tqdm, when installed).
        curve_points: windows of the hit-rate-over-time curve.

    Example:
        >>> result = replay([Request("hi"), Request("hi")], SemanticCache())  # doctest: +SKIP
        >>> result.exact_hits  # doctest: +SKIP
        1
    """
    cost = cost or CostModel()
    inner = cache.cache
    embeddings = "precomputed" if isinstance(cache.embedder, PrecomputedEmbedder) else "live"
    result = ReplayResult(
        workload=workload,
        eviction=str(getattr(inner, "eviction", "lru")),
        capacity=inner.max_entries,
        distinct_prompts=distinct_prompts(requests),
        embeddings=embeddings,
    )
    lookups: list[float] = []
    updates: list[float] = []
    hit_flags = np.zeros(len(requests), dtype=bool)
    # (namespace, prompt) -> (label, stream position) of the request that stored it; label -> its entries
    stored_by: dict[tuple[str, str], tuple[str | None, int]] = {}
    entries_of: dict[tuple[str, str], list[int]] = {}
    evictions_before = inner.stats().evictions
    for i, request in enumerate(_progress(requests, workload, progress)):
        ns = request.namespace
        t0 = time.perf_counter()
        hit = cache.lookup(request.prompt, namespace=ns)
        lookups.append(time.perf_counter() - t0)
        tokens_in, tokens_out = cost.input_tokens(request), cost.output_tokens(request)
        price = cost.dollars(tokens_in, tokens_out)
        result.tokens_total += tokens_in + tokens_out
        result.dollars_total += price
        result.llm_seconds_total += cost.seconds(tokens_out)
        kind = request.kind or "unknown"
        result.requests_by_kind[kind] = result.requests_by_kind.get(kind, 0) + 1
        if hit is None:
            t0 = time.perf_counter()
            entry = cache.update(request.prompt, _answer(request), namespace=ns)
            updates.append(time.perf_counter() - t0)
            stored_by[(ns, request.prompt)] = (request.label, i)
            if request.label is not None:
                entries_of.setdefault((ns, request.label), []).append(entry)
            continue
        hit_flags[i] = True
        result.exact_hits += hit.exact
        result.semantic_hits += not hit.exact
        result.hits_by_kind[kind] = result.hits_by_kind.get(kind, 0) + 1
        result.tokens_saved += tokens_in + tokens_out
        result.dollars_saved += price
        result.llm_seconds_saved += cost.seconds(tokens_out)
        stored, at = stored_by.get((ns, hit.prompt or ""), (None, -1))
        if request.label is not None and stored is not None:
            result.labelled_hits += 1
            if stored != request.label:
                result.false_hits += 1
                result.false_hit_sources.append((i, at))
                own = entries_of.get((ns, request.label), [])
                result.false_hits_own_answer_cached += any(e in inner for e in own)
    result.requests = len(requests)
    result.evictions = inner.stats().evictions - evictions_before
    result.lookup_ms_p50, result.lookup_ms_p99 = (float(v) * 1e3 for v in np.percentile(lookups, [50, 99]))
    result.update_ms_p50 = float(np.median(updates)) * 1e3 if updates else 0.0
    result.bytes_per_entry = inner.stats().bytes_per_entry
    windows = np.array_split(hit_flags, max(1, min(curve_points, len(requests))))
    result.hit_rate_curve = [float(w.mean()) for w in windows if len(w)]
    return result


def _answer(request: Request) -> str:
    # A deterministic stand-in for the upstream's answer; it names the label, so a false hit is visible.
    return f"simulated answer for {request.label or request.prompt[:40]}"


def _progress(requests: Sequence[Request], desc: str, enabled: bool) -> Iterator[Request]:
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            logger.info("tqdm is not installed: no progress bar")
        else:
            yield from tqdm(requests, desc=desc, unit="req", file=sys.stderr, leave=False, ncols=88)
            return
    yield from requests


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One criterion of the original plan's success table, with its three bars and the measured value."""

    criterion: str
    value: float
    unit: str
    minimum: float
    target: float
    stretch: float
    higher_is_better: bool

    @property
    def reached(self) -> str:
        """The best bar met: "stretch", "target", "minimum", or "missed"."""
        for name in ("stretch", "target", "minimum"):
            bar = getattr(self, name)
            if (self.value >= bar) if self.higher_is_better else (self.value < bar):
                return name
        return "missed"


def plan_table(result: ReplayResult) -> list[PlanRow]:
    """The original plan's criteria (hit rate, lookup overhead at p50, memory per 100K entries,
    estimated cost savings) with minimum / target / stretch, for ``result``.

    Example:
        >>> [row.criterion for row in plan_table(ReplayResult("w", "lru", 10, 10, "live"))]
        ['hit rate', 'lookup overhead (p50)', 'memory per 100K entries', 'cost savings']
    """
    return [
        PlanRow("hit rate", 100 * result.hit_rate, "%", 20, 35, 50, True),
        PlanRow("lookup overhead (p50)", result.lookup_ms_p50, "ms", 50, 20, 10, False),
        PlanRow("memory per 100K entries", result.memory_mb_per_100k, "MB", 500, 200, 100, False),
        PlanRow("cost savings", 100 * result.cost_savings, "%", 20, 35, 50, True),
    ]


def format_report(result: ReplayResult) -> str:
    """A short text report of one replay, with the plan table.

    Example:
        >>> print(format_report(result))  # doctest: +SKIP
    """
    r = result
    lines = [
        f"workload {r.workload}: {r.requests} requests, {r.distinct_prompts} distinct prompts; "
        f"capacity {r.capacity}, eviction {r.eviction}, embeddings {r.embeddings}",
        f"  hits {r.hits} ({100 * r.hit_rate:.1f} %): exact {r.exact_hits}, semantic {r.semantic_hits}; "
        f"false hits {r.false_hits} of {r.labelled_hits} labelled hits ({100 * r.false_hit_rate:.2f} %; "
        f"{100 * r.false_hits_per_lookup:.2f} % of requests)",
        f"  lookup p50 {r.lookup_ms_p50:.3f} ms, p99 {r.lookup_ms_p99:.3f} ms; "
        f"update p50 {r.update_ms_p50:.3f} ms; evictions {r.evictions}",
        f"  saved {r.tokens_saved:,} of {r.tokens_total:,} tokens, ${r.dollars_saved:.2f} of "
        f"${r.dollars_total:.2f}, {r.llm_seconds_saved / 3600:.2f} of {r.llm_seconds_total / 3600:.2f} "
        "upstream hours (simulated LLM)",
        "  by kind (hits / requests): "
        + ", ".join(f"{k} {r.hits_by_kind.get(k, 0)}/{n}" for k, n in sorted(r.requests_by_kind.items())),
        "",
        f"  {'criterion':<26}{'measured':>12}{'minimum':>10}{'target':>10}{'stretch':>10}  reached",
    ]
    for row in plan_table(r):
        op = ">=" if row.higher_is_better else "<"
        lines.append(
            f"  {row.criterion:<26}{format(row.value, '.3g'):>9} {row.unit:<2}"
            f"{op + format(row.minimum, 'g'):>10}{op + format(row.target, 'g'):>10}"
            f"{op + format(row.stretch, 'g'):>10}  {row.reached}"
        )
    if r.embeddings == "precomputed":
        lines.append("  (precomputed embeddings: the lookup overhead leaves out the model's time per text)")
    return "\n".join(lines)

"""What the proxy counts: Prometheus metrics for ``/metrics`` and the recent history behind the dashboard.

Each app owns its registry (not prometheus-client's global one), so several apps in one process (tests,
benchmarks) count separately. Cache-side numbers (entries, guard rejections, exact vs semantic hits) are
read from `bsc.SemanticCache.stats` at scrape time rather than counted twice.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bsc import SemanticCache
from bsc.guard import FalseHitGuard, PreparedPrompt

__all__ = ["OUTCOMES", "ProxyMetrics", "RecordingGuard"]

OUTCOMES = ("hit", "miss", "bypass", "error")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SERIES_SECONDS = 10  # one dashboard point per 10 s
_SERIES_POINTS = 360  # an hour of history
_TOP_PROMPTS = 10
_TRACKED_PROMPTS = 1000
_RECENT_REJECTIONS = 20


class RecordingGuard(FalseHitGuard):
    """The default `FalseHitGuard` that also reports each refusal (for the dashboard's recent list).

    Example:
        >>> seen = []
        >>> guard = RecordingGuard(lambda q, c, rule: seen.append(rule))
        >>> guard.check("What is 15% of 80?", "What is 25% of 80?")
        'numbers'
        >>> seen
        ['numbers']
    """

    def __init__(self, on_reject: Callable[[str, str, str], None]) -> None:
        super().__init__()
        self._on_reject = on_reject

    def check(self, query: str, cached: str) -> str | None:
        rule = super().check(query, cached)
        if rule is not None:
            self._on_reject(query, cached, rule)
        return rule

    def check_prepared(self, query: PreparedPrompt, cached: PreparedPrompt) -> str | None:
        # What `SemanticCache` calls: the prompts analysed once, reported as they were given.
        rule = super().check_prepared(query, cached)
        if rule is not None:
            self._on_reject(query.source, cached.source, rule)
        return rule


class _CacheCollector(Collector):
    """Exposes the cache's own counters at scrape time."""

    def __init__(self, cache: SemanticCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self._cache.stats()
        yield GaugeMetricFamily("bsc_cache_entries", "Entries in the cache.", value=len(self._cache))
        hits = CounterMetricFamily(
            "bsc_cache_lookup_hits", "Cache lookups answered, by kind.", labels=["kind"]
        )
        hits.add_metric(["exact"], stats.exact_hits)
        hits.add_metric(["semantic"], stats.semantic_hits)
        yield hits
        yield CounterMetricFamily(
            "bsc_cache_lookup_misses", "Cache lookups not answered.", value=stats.misses
        )
        yield CounterMetricFamily(
            "bsc_guard_rejections",
            "Semantic candidates the false-hit guard refused.",
            value=stats.guard_rejections,
        )
        yield CounterMetricFamily(
            "bsc_embed_seconds", "Time spent embedding prompts.", value=stats.embed_seconds
        )
        replication = getattr(self._cache.cache, "replication", None)
        if replication is not None:  # a cache shared through Redis (bsc.store.ReplicatedCache)
            state = replication()
            yield GaugeMetricFamily(
                "bsc_shared_store_connected",
                "1 while the shared store (Redis) is reachable, 0 during an outage.",
                value=int(state.connected),
            )
            yield CounterMetricFamily(
                "bsc_shared_store_lost_writes",
                "Answers, deletes and clears kept local because Redis was unreachable (served anyway).",
                value=state.lost_writes,
            )


@dataclass(slots=True)
class _Point:
    start: float
    hit: int = 0
    miss: int = 0
    bypass: int = 0
    error: int = 0


class ProxyMetrics:
    """Counters, histograms and the dashboard's history for one proxy app.

    Args:
        clock: wall-clock seconds (injectable for tests of the time series).

    Example:
        >>> m = ProxyMetrics()
        >>> m.count("chat", "hit")
        >>> m.dashboard()["totals"]["hit"]
        1
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bsc_requests",
            "Requests by endpoint and outcome (hit, miss, bypass, error).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.bypasses = Counter(
            "bsc_bypass", "Requests passed through uncached, by reason.", ["reason"], registry=r
        )
        self.hit_latency = Histogram(
            "bsc_hit_latency_seconds",
            "Time to answer a hit inside the proxy (embedding included).",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "bsc_upstream_latency_seconds",
            "Time until upstream's response headers arrived.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_saved = Counter(
            "bsc_tokens_saved",
            "Tokens upstream did not have to process, from cached usage.",
            ["kind"],
            registry=r,
        )
        self.dollars_saved = Counter(
            "bsc_dollars_saved", "Estimated US dollars saved by hits (usage x the price table).", registry=r
        )
        self.unpriced_hits = Counter(
            "bsc_unpriced_hits",
            "Hits whose model has no price in the table (no dollars counted).",
            registry=r,
        )
        self.cache_errors = Counter(
            "bsc_cache_errors",
            "Cache operations that failed; the request was served from upstream.",
            ["operation"],
            registry=r,
        )
        self.stream_interruptions = Counter(
            "bsc_stream_interruptions", "Upstream streams that ended early (nothing was stored).", registry=r
        )
        self._cache: SemanticCache | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._series: deque[_Point] = deque(maxlen=_SERIES_POINTS)
        self._totals = dict.fromkeys(OUTCOMES, 0)
        self._tokens = 0.0
        self._dollars = 0.0
        self._top: dict[str, int] = {}
        self._rejections: deque[dict[str, Any]] = deque(maxlen=_RECENT_REJECTIONS)

    def watch(self, cache: SemanticCache) -> None:
        """Exports ``cache``'s own numbers (read at scrape time); called once, when the cache exists."""
        self._cache = cache
        self.registry.register(_CacheCollector(cache))

    # ---------------------------------------------------------------- recording
    def count(self, endpoint: str, outcome: str, *, reason: str | None = None) -> None:
        """Counts one finished request."""
        self.requests.labels(endpoint, outcome).inc()
        if reason is not None:
            self.bypasses.labels(reason).inc()
        now = self._clock()
        with self._lock:
            start = now - now % _SERIES_SECONDS
            if not self._series or self._series[-1].start != start:
                self._series.append(_Point(start))
            point = self._series[-1]
            setattr(point, outcome, getattr(point, outcome) + 1)
            self._totals[outcome] += 1

    def saved(
        self, prompt: str | None, prompt_tokens: int, completion_tokens: int, dollars: float | None
    ) -> None:
        """Records what a hit saved, and which cached prompt answered it."""
        self.tokens_saved.labels("prompt").inc(prompt_tokens)
        self.tokens_saved.labels("completion").inc(completion_tokens)
        if dollars is None:
            self.unpriced_hits.inc()
        else:
            self.dollars_saved.inc(dollars)
        with self._lock:
            self._tokens += prompt_tokens + completion_tokens
            self._dollars += dollars or 0.0
            if prompt is not None:
                self._top[prompt] = self._top.get(prompt, 0) + 1
                if len(self._top) > _TRACKED_PROMPTS:  # keep the most used half
                    kept = sorted(self._top.items(), key=lambda kv: kv[1], reverse=True)[
                        : _TRACKED_PROMPTS // 2
                    ]
                    self._top = dict(kept)

    def rejected(self, query: str, cached: str, rule: str) -> None:
        """Remembers a guard refusal for the dashboard."""
        with self._lock:
            self._rejections.appendleft(
                {"time": self._clock(), "query": query, "cached": cached, "rule": rule}
            )

    # ---------------------------------------------------------------- reading
    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    def dashboard(self) -> dict[str, Any]:
        """What the dashboard shows, as JSON data."""
        entries = 0 if self._cache is None else len(self._cache)
        rejections = 0 if self._cache is None else self._cache.stats().guard_rejections
        with self._lock:
            served = self._totals["hit"] + self._totals["miss"]
            return {
                "time": self._clock(),
                "totals": dict(self._totals),
                "hit_rate": self._totals["hit"] / served if served else 0.0,
                "tokens_saved": self._tokens,
                "dollars_saved": self._dollars,
                "entries": entries,
                "guard_rejections": rejections,
                "series_seconds": _SERIES_SECONDS,
                "series": [
                    {"start": p.start, "hit": p.hit, "miss": p.miss, "bypass": p.bypass, "error": p.error}
                    for p in self._series
                ],
                "top_prompts": [
                    {"prompt": p, "hits": n}
                    for p, n in sorted(self._top.items(), key=lambda kv: kv[1], reverse=True)[:_TOP_PROMPTS]
                ],
                "recent_rejections": list(self._rejections),
            }

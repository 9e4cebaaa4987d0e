"""Seeded, reproducible request streams drawn from a labelled `Pool`.

Every request picks a *topic* (a group of the pool) from a Zipf distribution over a seeded ranking of
the groups. The first request of a topic sends its canonical prompt; later ones send, in the shares the
spec gives, an *exact* repeat of a prompt already sent for the topic, a *paraphrase* (another prompt of the
group), or a *near-miss* (a prompt of another group that looks alike: a cached answer would be wrong).
Variants:

- *drift*: the ranking rotates ``drift_phases`` times over the stream, so topics rise and fall;
- *burst*: a contiguous block in the middle of the stream of one-off prompts (the canonical prompts of
  groups kept out of the topics, each sent once): a scan that a good eviction policy does not let flush
  the cache.

The same pool, spec and seed always give the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bsc.workloads.pools import Group, Pool
from bsc.workloads.requests import Request

__all__ = ["WORKLOADS", "WorkloadSpec", "generate", "scaled"]


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What a generated stream looks like.

    Attributes:
        name: the workload's name, for reports.
        requests: stream length.
        zipf: exponent of the topic popularity (1.0: the k-th topic is k times rarer than the first).
        exact, paraphrase, near_miss: relative shares of the three kinds of repeat visit of a topic.
        drift_phases: how many times the popularity ranking moves on (0: a stationary stream).
        burst: share of the stream that is one burst of one-off prompts (at most half the pool's groups).
        seed: the random seed.

    Example:
        >>> WorkloadSpec("mine", requests=500, zipf=1.2, seed=7).requests
        500
    """

    name: str
    requests: int = 10_000
    zipf: float = 1.0
    exact: float = 0.35
    paraphrase: float = 0.5
    near_miss: float = 0.15
    drift_phases: int = 0
    burst: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.requests, int) or self.requests < 1:
            raise ValueError(f"requests must be a positive integer, got {self.requests!r}")
        if not self.zipf >= 0:
            raise ValueError(f"zipf must be >= 0, got {self.zipf!r}")
        shares = (self.exact, self.paraphrase, self.near_miss)
        if min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"exact, paraphrase, near_miss must be >= 0 and not all 0, got {shares}")
        if not isinstance(self.drift_phases, int) or self.drift_phases < 0:
            raise ValueError(f"drift_phases must be an integer >= 0, got {self.drift_phases!r}")
        if not 0 <= self.burst < 1:
            raise ValueError(f"burst must be a share in [0, 1), got {self.burst!r}")


#: The built-in workloads (`bsc replay --workload NAME`, `benchmarks/replay.py`).
WORKLOADS: dict[str, WorkloadSpec] = {
    spec.name: spec
    for spec in (
        WorkloadSpec("skewed-paraphrase"),
        WorkloadSpec("drift", drift_phases=4),
        WorkloadSpec("burst", burst=0.3),
    )
}


def generate(pool: Pool, spec: WorkloadSpec) -> list[Request]:
    """The request stream ``spec`` describes, drawn from ``pool``; labels are the pool's group labels.

    Raises:
        ValueError: the pool has no groups (or none left for topics after the burst's).

    Example:
        >>> from bsc.workloads.pools import builtin_pool
        >>> stream = generate(builtin_pool(), WorkloadSpec("demo", requests=100, seed=1))
        >>> stream == generate(builtin_pool(), WorkloadSpec("demo", requests=100, seed=1))
        True
    """
    if not pool.groups:
        raise ValueError(f"pool {pool.name!r} has no groups")
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(pool.groups))
    n_burst = min(round(spec.burst * spec.requests), len(pool.groups) // 2)
    one_offs = [pool.groups[i] for i in order[:n_burst]]
    topics = [pool.groups[i] for i in order[n_burst:]]
    if not topics:
        raise ValueError(f"pool {pool.name!r} has too few groups for topics")
    label_of = pool.label_of()
    ranks = np.arange(1, len(topics) + 1, dtype=np.float64)
    popularity = ranks**-spec.zipf
    popularity /= popularity.sum()
    shares = np.array([spec.exact, spec.paraphrase, spec.near_miss], dtype=np.float64)
    shares /= shares.sum()
    n_topical = spec.requests - n_burst
    drawn = rng.choice(len(topics), size=n_topical, p=popularity)
    if spec.drift_phases:
        # Phase k shifts every rank by k/phases of the topic list: the hot set moves on.
        phase = np.arange(n_topical) * (spec.drift_phases + 1) // n_topical
        drawn = (drawn + phase * (len(topics) // (spec.drift_phases + 1))) % len(topics)
    kinds = rng.choice(3, size=n_topical, p=shares)
    sent: dict[int, list[str]] = {}
    stream: list[Request] = []
    for t, k in zip(drawn.tolist(), kinds.tolist(), strict=True):
        stream.append(_visit(topics[t], sent.setdefault(t, []), k, label_of, rng))
    burst = [Request(g.prompts[0], label=g.label, kind="one_off") for g in one_offs]
    middle = len(stream) // 2
    stream[middle:middle] = burst
    return stream


def _visit(
    group: Group, sent: list[str], kind: int, label_of: dict[str, str], rng: np.random.Generator
) -> Request:
    """One request for ``group``; ``sent`` lists the prompts already sent for it (updated)."""
    if not sent:
        sent.append(group.prompts[0])
        return Request(group.prompts[0], label=group.label, kind="first")
    others = group.prompts[1:]
    if kind == 2 and group.near_misses:
        prompt = group.near_misses[int(rng.integers(len(group.near_misses)))]
        return Request(prompt, label=label_of.get(prompt, f"{group.label}:near"), kind="near_miss")
    if kind >= 1 and others:
        prompt = others[int(rng.integers(len(others)))]
        if prompt not in sent:
            sent.append(prompt)
        return Request(prompt, label=group.label, kind="paraphrase")
    return Request(sent[int(rng.integers(len(sent)))], label=group.label, kind="exact")


def scaled(spec: WorkloadSpec, requests: int, seed: int | None = None) -> WorkloadSpec:
    """``spec`` with another length (and seed).

    Example:
        >>> scaled(WORKLOADS["drift"], 200).requests
        200
    """
    return replace(spec, requests=requests, seed=spec.seed if seed is None else seed)

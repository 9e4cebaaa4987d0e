"""PNG plots of replays: hit rate over the stream, and hit rate against cache size, one line per policy.

Needs matplotlib (``pip install "bsc-cache[plot]"``); it is imported only when a plot is drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bsc.workloads.replay import ReplayResult

__all__ = ["plot_results"]


def plot_results(results: Sequence[ReplayResult], path: str | os.PathLike[str], *, title: str = "") -> None:
    """Writes a PNG: hit rate over the stream for each (policy, capacity) run at the largest capacity,
    and, when there are several capacities, final hit rate against capacity (% of distinct prompts).

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: ``results`` is empty.

    Example:
        >>> plot_results([result], "replay.png")  # doctest: +SKIP
    """
    if not results:
        raise ValueError("no replay results to plot")
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    capacities = sorted({r.capacity for r in results})
    policies = list(dict.fromkeys(r.eviction for r in results))
    panels = 2 if len(capacities) > 1 else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    over_time = axes[0][0]
    shown = capacities[len(capacities) // 2]
    for r in results:
        if r.capacity == shown:
            xs = [(i + 0.5) / len(r.hit_rate_curve) * r.requests for i in range(len(r.hit_rate_curve))]
            over_time.plot(xs, [100 * v for v in r.hit_rate_curve], label=r.eviction)
    over_time.set_xlabel("request")
    over_time.set_ylabel("hit rate per window (%)")
    over_time.set_title(f"over the stream, capacity {shown}")
    over_time.legend()
    if panels == 2:
        by_size = axes[0][1]
        for policy in policies:
            runs = sorted((r for r in results if r.eviction == policy), key=lambda r: r.capacity)
            by_size.plot(
                [100 * r.capacity / r.distinct_prompts for r in runs],
                [100 * r.hit_rate for r in runs],
                marker="o",
                label=policy,
            )
        by_size.set_xscale("log")
        by_size.set_xlabel("capacity (% of distinct prompts)")
        by_size.set_ylabel("hit rate (%)")
        by_size.set_title("against cache size")
        by_size.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)

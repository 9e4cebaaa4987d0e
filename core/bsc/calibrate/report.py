"""Rendering a `Calibration`: markdown tables (``report.md`` and the terminal summary), ``report.json`` and
PNG plots (matplotlib, from the ``calibrate`` extra; imported only here, only when plotting).

Example:
    >>> write_report(calibration, "calibration/")  # doctest: +SKIP
    ['calibration/report.md', 'calibration/report.json', 'calibration/recall_vs_bytes.png', ...]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from bsc.calibrate.campaign import Calibration
from bsc.calibrate.labelled import CurvePoint, Recommendation

__all__ = ["PLOTS", "markdown", "summary", "write_report"]

PLOTS = ("recall_vs_bytes.png", "precision_recall.png", "similarity_hist.png")


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _band(band: str | None) -> str:
    return "-" if band is None else "**RED**" if band == "red" else band


def _ratio(value: float | None, band: str | None) -> str:
    return "-" if value is None else f"{value:.2f}x {_band(band)}"


def _queries(c: Calibration) -> str:
    return "Each prompt" if c.queries == c.prompts else f"Each of {c.queries} sampled prompts"


def _memory_section(c: Calibration) -> list[str]:
    binary_rows, memory_rows, notes = [], [], set()
    for bits in c.bits:
        binary, pq, int8 = c.at_size(bits)
        assert binary.retrieval is not None
        r, b = binary.retrieval, c.bands(bits)
        binary_rows.append(
            [
                str(bits),
                _f(r.recall_at_1),
                _f(r.recall_at_10),
                _band(b.recall_at_10),
                _f(r.overlap_at_10),
                _band(b.overlap_at_10),
                _f(r.ndcg_at_10),
            ]
        )
        if pq.note:
            notes.add(pq.note)
        memory_rows.append(
            [
                str(bits // 8),
                f"{_f(r.recall_at_10)} / {_f(r.overlap_at_10)}",
                f"{_f(pq.retrieval.recall_at_10)} / {_f(pq.retrieval.overlap_at_10)}"
                if pq.retrieval
                else "skipped",
                _ratio(b.vs_pq_recall, b.vs_pq_recall_band),
                _ratio(b.vs_pq_overlap, b.vs_pq_overlap_band),
                f"{_f(int8.retrieval.recall_at_10)} / {_f(int8.retrieval.overlap_at_10)}"
                if int8.retrieval
                else "-",
            ]
        )
    lines = [
        "## Binary codes against exact float search",
        "",
        f"{_queries(c)} looks up its 10 nearest other prompts among all {c.prompts}. R@k: the exact nearest",
        "neighbour is in the top k (what a rerank shortlist needs); overlap@10: share of the exact top 10",
        "found; nDCG@10 graded by exact rank. Bands: >= 0.65 green, 0.55-0.65 yellow, below red (the",
        "campaign judges 256 and 512 bits).",
        "",
        *_table(["bits", "R@1", "R@10", "band", "overlap@10", "band", "nDCG@10"], binary_rows),
        "",
        "## Binary vs PQ vs int8 at equal bytes per entry",
        "",
        "R@10 / overlap@10 of each at the same bytes (binary: 8 bits a byte; PQ: faiss IndexPQ, one",
        "8-bit sub-quantiser a byte; int8: that many top SVD directions, 8 bits each). binary / PQ: green",
        ">= 0.80x, red < 0.5x.",
        "",
        *_table(
            ["bytes", "binary", "PQ", "binary / PQ (R@10)", "binary / PQ (overlap@10)", "int8"], memory_rows
        ),
        "",
        *(f"PQ: {note}." for note in sorted(notes)),
    ]
    lines += [
        "",
        "Every metric of each representation (int8-full: every dimension in 8 bits, what the two-stage",
        "rerank stores):",
        "",
        *_table(["bytes", "method", "R@1", "R@10", "nDCG@10", "overlap@10", "note"], _metric_rows(c)),
        "",
    ]
    ratios = [c.bands(b).vs_pq_recall for b in c.bits]
    measured = [x for x in ratios if x is not None]
    if measured and max(measured) < 0.5:
        lines.append("**RED: binary Recall@10 is below half of PQ's at every measured size.**")
    return [*lines, ""]


def _metric_rows(c: Calibration) -> list[list[str]]:
    order = {"binary": 0, "pq": 1, "int8": 2, "int8-full": 3}
    rows = []
    for q in sorted(c.quantizers, key=lambda q: (q.bytes_per_entry, order.get(q.method, 4))):
        r = q.retrieval
        metrics = () if r is None else (r.recall_at_1, r.recall_at_10, r.ndcg_at_10, r.overlap_at_10)
        scores = [_f(x) for x in metrics] if metrics else ["-"] * 4
        rows.append([str(q.bytes_per_entry), q.method, *scores, q.note or ""])
    return rows


def _agreement_section(c: Calibration) -> list[str]:
    thresholds = sorted({a.threshold for a in c.agreement})
    skipped = {(q.method, 8 * q.bytes_per_entry): q.note for q in c.quantizers if q.retrieval is None}
    rows = []
    for mode in ("two-stage", "binary-only", "pq", "int8", "int8-full"):  # the cache's, then quantisers
        for bits in (8 * c.dim,) if mode == "int8-full" else c.bits:
            n = bits // 8
            size = f"{n} + {c.dim}" if mode == "two-stage" else str(n)
            cells = {a.threshold: a for a in c.agreement if a.mode == mode and a.bits == bits}
            if cells:
                rows.append([mode, str(bits), size, *(_f(cells[t].agreement) for t in thresholds)])
            elif (mode, bits) in skipped:
                rows.append([mode, str(bits), size, *("skipped" for _ in thresholds)])
    at_default = [a for a in c.agreement if a.mode == "two-stage" and a.threshold == c.code_size.threshold]
    worst = min(at_default, key=lambda a: a.agreement)
    return [
        "## Cache decisions against exact float decisions",
        "",
        f"Share of lookups ({_queries(c).lower()} against all others, in a real BinarySemanticCache)",
        "where the cache and exact float search at the same threshold make the same decision: both miss,",
        "or the same entry. pq and int8 decide the same way on their own similarity estimate of their",
        "nearest entry (PQ's asymmetric inner product; int8's dequantised dot product over the top SVD",
        "directions) at the code's bytes per entry. Both estimates run low (PQ's centroids shrink an entry;",
        "int8 below dim bytes leaves out the dropped directions' share), so they miss more than they",
        "mistake. The two-stage cache also keeps a full int8 copy: its peer at equal memory is int8-full.",
        "",
        *_table(["mode", "bits", "bytes per entry", *(f"t={t:.2f}" for t in thresholds)], rows),
        "",
        f"Float search hits on {worst.float_hit_rate:.1%} of lookups at t={worst.threshold:.2f}. At "
        f"{worst.bits} bits the two-stage cache misses {worst.missed:.1%} that float hits, adds "
        f"{worst.extra:.1%} that float misses and picks another entry on {worst.other:.1%}.",
        "",
    ]


def _diagnostics_section(c: Calibration) -> list[str]:
    g = c.geometry
    balance = [
        [
            str(b.bits),
            _f(b.max_share),
            _f(b.min_share),
            _f(b.mean_abs_deviation),
            f"{b.unbalanced_bits}/{b.bits}",
            "ok" if b.balanced else "**unbalanced**",
        ]
        for b in c.bit_balance
    ]
    return [
        "## Bit balance and geometry",
        "",
        *_table(
            ["bits", "max share set", "min share set", "mean distance from 0.5", "bits outside 40-60 %", ""],
            balance,
        ),
        "",
        *_table(
            ["diagnostic", "value"],
            [
                ["anisotropy (mean cosine between prompts)", _f(g.anisotropy)],
                ["outlier fraction (robust z < -3 from the mean direction)", _f(g.outlier_fraction)],
                ["intrinsic dimension, TwoNN", _f(g.intrinsic_dim_twonn, 1)],
                ["intrinsic dimension, PCA components for 90 % variance", str(g.intrinsic_dim_pca90)],
                [
                    "angle between random prompts (mean ± sd, degrees)",
                    f"{g.mean_angle_deg:.1f} ± {g.std_angle_deg:.1f}",
                ],
                ["median angle to the nearest prompt (degrees)", f"{g.median_nn_angle_deg:.1f}"],
            ],
        ),
        "",
    ]


def _curve_rows(points: list[CurvePoint], mode: str, bits: int, thresholds: list[float]) -> list[list[str]]:
    chosen = {p.threshold: p for p in points if p.mode == mode and p.bits == bits}
    return [
        [
            mode,
            f"{t:.2f}",
            f"{chosen[t].hit_rate:.1%}",
            _f(chosen[t].precision),
            _f(chosen[t].recall),
            f"{chosen[t].false_hit_rate:.1%} ({chosen[t].false_hits}/{chosen[t].hits})",
        ]
        for t in thresholds
    ]


def _recommendation_lines(rec: Recommendation) -> list[str]:
    p = rec.point
    if p is None or rec.false_hit_rate_interval is None or rec.hit_rate_interval is None:
        return [f"- {rec.mode}: {rec.reason}."]
    low, high = rec.false_hit_rate_interval
    hit_low, hit_high = rec.hit_rate_interval
    lines = [
        f"- **{rec.mode}: threshold {p.threshold:.2f} at {p.bits} bits** — {rec.reason}. Hit rate "
        f"{p.hit_rate:.1%} (95 % CI {hit_low:.1%}-{hit_high:.1%}), precision {p.precision:.3f}, recall "
        f"{p.recall:.3f}, false-hit rate {p.false_hit_rate:.1%} (95 % Wilson CI {low:.1%}-{high:.1%}).",
    ]
    if rec.confirmed:
        lines.append(f"  The interval's upper end is within the {rec.target_false_hit_rate:.1%} target.")
    elif rec.pairs_needed is not None:
        lines.append(
            f"  Not confirmed: the upper end {high:.1%} exceeds the {rec.target_false_hit_rate:.1%} target; "
            f"about {rec.pairs_needed} labelled pairs like these would confirm it."
        )
    else:
        lines.append(
            "  Not confirmed, and the measured rate is too close to the target for any sample to confirm it."
        )
    return lines


def _labelled_section(c: Calibration) -> list[str]:
    if c.recommendation is None or c.recommendation_without_guard is None:
        return [
            "## Threshold",
            "",
            "No labelled pairs were given, so only the code size is recommended. Label a sample of your "
            "prompt pairs (q1<TAB>q2<TAB>label, 1 = the same answer is right) and pass it with --pairs: to "
            f"confirm a false-hit rate <= {c.target_false_hit_rate:.1%} with 95 % confidence the interval "
            f"needs about {c.pairs_needed} labelled pairs (half of them accepted by the cache).",
            "",
        ]
    chosen = c.recommendation.point
    bits = chosen.bits if chosen is not None else c.code_size.bits
    thresholds = [0.80, 0.85, 0.88, 0.90, 0.92, 0.95]
    rows = [
        *_curve_rows(c.curve, "float", 0, thresholds),
        *_curve_rows(c.curve, "two-stage", bits, thresholds),
        *_curve_rows(c.curve, "two-stage + guard", bits, thresholds),
    ]
    positives = c.curve[0].positives
    return [
        "## Hit quality on the labelled pairs",
        "",
        f"{c.pairs} pairs ({positives} label 1): q2's answer cached, q1 looked up. False-hit rate = "
        f"wrong hits / hits. Two-stage rows at {bits} bits; every size and threshold is in report.json.",
        "",
        *_table(["mode", "threshold", "hit rate", "precision", "recall", "false-hit rate"], rows),
        "",
        "## Recommendation",
        "",
        f"Rule: the highest hit rate whose false-hit rate is <= {c.target_false_hit_rate:.1%} "
        "(ties: fewer bits, then the higher threshold).",
        "",
        *_recommendation_lines(c.recommendation),
        *_recommendation_lines(c.recommendation_without_guard),
        "",
    ]


def _code_size_lines(c: Calibration) -> list[str]:
    s = c.code_size
    lines = [
        "## Code size from the prompts alone",
        "",
        f"**{s.bits} bits** ({s.bits // 8} bytes a code): {s.reason} (lowest: {s.agreement:.3f} at "
        f"t={s.threshold:.2f}). Agreement falls as the cache grows: measure with about as many prompts "
        "as the cache will hold.",
    ]
    if c.recommendation is not None and c.recommendation.point is not None:
        lines.append(
            f"The labelled pairs' recommendation below picks {c.recommendation.point.bits} bits; use the "
            "larger of the two sizes."
        )
    return [*lines, ""]


def _header(c: Calibration) -> list[str]:
    dropped = f", {c.duplicates_dropped} exact repeats dropped" if c.duplicates_dropped else ""
    return [
        "# bsc calibrate",
        "",
        f"Embedder `{c.embedder}` ({c.dim} dimensions), {c.prompts} distinct prompts{dropped}, "
        f"{c.pairs} labelled pairs; code sizes {', '.join(map(str, c.bits))} bits.",
        "",
    ]


def markdown(c: Calibration, *, with_plots: bool = True) -> str:
    """The full report as markdown (``report.md``), linking the PNG plots if ``with_plots``."""
    plots = ["## Plots", "", *(f"![{name}]({name})" for name in PLOTS), ""] if with_plots else []
    return "\n".join(
        [
            *_header(c),
            *_code_size_lines(c),
            *_labelled_section(c),
            *_memory_section(c),
            *_agreement_section(c),
            *_diagnostics_section(c),
            *plots,
        ]
    )


def summary(c: Calibration) -> str:
    """The terminal summary: the settings, the threshold advice, the equal-memory tables and the decision
    agreement."""
    return "\n".join(
        [
            *_header(c),
            *_code_size_lines(c),
            *_labelled_section(c),
            *_memory_section(c),
            *_agreement_section(c),
        ]
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def as_json(c: Calibration) -> dict[str, Any]:
    """The calibration as plain JSON values (NaN becomes null), with the bands at each code size."""
    data: dict[str, Any] = _jsonable(dataclasses.asdict(c))
    data["bands"] = {str(b): _jsonable(dataclasses.asdict(c.bands(b))) for b in c.bits}
    return data


def plot(c: Calibration, out: Path) -> list[Path]:
    """Writes the PNG plots into ``out``; returns their paths. Needs matplotlib.

    Raises:
        ImportError: matplotlib is not installed.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    written = []
    # 1. recall vs bytes, binary / PQ / int8 at equal memory
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric, title in (
        (axes[0], "recall_at_10", "Recall@10 (exact NN in the top 10)"),
        (axes[1], "overlap_at_10", "overlap@10 (share of exact top 10)"),
    ):
        for method, style in (("binary", "o-"), ("pq", "s--"), ("int8", "^:")):
            pts = sorted(
                (q.bytes_per_entry, getattr(q.retrieval, metric))
                for q in c.quantizers
                if q.method == method and q.retrieval is not None
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method)
        ax.axhspan(0.55, 0.65, color="gold", alpha=0.15)
        ax.axhline(0.65, color="green", lw=0.8, ls="--")
        ax.axhline(0.55, color="red", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bytes per entry (binary bits = 8 x bytes)")
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{c.embedder}: {c.prompts} prompts vs exact float search")
    written.append(out / PLOTS[0])
    fig.savefig(written[-1], dpi=110)

    # 2. precision-recall and precision-hit rate per mode
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    rec = c.recommendation.point if c.recommendation is not None else None
    bits = rec.bits if rec is not None else c.code_size.bits
    for mode, b in (("float", 0), ("two-stage", bits), ("two-stage + guard", bits)):
        series = sorted((p for p in c.curve if p.mode == mode and p.bits == b), key=lambda p: p.threshold)
        label = mode if mode == "float" else f"{mode} ({b} bits)"
        axes[0].plot([p.recall for p in series], [p.precision for p in series], ".-", label=label)
        axes[1].plot([p.hit_rate for p in series], [p.precision for p in series], ".-", label=label)
    if rec is not None:
        axes[1].plot([rec.hit_rate], [rec.precision], "k*", ms=12, label=f"recommended t={rec.threshold:.2f}")
    axes[1].axhline(
        1 - c.target_false_hit_rate,
        color="grey",
        ls="--",
        lw=0.8,
        label=f"precision at the {c.target_false_hit_rate:.0%} false-hit target",
    )
    for ax, xlabel in ((axes[0], "recall"), (axes[1], "hit rate")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not c.curve:
        fig.text(0.5, 0.5, "no labelled pairs (--pairs)", ha="center", va="center", fontsize=14)
    fig.suptitle("Hit quality vs threshold (0.70-0.99) on the labelled pairs")
    written.append(out / PLOTS[1])
    fig.savefig(written[-1], dpi=110)

    # 3. similarity histograms, positives vs negatives
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    if c.pair_cosines is not None:
        positives, negatives = c.pair_cosines
        edges = [i / 50 for i in range(-10, 51)]
        ax.hist(positives, bins=edges, alpha=0.6, label=f"same answer (1), n={len(positives)}")
        ax.hist(negatives, bins=edges, alpha=0.6, label=f"different answer (0), n={len(negatives)}")
        if rec is not None:
            ax.axvline(rec.threshold, color="k", ls="--", label=f"recommended t={rec.threshold:.2f}")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no labelled pairs (--pairs)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("float cosine of the pair")
    ax.set_ylabel("pairs")
    ax.set_title("Similarity of labelled pairs")
    written.append(out / PLOTS[2])
    fig.savefig(written[-1], dpi=110)
    return written


def write_report(c: Calibration, out: str | os.PathLike[str], *, plots: bool = True) -> list[Path]:
    """Writes ``report.md``, ``report.json`` and (if ``plots``) the PNG plots into directory ``out``,
    created if needed; returns the paths written.

    Raises:
        OSError: ``out`` cannot be created or written.
        ImportError: ``plots`` is set and matplotlib is not installed (the text reports are written first).
    """
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / "report.md", directory / "report.json"
    md.write_text(markdown(c, with_plots=plots), encoding="utf-8")
    js.write_text(json.dumps(as_json(c), indent=1), encoding="utf-8")
    return [md, js, *(plot(c, directory) if plots else [])]

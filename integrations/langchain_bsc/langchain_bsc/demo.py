"""`bsc demo`: a realistic prompt stream through a LangChain chat model, without and with the cache.

Offline by design: the chat model is simulated (`SimulatedChatModel`) and the embedder is the packaged
local MiniLM. Upstream latency and cost follow a stated model of a hosted API instead of being slept or
billed, so the demo finishes in seconds and its numbers are reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, TextIO

from bsc.cache import DEFAULT_THRESHOLD
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

__all__ = [
    "DemoPrompt",
    "DemoResult",
    "SimulatedChatModel",
    "add_arguments",
    "load_prompts",
    "run",
    "run_demo",
]

SYSTEM_PROMPT = "You are the support assistant of Acme Inc. Answer in at most three sentences."

# The simulated upstream: a hosted GPT-4o-class API (list prices, typical throughput).
FIRST_TOKEN_SECONDS = 0.40
SECONDS_PER_OUTPUT_TOKEN = 0.012
DOLLARS_PER_INPUT_TOKEN = 2.50 / 1_000_000
DOLLARS_PER_OUTPUT_TOKEN = 10.00 / 1_000_000
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class DemoPrompt:
    """One prompt of the stream: ``kind`` is first | repeat | paraphrase | near_miss, and a cached
    answer is correct for it iff it was produced for a prompt of the same ``group``."""

    prompt: str
    group: str
    kind: str


def load_prompts(path: str | None = None) -> list[DemoPrompt]:
    """The demo stream: ``path`` (JSON lines with prompt, group, kind) or the one langchain_bsc ships.

    Raises:
        OSError: ``path`` cannot be read.
        ValueError: a line is not a JSON object with str ``prompt``, ``group`` and ``kind`` (the
            message names the file and the line), or the file is not UTF-8.

    Example:
        >>> load_prompts()[0].kind
        'first'
    """
    source = "the shipped prompts" if path is None else path
    try:
        text = (
            files("langchain_bsc").joinpath("demo_data", "prompts.jsonl").read_text(encoding="utf-8")
            if path is None
            else Path(path).read_text(encoding="utf-8")
        )
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{source}, line {number}: not JSON ({exc})") from None
        found = [row.get(name) for name in _PROMPT_FIELDS] if isinstance(row, dict) else []
        fields = [f for f in found if isinstance(f, str)]
        if len(fields) != len(_PROMPT_FIELDS):
            raise ValueError(
                f"{source}, line {number}: expected an object with string fields "
                f"{', '.join(_PROMPT_FIELDS)}, got {line.strip()[:80]}"
            )
        prompts.append(DemoPrompt(*fields))
    return prompts


_PROMPT_FIELDS = ("prompt", "group", "kind")


def _cosine(text: str) -> float:
    """``--threshold``: a cosine similarity in [-1, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [-1, 1], got {text!r}") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine similarity is in [-1, 1], got {text}")
    return value


def _count(text: str) -> int:
    """``--limit``: a number of prompts, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {text}")
    return value


def _tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


class SimulatedChatModel(BaseChatModel):
    """A LangChain chat model that answers locally and counts its upstream calls.

    Each call counts as one upstream request and records the latency and cost a hosted model would
    have had (``FIRST_TOKEN_SECONDS`` plus ``SECONDS_PER_OUTPUT_TOKEN`` per output token; list prices
    per token). Answers are deterministic and name the call that produced them. ``sleep=True`` sleeps
    for the simulated latency instead of only recording it.

    Example:
        >>> model = SimulatedChatModel()
        >>> model.invoke("Hello?").content.startswith("[simulated answer 1]")
        True
        >>> model.upstream_calls
        1
    """

    model_name: str = "simulated-gpt"
    temperature: float = 0.0
    sleep: bool = False
    upstream_calls: int = 0
    last_latency: float = 0.0
    last_cost: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "bsc-simulated-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        question = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        self.upstream_calls += 1
        seed = int.from_bytes(hashlib.blake2b(question.encode(), digest_size=4).digest(), "little")
        output_tokens = 80 + seed % 240
        input_tokens = sum(_tokens(m.text) for m in messages)
        self.last_latency = FIRST_TOKEN_SECONDS + SECONDS_PER_OUTPUT_TOKEN * output_tokens
        self.last_cost = input_tokens * DOLLARS_PER_INPUT_TOKEN + output_tokens * DOLLARS_PER_OUTPUT_TOKEN
        if self.sleep:
            time.sleep(self.last_latency)
        message = AIMessage(
            content=f"[simulated answer {self.upstream_calls}] {self.model_name} on: {question}",
            usage_metadata={
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
            response_metadata={"model_name": self.model_name, "simulated_latency_s": self.last_latency},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


@dataclass
class _Pass:
    """What one pass over the stream measured."""

    latencies: list[float] = field(default_factory=list)
    hit_latencies: list[float] = field(default_factory=list)
    upstream_calls: int = 0
    cost: float = 0.0
    hits_by_kind: dict[str, int] = field(default_factory=dict)
    false_hits: list[tuple[str, str]] = field(default_factory=list)  # (prompt, prompt whose answer it got)


@dataclass(frozen=True)
class DemoResult:
    """The demo's numbers (also printed): without and with the cache."""

    prompts: int
    kinds: dict[str, int]
    upstream_without: int
    upstream_with: int
    exact_hits: int
    semantic_hits: int
    false_hits: list[tuple[str, str]]
    hits_by_kind: dict[str, int]
    p50_without: float
    p95_without: float
    p50_with: float
    p95_with: float
    mean_without: float
    mean_with: float
    p50_hit: float
    cost_without: float
    cost_with: float


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _progress(items: Sequence[DemoPrompt], desc: str, enabled: bool) -> Iterator[DemoPrompt]:
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            yield from tqdm(items, desc=desc, unit="prompt", file=sys.stderr, leave=True, ncols=88)
            return
    yield from items


def _run_pass(
    model: SimulatedChatModel, stream: Sequence[DemoPrompt], desc: str, progress: bool
) -> tuple[_Pass, dict[str, DemoPrompt]]:
    result = _Pass()
    produced_for: dict[str, DemoPrompt] = {}  # answer text -> the prompt it was generated for
    for item in _progress(stream, desc, progress):
        before = model.upstream_calls
        start = time.perf_counter()
        answer = model.invoke([SystemMessage(SYSTEM_PROMPT), HumanMessage(item.prompt)])
        elapsed = time.perf_counter() - start
        content = str(answer.content)
        if model.upstream_calls > before:
            result.upstream_calls += 1
            result.cost += model.last_cost
            produced_for[content] = item
            # Simulated time is added, not slept (unless the model sleeps, then it is in `elapsed`).
            elapsed += 0.0 if model.sleep else model.last_latency
        else:
            result.hits_by_kind[item.kind] = result.hits_by_kind.get(item.kind, 0) + 1
            result.hit_latencies.append(elapsed)
            source = produced_for.get(content)
            if source is not None and source.group != item.group:
                result.false_hits.append((item.prompt, source.prompt))
        result.latencies.append(elapsed)
    return result, produced_for


def run_demo(
    stream: Sequence[DemoPrompt] | None = None,
    *,
    out: TextIO | None = None,
    progress: bool = True,
    threshold: float | None = None,
) -> DemoResult:
    """Sends ``stream`` (default: the shipped prompts) through a simulated chat model twice, without
    and with ``set_llm_cache(BinarySemanticLLMCache())``, and prints the comparison to ``out``.

    The global LangChain cache is restored afterwards.

    Example:
        >>> import io
        >>> result = run_demo(load_prompts()[:8], out=io.StringIO(), progress=False)
        >>> result.upstream_with < result.upstream_without
        True
    """
    from langchain_core.globals import get_llm_cache, set_llm_cache

    from langchain_bsc import BinarySemanticLLMCache

    out = out if out is not None else sys.stdout
    prompts = list(stream) if stream is not None else load_prompts()
    kinds: dict[str, int] = {}
    for p in prompts:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1

    _print_header(out, prompts, kinds)
    start = time.perf_counter()
    cache = BinarySemanticLLMCache(threshold=DEFAULT_THRESHOLD if threshold is None else threshold)
    print(f"Local embedding model loaded in {time.perf_counter() - start:.1f} s.\n", file=out, flush=True)

    previous = get_llm_cache()
    try:
        set_llm_cache(None)
        without, _ = _run_pass(SimulatedChatModel(), prompts, "without cache", progress)
        set_llm_cache(cache)
        with_cache, _ = _run_pass(SimulatedChatModel(), prompts, "with cache   ", progress)
    finally:
        set_llm_cache(previous)

    stats = cache.stats()
    result = DemoResult(
        prompts=len(prompts),
        kinds=kinds,
        upstream_without=without.upstream_calls,
        upstream_with=with_cache.upstream_calls,
        exact_hits=stats.exact_hits,
        semantic_hits=stats.semantic_hits,
        false_hits=with_cache.false_hits,
        hits_by_kind=with_cache.hits_by_kind,
        p50_without=_percentile(without.latencies, 50),
        p95_without=_percentile(without.latencies, 95),
        p50_with=_percentile(with_cache.latencies, 50),
        p95_with=_percentile(with_cache.latencies, 95),
        mean_without=_mean(without.latencies),
        mean_with=_mean(with_cache.latencies),
        p50_hit=_percentile(with_cache.hit_latencies, 50),
        cost_without=without.cost,
        cost_with=with_cache.cost,
    )
    _print_report(out, result, with_cache, stats)
    return result


def _configure_process() -> None:
    """Process-wide settings for the CLI run (not applied when `run_demo` is called as a library)."""
    # transformers' "Loading weights" bar would interleave with the demo's own progress bars.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # No thread setting needed: the default embedder (bsc's Rust encoder) runs on one thread.


def _print_header(out: TextIO, prompts: Sequence[DemoPrompt], kinds: dict[str, int]) -> None:
    p = print
    p("bsc demo: a LangChain chat model without and with set_llm_cache(BinarySemanticLLMCache())", file=out)
    p("", file=out)
    p(
        "THE LLM IS SIMULATED: no network, no API key. Answers are generated locally; each upstream call",
        file=out,
    )
    p("is charged the latency and price of a hosted GPT-4o-class API:", file=out)
    p(
        f"  latency = {FIRST_TOKEN_SECONDS:.2f} s + {SECONDS_PER_OUTPUT_TOKEN * 1000:.0f} ms x output tokens "
        "(80-320 tokens an answer)",
        file=out,
    )
    p(
        f"  price   = ${DOLLARS_PER_INPUT_TOKEN * 1e6:.2f} / 1M input tokens, "
        f"${DOLLARS_PER_OUTPUT_TOKEN * 1e6:.2f} / 1M output tokens",
        file=out,
    )
    p(
        "  A request's latency = the measured time of model.invoke() (cache lookup and local embedding",
        file=out,
    )
    p("  included) + the simulated upstream time when the model was called (added, not slept).", file=out)
    p("", file=out)
    described = ", ".join(f"{n} {k.replace('_', '-')}" for k, n in kinds.items())
    p(f"Prompt stream: {len(prompts)} prompts shipped with bsc ({described});", file=out)
    p("a hit is correct iff the cached answer was generated for the same intent group.", file=out)
    p("Loading the local embedding model (all-MiniLM-L6-v2, offline)...", file=out, flush=True)


def _print_report(out: TextIO, result: DemoResult, with_cache: _Pass, stats: Any) -> None:
    hits = result.exact_hits + result.semantic_hits
    n = result.prompts
    saved = result.cost_without - result.cost_with

    def row(label: str, before: str, after: str) -> str:
        return f"  {label:<22}{before:>14}    {after}"

    p = print
    p("", file=out)
    p(row("", "without cache", "with the cache"), file=out)
    p(row("upstream LLM calls", str(result.upstream_without), str(result.upstream_with)), file=out)
    hit_rate = f"{hits / n:.1%}" if n else "-"
    p(
        row("hit rate", "-", f"{hit_rate} ({result.exact_hits} exact + {result.semantic_hits} semantic)"),
        file=out,
    )
    p(row("false hits", "-", f"{len(result.false_hits)} of {hits} hits"), file=out)
    p(row("latency p50", f"{result.p50_without:.2f} s", f"{result.p50_with:.2f} s"), file=out)
    p(row("latency p95", f"{result.p95_without:.2f} s", f"{result.p95_with:.2f} s"), file=out)
    p(row("latency mean", f"{result.mean_without:.2f} s", f"{result.mean_with:.2f} s"), file=out)
    if hits:
        p(row("latency of a hit (p50)", "-", f"{result.p50_hit * 1000:.1f} ms (measured)"), file=out)
    p(row("estimated cost", f"${result.cost_without:.4f}", f"${result.cost_with:.4f}"), file=out)
    p("", file=out)
    share = saved / result.cost_without if result.cost_without else 0.0
    p(
        f"Saved: {result.upstream_without - result.upstream_with} upstream calls and ${saved:.4f} "
        f"({share:.0%}) on {n} prompts; at this hit rate, ${saved / n * 1_000_000:,.0f} per million requests."
        if n
        else "Saved: nothing (no prompts).",
        file=out,
    )
    by_kind = ", ".join(
        f"{kind.replace('_', '-')} {result.hits_by_kind.get(kind, 0)}/{count}"
        for kind, count in result.kinds.items()
    )
    p(f"Served from cache by kind: {by_kind}\n  (near-misses must stay at 0).", file=out)
    for prompt, source in result.false_hits:
        p(f"  FALSE HIT: {prompt!r} got the answer to {source!r}", file=out)
    p(
        f"Cache: {stats.cache.entries} entries, {stats.cache.bytes_per_entry:.0f} bytes each; "
        f"{stats.guard_rejections} candidates refused by the false-hit guard;\n  "
        f"{stats.embedded_texts} texts embedded in {stats.embed_seconds:.1f} s, "
        f"searches took {stats.search_seconds * 1000:.1f} ms in total.",
        file=out,
    )
    p("The LLM above was simulated; the cache, the embedder and the LangChain calls were real.", file=out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``bsc demo`` options to ``parser``."""
    parser.add_argument(
        "--prompts", metavar="PATH", help="JSON-lines prompt stream (default: the shipped one)"
    )
    parser.add_argument("--limit", type=_count, metavar="N", help="use only the first N prompts")
    parser.add_argument(
        "--threshold", type=_cosine, help="cosine threshold for a hit, in [-1, 1] (default: bsc's)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Runs ``bsc demo`` with parsed arguments; returns the exit status."""
    stream: Iterable[DemoPrompt] = load_prompts(args.prompts)
    prompts = list(stream)[: args.limit] if args.limit is not None else list(stream)
    _configure_process()
    start = time.perf_counter()
    run_demo(prompts, progress=not args.no_progress, threshold=args.threshold)
    print(f"Demo finished in {time.perf_counter() - start:.1f} s.")
    return 0

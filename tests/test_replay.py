"""`bsc replay` and the replay harness end to end, offline, with the real default embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bsc.cli import main
from bsc.text_cache import SemanticCache
from bsc.workloads import PrecomputedEmbedder, Request, WorkloadSpec, builtin_pool, generate, replay

LOG = [
    {"prompt": "What is the capital of France?", "label": "france", "kind": "first"},
    {"prompt": "What is the capital of France?", "label": "france", "kind": "exact"},
    {"prompt": "Which city is the capital of France?", "label": "france", "kind": "paraphrase"},
    {"prompt": "What is 15% of 80?", "label": "p15", "kind": "first"},
    {"prompt": "What is 25% of 80?", "label": "p25", "kind": "near_miss"},
    {
        "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "label": "france-fr",
    },
]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in LOG), encoding="utf-8")
    return path


def test_replay_cli_on_a_jsonl_log_with_live_embeddings(
    single_thread_default_embedder: object, log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    status = main(["replay", str(log_path), "--embeddings", "live", "--json", str(out), "--no-progress"])
    assert status == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["requests"] == 6
    assert result["exact_hits"] == 1  # the verbatim repeat
    assert result["semantic_hits"] == 1  # the paraphrase; the near-miss and the other system prompt miss
    assert result["false_hits"] == 0 and result["labelled_hits"] == 2
    assert result["hits_by_kind"] == {"exact": 1, "paraphrase": 1}
    assert result["embeddings"] == "live"
    assert 0 < result["dollars_saved"] < result["dollars_total"]
    report = capsys.readouterr().out
    assert "hit rate" in report and "cost savings" in report and "simulated" in report


def test_replay_cli_on_a_generated_workload_writes_json_plot_and_log(
    single_thread_default_embedder: object, tmp_path: Path
) -> None:
    out, png, log = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "w.jsonl"
    args = ["replay", "--workload", "drift", "--requests", "300", "--seed", "5", "--capacity-share", "0.5"]
    args += ["--eviction", "sieve"]
    status = main([*args, "--json", str(out), "--plot", str(png), "--write-log", str(log), "--no-progress"])
    assert status == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["requests"] == 300 and result["embeddings"] == "precomputed"
    assert result["eviction"] == "sieve" and result["evictions"] > 0
    assert result["capacity"] == round(0.5 * result["distinct_prompts"])
    assert result["hit_rate"] > 0.3  # a skewed stream over ~40 intents repeats itself
    assert result["false_hit_rate"] < 0.2
    assert len(result["hit_rate_curve"]) == 50
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(log.read_text(encoding="utf-8").splitlines()) == 300


def test_replay_cli_rejects_a_bad_log_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"messages": "oops"}\n', encoding="utf-8")
    assert main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "'messages' must be a non-empty list" in err
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    assert "No such file" in capsys.readouterr().err
    assert main(["replay", "--requests", "50", "--capacity", "0"]) == 2


def test_precomputed_embeddings_decide_like_live_ones(single_thread_default_embedder: object) -> None:
    stream = generate(builtin_pool(), WorkloadSpec("w", requests=150, seed=2))
    live = replay(stream, SemanticCache(single_thread_default_embedder, max_entries=30))
    fast_embedder = PrecomputedEmbedder(single_thread_default_embedder, [r.prompt for r in stream])
    fast = replay(stream, SemanticCache(fast_embedder, max_entries=30))
    assert (live.exact_hits, live.semantic_hits, live.false_hits, live.evictions) == (
        fast.exact_hits,
        fast.semantic_hits,
        fast.false_hits,
        fast.evictions,
    )
    assert live.embeddings == "live" and fast.embeddings == "precomputed"
    assert fast.evictions > 0  # the capacity bound was exercised


def test_replay_counts_a_false_hit_when_labels_differ(single_thread_default_embedder: object) -> None:
    # Same words, labelled as needing different answers: the cache cannot know, the report must say so.
    stream = [
        Request("How do I reset my password?", label="a"),
        Request("How can I reset my password?", label="b"),
    ]
    result = replay(stream, SemanticCache(single_thread_default_embedder))
    assert (result.semantic_hits, result.false_hits, result.labelled_hits) == (1, 1, 1)
    assert result.false_hit_rate == 1.0
    assert result.false_hits_per_lookup == 0.5  # one of the two requests got a wrong answer
    assert result.false_hit_sources == [(1, 0)]  # served by the entry the first request stored
    assert result.false_hits_own_answer_cached == 0


def test_replay_says_whether_a_false_hit_had_its_own_answer_cached(
    single_thread_default_embedder: object,
) -> None:
    # "b" has an entry, but its third request reads like a's entry and is served a's answer: the cache
    # held the right answer and picked a wrong one (not a miss served by a look-alike).
    stream = [
        Request("How do I reset my password?", label="a"),
        Request("What is the capital of France?", label="b"),
        Request("How can I reset my password?", label="b"),
    ]
    result = replay(stream, SemanticCache(single_thread_default_embedder))
    assert result.false_hits == 1 and result.false_hits_own_answer_cached == 1
    assert result.false_hit_sources == [(2, 0)]

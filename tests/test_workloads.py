"""Workload generators, request logs and pools (bsc.workloads): determinism, labels, clear errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from bsc.workloads import (
    WORKLOADS,
    LogFormatError,
    Request,
    WorkloadSpec,
    builtin_pool,
    generate,
    load_pool,
    read_log,
    write_log,
)
from bsc.workloads.replay import CostModel, PlanRow

PAIRS = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "prompt_pairs.tsv"


@pytest.fixture(scope="module")
def pairs_pool():
    return load_pool(PAIRS, "prompts")


def test_pairs_pool_joins_paraphrases_and_links_near_misses(pairs_pool) -> None:
    label_of = pairs_pool.label_of()
    assert label_of["What is the capital of France?"] == label_of["Which city is the capital of France?"]
    # Every label-0 pair of the file is a near-miss across two groups, never inside one.
    for line in PAIRS.read_text(encoding="utf-8").splitlines()[1:]:
        q1, q2, label, _ = line.split("\t")
        if label == "0":
            assert label_of[q1] != label_of[q2], (q1, q2)
    assert sum(len(g.near_misses) for g in pairs_pool.groups) > 0


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_generators_are_deterministic_per_seed(pairs_pool, name: str) -> None:
    spec = WorkloadSpec(
        name, requests=600, seed=3, drift_phases=WORKLOADS[name].drift_phases, burst=WORKLOADS[name].burst
    )
    first = generate(pairs_pool, spec)
    assert first == generate(pairs_pool, spec)
    assert len(first) == 600
    other = generate(pairs_pool, WorkloadSpec(name, requests=600, seed=4, burst=spec.burst))
    assert other != first


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_generated_labels_are_the_pool_groups(pairs_pool, name: str) -> None:
    label_of = pairs_pool.label_of()
    by_label = {g.label: g for g in pairs_pool.groups}
    stream = generate(pairs_pool, WORKLOADS[name])
    kinds = Counter(r.kind for r in stream)
    assert {"first", "exact", "paraphrase", "near_miss"} <= set(kinds)
    seen_topics: set[str] = set()
    for r in stream:
        assert r.label == label_of[r.prompt], r
        if r.kind == "first":
            assert r.prompt == by_label[r.label].prompts[0] and r.label not in seen_topics
            seen_topics.add(r.label)
        elif r.kind in ("exact", "paraphrase"):
            assert r.label in seen_topics  # a repeat visit of a topic already opened
            if r.kind == "paraphrase":
                assert r.prompt in by_label[r.label].prompts[1:]


def test_near_misses_carry_another_groups_label(pairs_pool) -> None:
    stream = generate(pairs_pool, WorkloadSpec("n", requests=2000, near_miss=1.0, exact=0, paraphrase=0))
    near = [r for r in stream if r.kind == "near_miss"]
    assert len(near) > 100
    groups = {g.label: g for g in pairs_pool.groups}
    # Each near-miss was sent as a visit of a topic whose near_misses list holds it, under its own label.
    assert all(any(r.prompt in g.near_misses for g in groups.values()) for r in near)
    assert all(r.prompt not in groups[r.label].near_misses for r in near)


def test_zipf_concentrates_traffic_and_drift_moves_it(pairs_pool) -> None:
    stationary = generate(pairs_pool, WorkloadSpec("s", requests=4000, zipf=1.2))
    counts = Counter(r.label for r in stationary if r.kind != "near_miss")
    top = counts.most_common()
    assert top[0][1] > 10 * top[len(top) // 2][1]
    drifting = generate(pairs_pool, WorkloadSpec("d", requests=4000, zipf=1.2, drift_phases=3))
    quarter = len(drifting) // 4
    hot_first = Counter(r.label for r in drifting[:quarter]).most_common(1)[0][0]
    hot_last = Counter(r.label for r in drifting[-quarter:]).most_common(1)[0][0]
    assert hot_first != hot_last


def test_burst_is_one_contiguous_block_of_one_offs(pairs_pool) -> None:
    stream = generate(pairs_pool, WorkloadSpec("b", requests=1000, burst=0.2))
    where = [i for i, r in enumerate(stream) if r.kind == "one_off"]
    assert len(where) == min(200, len(pairs_pool) // 2)
    assert where == list(range(where[0], where[0] + len(where)))
    one_offs = [stream[i] for i in where]
    assert len({r.prompt for r in one_offs}) == len(one_offs)
    others = {r.label for r in stream if r.kind != "one_off" and r.kind != "near_miss"}
    assert not others & {r.label for r in one_offs}  # one-off groups are never topics


def test_spec_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="requests"):
        WorkloadSpec("x", requests=0)
    with pytest.raises(ValueError, match="burst"):
        WorkloadSpec("x", burst=1.0)
    with pytest.raises(ValueError, match="not all 0"):
        WorkloadSpec("x", exact=0, paraphrase=0, near_miss=0)


def test_builtin_pool_is_the_packaged_copy_of_the_prompt_pairs(pairs_pool) -> None:
    pool = builtin_pool()
    assert pool == pairs_pool
    stream = generate(pool, WorkloadSpec("demo", requests=300, seed=1))
    assert {r.label for r in stream} <= {g.label for g in pool.groups}


# ---------------------------------------------------------------- the log format


def _write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "log.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8"
    )
    return path


def test_log_reads_prompts_and_chat_messages(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"prompt": "What is 2 + 2?", "model": "m", "timestamp": 5, "label": 7, "output_tokens": 3},
        "",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
            ],
            "timestamp": "2024-12-01T10:00:00+00:00",
            "id": "ignored",
        },
    )
    first, second = read_log(path)
    assert (first.prompt, first.model, first.timestamp, first.label, first.output_tokens) == (
        "What is 2 + 2?",
        "m",
        5.0,
        "7",
        3,
    )
    assert second.prompt == "Capital of France?"
    assert second.timestamp == 1733047200.0
    assert "Be brief." in second.context
    # The system prompt and the model choose the namespace: a bare prompt never meets a chat one.
    assert len({first.namespace, second.namespace, Request("x").namespace}) == 3


def test_log_round_trips_through_write_log(tmp_path: Path) -> None:
    chat = read_log(
        _write(
            tmp_path,
            {
                "messages": [
                    {"role": "system", "content": "S"},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": "u"}],
                    },
                ]
            },
        )
    )[0]
    requests = [Request("a", label="l", kind="first"), Request("b", model="m", timestamp=1.5), chat]
    out = tmp_path / "out.jsonl"
    assert write_log(requests, out) == 3
    assert read_log(out) == requests


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ({"model": "m"}, "exactly one of 'prompt'"),
        ({"prompt": "a", "messages": []}, "exactly one of 'prompt'"),
        ({"prompt": ""}, "'prompt' must be a non-empty string"),
        ({"prompt": 3}, "'prompt' must be a non-empty string"),
        ({"messages": "hi"}, "'messages' must be a non-empty list"),
        ({"messages": [{"content": "x"}]}, r"messages\[0\] must be an object with a string 'role'"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "last message must be the user's"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "no text to compare"),
        ({"prompt": "a", "timestamp": "yesterday"}, "'timestamp' must be seconds"),
        ({"prompt": "a", "label": True}, "'label' must be a string or an integer"),
        ({"prompt": "a", "output_tokens": -1}, "'output_tokens' must be an integer >= 0"),
        ({"prompt": "a", "kind": "other"}, "'kind' must be one of"),
    ],
)
def test_bad_log_lines_name_the_line_and_the_problem(tmp_path: Path, line: object, message: str) -> None:
    path = _write(tmp_path, {"prompt": "fine"}, line)
    with pytest.raises(LogFormatError, match=message) as info:
        read_log(path)
    assert str(info.value).startswith("line 2: ")
    assert isinstance(info.value, ValueError)


def test_empty_log_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(LogFormatError, match="holds no requests"):
        read_log(path)


def test_bad_pool_files_are_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "p.tsv"
    bad.write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header starting q1"):
        load_pool(bad)
    bad.write_text("q1\tq2\tlabel\nx\ty\tmaybe\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_pool(bad)
    with pytest.raises(ValueError, match=r"pairs \.tsv or a groups \.jsonl"):
        load_pool(tmp_path / "p.csv")


def test_cost_model_and_plan_bars() -> None:
    cost = CostModel()
    r = Request("x" * 400, label="a")
    assert cost.input_tokens(r) == 100
    assert cost.output_tokens(r) == cost.output_tokens(Request("other text", label="a"))  # one answer
    assert 80 <= cost.output_tokens(r) <= 320
    assert PlanRow("hit rate", 40, "%", 20, 35, 50, True).reached == "target"
    assert PlanRow("latency", 12, "ms", 50, 20, 10, False).reached == "target"
    assert PlanRow("latency", 60, "ms", 50, 20, 10, False).reached == "missed"

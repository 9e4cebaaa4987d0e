"""The proxy's request log (`bsc serve --request-log`) and its replay (`bsc replay --from-proxy-log`).

The real `openai` client talks to the real proxy (uvicorn on 127.0.0.1, the MiniLM embedder) in front of
the fake upstream; the log it writes is then replayed through a fresh cache with the same settings.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
from bsc import SemanticCache  # noqa: E402
from bsc.cli import main  # noqa: E402
from bsc.serve import ServeConfig, create_app  # noqa: E402
from bsc.serve.testing import running  # noqa: E402
from bsc.workloads import LogFormatError, read_log, read_proxy_log, replay, write_log  # noqa: E402

ALICE, BOB = "sk-alice-d0n0tl0g-1111", "sk-bob-d0n0tl0g-2222"
FRANCE = "What is the capital of France?"
FRANCE_PARAPHRASE = "Which city is the capital of France?"
BREAD = "How do I bake sourdough bread at home?"
BREAD_PARAPHRASE = "How can I bake sourdough bread at home?"


def _traffic(url: str) -> list[str]:
    """A mix of chat, streamed chat, completions, responses, another tenant, another model and a
    bypass; returns the proxy's x-bsc-cache answer to each, in order."""
    alice = openai.OpenAI(base_url=url + "/v1", api_key=ALICE, max_retries=0)
    bob = openai.OpenAI(base_url=url + "/v1", api_key=BOB, max_retries=0)
    outcomes: list[str] = []

    def ask(client: Any, question: str, **kw: Any) -> None:
        messages = [{"role": "user", "content": question}]
        kw.setdefault("model", "gpt-4o-mini")
        raw = client.chat.completions.with_raw_response.create(messages=messages, **kw)
        outcomes.append(raw.headers["x-bsc-cache"])
        raw.parse()

    ask(alice, FRANCE)
    ask(alice, FRANCE_PARAPHRASE)
    ask(alice, FRANCE)
    ask(bob, FRANCE)  # another tenant: a miss
    ask(alice, FRANCE, model="gpt-4o")  # another model: a miss
    ask(alice, BREAD)
    with alice.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": BREAD_PARAPHRASE}], stream=True
    ) as streamed:
        outcomes.append(streamed.headers["x-bsc-cache"])
        list(streamed.iter_lines())
    ask(alice, FRANCE, n=2)  # not cacheable: a bypass
    done = alice.completions.with_raw_response.create(model="gpt-4o-mini", prompt=FRANCE)
    outcomes.append(done.headers["x-bsc-cache"])
    again = alice.completions.with_raw_response.create(model="gpt-4o-mini", prompt=FRANCE_PARAPHRASE)
    outcomes.append(again.headers["x-bsc-cache"])
    answered = alice.responses.with_raw_response.create(model="gpt-4o-mini", input=BREAD)
    outcomes.append(answered.headers["x-bsc-cache"])
    return outcomes


def test_the_request_log_has_a_line_per_request_no_key_and_replays_to_the_proxys_decisions(
    fake: Any, upstream_url: str, single_thread_default_embedder: Any, tmp_path: Path
) -> None:
    log = tmp_path / "proxy-requests.jsonl"
    config = ServeConfig(upstream=upstream_url, request_log=str(log))
    with running(create_app(config, embedder=single_thread_default_embedder)) as url:
        outcomes = _traffic(url)
    assert outcomes.count("hit") >= 4 and "bypass" in outcomes  # the traffic exercises every case

    text = log.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["cache"] for r in rows] == outcomes
    assert ALICE not in text and BOB not in text and "d0n0tl0g" not in text  # no key, not even in part
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert rows[0]["messages"] == [{"role": "user", "content": FRANCE}] and rows[0]["model"] == "gpt-4o-mini"
    assert rows[0]["endpoint"] == "chat" and rows[0]["text"] == FRANCE and rows[0]["timestamp"] > 0
    assert rows[1]["similarity"] < 1.0 and rows[2]["similarity"] == 1.0 and rows[2]["output_tokens"] > 0
    assert rows[0]["tenant"] == rows[1]["tenant"] != rows[3]["tenant"]  # alice, alice, bob
    assert rows[7]["reason"] == "n>1" and "partition" not in rows[7]
    assert rows[8]["prompt"] == FRANCE and rows[10]["input"] == BREAD

    requests = read_proxy_log(log)
    logged = [r["cache"] for r in rows if r["cache"] != "bypass"]
    assert len(requests) == len(logged)
    assert [r.timestamp for r in requests] == [r["timestamp"] for r in rows if r["cache"] != "bypass"]
    # A fresh cache with the proxy's settings decides every request as the proxy did.
    cache = SemanticCache(single_thread_default_embedder)
    decided = []
    for r in requests:
        if cache.lookup(r.prompt, namespace=r.namespace) is None:
            cache.update(r.prompt, "answer", namespace=r.namespace)
            decided.append("miss")
        else:
            decided.append("hit")
    assert decided == logged
    result = replay(requests, SemanticCache(single_thread_default_embedder), workload="proxy log")
    assert result.hits == logged.count("hit")
    # Converted to the replay format, the stream reads back the same (partitions included).
    converted = tmp_path / "requests.jsonl"
    write_log(requests, converted)
    assert read_log(converted) == requests


def test_a_lone_surrogate_is_logged_as_its_json_escape_and_served(
    fake: Any, upstream_url: str, single_thread_default_embedder: Any, tmp_path: Path
) -> None:
    log = tmp_path / "proxy-requests.jsonl"
    config = ServeConfig(upstream=upstream_url, request_log=str(log))
    body = b'{"model": "m", "messages": [{"role": "user", "content": "Capital of France? \\ud83d"}]}'
    with running(create_app(config, embedder=single_thread_default_embedder)) as url:
        response = httpx.post(
            url + "/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json", "authorization": "Bearer " + ALICE},
        )
    assert response.status_code == 200, response.text
    (row,) = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert row["messages"][0]["content"] == "Capital of France? \ud83d" and row["cache"] == "miss"


def test_bsc_replay_reads_a_proxy_log_and_refuses_a_bad_one(
    single_thread_default_embedder: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "proxy.jsonl"
    tenant = "key-" + "0" * 32
    lines = [
        {
            "timestamp": 1.0,
            "cache": "miss",
            "tenant": tenant,
            "partition": f"serve:{tenant}:a",
            "text": FRANCE,
        },
        {"timestamp": 2.0, "cache": "bypass", "tenant": tenant, "reason": "n>1"},
        {
            "timestamp": 3.0,
            "cache": "hit",
            "tenant": tenant,
            "partition": f"serve:{tenant}:a",
            "text": FRANCE,
        },
        {
            "timestamp": 4.0,
            "cache": "miss",
            "tenant": tenant,
            "partition": f"serve:{tenant}:b",
            "text": FRANCE,
        },
    ]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    out = tmp_path / "result.json"
    status = main(["replay", "--from-proxy-log", str(log), "--json", str(out), "--no-progress"])
    assert status == 0
    result = json.loads(out.read_text())
    # The bypass is left out; the third request hits; the fourth is in another partition: a miss.
    assert (result["requests"], result["exact_hits"], result["semantic_hits"]) == (3, 1, 0)
    log.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"cache": "hit", "text": FRANCE}) + "\n")
    with pytest.raises(LogFormatError, match="line 2: a hit or miss needs a non-empty string 'text' and a"):
        read_proxy_log(log)
    capsys.readouterr()
    assert main(["replay", "--from-proxy-log", str(log), "--no-progress"]) == 2
    assert "line 2" in capsys.readouterr().err


def test_bsc_serve_refuses_a_request_log_it_cannot_open(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "log.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "bsc.cli", "serve", "--request-log", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and str(missing) in done.stderr

"""`bsc serve --redis`: several proxy replicas share one cache through a real ``redis-server``.

The real `openai` client talks to two replicas (two uvicorn servers on 127.0.0.1, each with its own
app and cache pointing at the same Redis URL, cache name and tenant secret) in front of the fake
upstream (`bsc.serve.testing.FakeUpstream`, the only fake). The first test runs the replicas as two
real ``bsc serve`` processes; the others run them in this process so they can stop Redis or clear
the cache between requests.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("redis")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
from bsc.serve import ServeConfig, create_app  # noqa: E402
from bsc.serve.testing import FakeUpstream, running  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

FRANCE = "What is the capital of France?"
FRANCE_PARAPHRASE = "Which city is the capital of France?"
BREAD = "How do I bake sourdough bread at home?"
SECRET = "tenant-secret-shared-by-the-replicas"
PASSWORD = "redis-pw-never-logged"


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The fixture's server, with a password (so the tests can check it is never logged)."""
    redis_server.client().config_set("requirepass", PASSWORD)
    return f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0"


def client(base: str, key: str) -> Any:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


def chat(base: str, question: str, key: str = "sk-alice") -> Any:
    messages = [{"role": "user", "content": question}]
    return client(base, key).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)


def content(raw: Any) -> str:
    text: str = raw.parse().choices[0].message.content
    return text


def metrics(base: str) -> dict[str, float]:
    text = httpx.get(base + "/metrics").text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Polls ``condition`` until it holds (a bounded wait for propagation, not a timing assert)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def entries(base: str) -> int:
    count: int = httpx.get(base + "/ready").json()["entries"]
    return count


# ---------------------------------------------------------------- two `bsc serve` processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve_processes(upstream_url: str, redis_url: str) -> Iterator[Callable[[int], list[str]]]:
    """``start(n)`` runs n ``bsc serve --redis`` processes sharing one cache; yields their base URLs.
    Their stderr (logs) is checked for the Redis password when they stop."""
    procs: list[tuple[subprocess.Popen[bytes], str]] = []
    # The tenant secret comes through the environment (it has no flag), the same on every replica.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "BSC_SERVE_SECRET": SECRET}

    def start(n: int) -> list[str]:
        for _ in range(n):
            port = _free_port()
            args = ["--upstream", upstream_url, "--port", str(port), "--redis", redis_url]
            args += ["--redis-name", "proxy-test", "--log-level", "info"]
            proc = subprocess.Popen(
                [sys.executable, "-m", "bsc.cli", "serve", *args], env=env, stderr=subprocess.PIPE
            )
            procs.append((proc, f"http://127.0.0.1:{port}"))
        for proc, base in procs:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.communicate()[1].decode()
                assert time.monotonic() < deadline, "bsc serve did not become ready"
                time.sleep(0.2)
        return [base for _, base in procs]

    yield start
    logs = []
    for proc, _ in procs:
        proc.send_signal(signal.SIGTERM)
        logs.append(proc.communicate(timeout=60)[1].decode())
    assert all(PASSWORD not in log for log in logs)


@pytest.mark.slow
def test_a_miss_through_one_replica_is_a_hit_through_another(
    serve_processes: Callable[[int], list[str]], fake: FakeUpstream
) -> None:
    a, b = serve_processes(2)
    first = chat(a, FRANCE)
    assert first.headers["x-bsc-cache"] == "miss" and fake.calls["chat"] == 1
    wait_for(lambda: entries(b) == 1, "replica B holds the entry stored through A")
    exact = chat(b, FRANCE)
    assert exact.headers["x-bsc-cache"] == "hit" and exact.headers["x-bsc-similarity"] == "1.0000"
    assert content(exact) == content(first)
    paraphrase = chat(b, FRANCE_PARAPHRASE)
    assert paraphrase.headers["x-bsc-cache"] == "hit" and content(paraphrase) == content(first)
    assert fake.calls["chat"] == 1
    # Tenants stay apart across replicas: bob asking through B never gets alice's answer from A.
    bobs = chat(b, FRANCE, key="sk-bob")
    assert bobs.headers["x-bsc-cache"] == "miss"
    assert content(bobs).startswith("[gpt-4o-mini|sk-bob]") and fake.calls["chat"] == 2
    wait_for(lambda: entries(a) == 2, "replica A holds bob's entry stored through B")
    assert content(chat(a, FRANCE_PARAPHRASE, key="sk-bob")).startswith("[gpt-4o-mini|sk-bob]")
    assert content(chat(a, FRANCE_PARAPHRASE)).startswith("[gpt-4o-mini|sk-alice]")
    assert fake.calls["chat"] == 2


# ---------------------------------------------------------------- two in-process replicas
@pytest.fixture
def replicas(
    upstream_url: str, redis_url: str, single_thread_default_embedder: Any
) -> Iterator[tuple[str, str, Any]]:
    """Two in-process replicas (separate apps and caches, same Redis, name and secret) and the first's
    app."""
    config = ServeConfig(upstream=upstream_url, redis_url=redis_url, redis_name="inproc", secret=SECRET)
    apps = [create_app(config, embedder=single_thread_default_embedder) for _ in range(2)]
    with running(apps[0]) as a, running(apps[1]) as b:
        yield a, b, apps[0]


def test_clear_through_one_replica_empties_both_and_requests_still_succeed(
    replicas: tuple[str, str, Any], fake: FakeUpstream
) -> None:
    a, b, app_a = replicas
    chat(a, FRANCE)
    wait_for(lambda: entries(b) == 1, "replica B holds the entry")
    app_a.state.proxy.cache.clear()
    wait_for(lambda: entries(b) == 0, "the clear reached replica B")
    again = chat(b, FRANCE_PARAPHRASE)
    assert again.headers["x-bsc-cache"] == "miss" and fake.calls["chat"] == 2
    assert content(again).startswith("[gpt-4o-mini|sk-alice] The answer to: " + FRANCE_PARAPHRASE)


def test_with_redis_stopped_mid_run_requests_are_served_and_writes_counted(
    replicas: tuple[str, str, Any],
    redis_server: Any,
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    a, b, _ = replicas
    chat(a, FRANCE)
    wait_for(lambda: entries(b) == 1, "replica B holds the entry")
    assert metrics(b)["bsc_shared_store_connected"] == 1
    redis_server.stop()
    # B still answers what it holds, from memory, and a new question from upstream.
    assert chat(b, FRANCE_PARAPHRASE).headers["x-bsc-cache"] == "hit"
    for base in (a, b):
        served = chat(base, BREAD, key=f"sk-{base[-5:]}")
        assert served.headers["x-bsc-cache"] == "miss" and BREAD in content(served)
    assert fake.calls["chat"] == 3
    wait_for(lambda: metrics(b)["bsc_shared_store_connected"] == 0, "replica B noticed the outage")
    # Each replica's answer to BREAD stayed local (Redis refused it) and is counted, not raised.
    assert [metrics(base)["bsc_shared_store_lost_writes_total"] for base in (a, b)] == [1, 1]
    assert "shared cache 'inproc'" in caplog.text and PASSWORD not in caplog.text


def test_redis_without_a_shared_tenant_secret_is_a_clear_error() -> None:
    # Each replica would draw its own random secret and see every key as another tenant.
    with pytest.raises(ValueError, match="redis_url needs a secret shared by every replica"):
        ServeConfig(redis_url="redis://127.0.0.1:6379/0")
    assert ServeConfig(redis_url="redis://127.0.0.1:6379/0", shared_cache=True).secret == ""

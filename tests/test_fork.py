"""A forked child (gunicorn --preload, Celery prefork, multiprocessing's fork start method) must work: the
Rust worker pool does not exist there, and a lock another thread held at the fork must not stay held.

Each case runs in a fresh interpreter with a timeout, because the failure being guarded against is a hang.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

Run = Callable[..., str]

# The child reports through its exit status; a child that hangs is killed by the parent after 60 s.
_FORK_HELPERS = """
import os, signal, sys, threading, time, warnings
import numpy as np
warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, use of fork() may lead to deadlocks"

def in_child(work):
    pid = os.fork()
    if pid == 0:
        try:
            ok = work()
        except BaseException as exc:
            print("child failed:", repr(exc), file=sys.stderr)
            ok = False
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    print("child hung", file=sys.stderr)
    return False
"""


def _run(run_isolated: Run, script: str, **env: str) -> str:
    """``script`` after the fork helpers, with a pool of two worker threads unless ``env`` says otherwise."""
    return str(run_isolated(_FORK_HELPERS + textwrap.dedent(script), env={"BSC_NUM_THREADS": "2", **env}))


def test_a_forked_child_encodes_and_scans_large_batches_after_the_parent_used_the_pool(
    run_isolated: Run,
) -> None:
    out = _run(
        run_isolated,
        """
        import bsc
        from bsc._native import hamming_search, thread_count
        enc = bsc.BinaryEncoder(384)
        x = np.random.default_rng(0).standard_normal((1024, 384)).astype(np.float32)
        want = enc.encode(x)  # >= 256 rows: split over the worker pool in the parent
        codes = np.random.default_rng(1).integers(0, 2**63, size=(1 << 20, 8), dtype=np.uint64)
        want_scan = hamming_search(codes, codes[5], k=3)  # 64 MiB: a split scan in the parent
        assert thread_count() == 2
        def work():
            same = bool((enc.encode(x) == want).all())
            found = hamming_search(codes, codes[5], k=3)
            scanned = all((a == b).all() for a, b in zip(found, want_scan))
            return same and scanned and thread_count() == 1
        print(in_child(work))
        """,
    )
    assert out.split() == ["True"]


def test_a_cache_in_a_forked_child_stores_and_finds_batches(run_isolated: Run) -> None:
    out = _run(
        run_isolated,
        """
        import bsc
        cache = bsc.BinarySemanticCache(dim=64)
        x = np.random.default_rng(2).standard_normal((600, 64)).astype(np.float32)
        cache.put_many(x, [str(i) for i in range(600)])
        def work():
            cache.put_many(x[::-1].copy(), [str(i) for i in range(600)], namespace="child")
            hit = cache.get(x[7], namespace="child")
            return hit is not None and hit.response == "592"
        print(in_child(work), cache.get(x[7]).response)
        """,
    )
    assert out.split() == ["True", "7"]


def test_bsc_num_threads_1_runs_everything_on_the_calling_thread(run_isolated: Run) -> None:
    out = _run(
        run_isolated, "from bsc._native import thread_count; print(thread_count())", BSC_NUM_THREADS="1"
    )
    assert out.split() == ["1"]


def test_forking_while_another_thread_holds_a_cache_lock_leaves_the_child_working(run_isolated: Run) -> None:
    out = _run(
        run_isolated,
        """
        import bsc
        class Embedder:
            dim = 8
            name = "count"
            def embed(self, texts):
                return np.array([[len(t) + 1.0, *(float(ord(c)) for c in t.ljust(7)[:7])] for t in texts],
                                dtype=np.float32)
            async def aembed(self, texts):
                return self.embed(texts)
        text = bsc.SemanticCache(Embedder(), guard=False)
        text.update("hello", "world")
        results = []
        for lock in (text._lock, text.cache._write_lock):  # the counters are lock-free atomics
            held = threading.Event()
            def hold(lock=lock):
                with lock:
                    held.set()
                    time.sleep(0.3)  # the fork is requested while this thread holds the lock
            t = threading.Thread(target=hold)
            t.start()
            held.wait()
            def work():
                text.update("goodbye", "moon")
                return text.lookup("goodbye").response == "moon" and text.lookup("hello").exact
            results.append(in_child(work))
            t.join()
        print(*results)
        """,
    )
    assert out.split() == ["True", "True"]


def test_forking_during_concurrent_puts_and_scans_never_leaves_a_child_deadlocked(run_isolated: Run) -> None:
    # Other threads are inside the Rust index (its lock held with the GIL released) at random moments.
    out = _run(
        run_isolated,
        """
        import bsc
        cache = bsc.BinarySemanticCache(dim=32, max_entries=2000)
        rng = np.random.default_rng(3)
        x = rng.standard_normal((200, 32)).astype(np.float32)
        stop = threading.Event()
        def churn():
            while not stop.is_set():
                cache.put_many(x, ["r"] * 200)
                cache.search(x[0], k=5)
        threads = [threading.Thread(target=churn) for _ in range(2)]
        for t in threads:
            t.start()
        def work():
            cache.put(x[1], "child")
            return cache.get(x[1]) is not None
        ok = all(in_child(work) for _ in range(15))
        stop.set()
        for t in threads:
            t.join()
        print(ok)
        """,
    )
    assert out.split() == ["True"]

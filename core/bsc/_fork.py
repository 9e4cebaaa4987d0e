"""Locks across ``fork()``: caches register here, and the fork hooks take every cache lock just before a
fork and release them right after, in the parent and in the child.

A child process has only the thread that forked. A lock that another thread held at that moment would
stay held forever in the child (gunicorn ``--preload``, Celery prefork and ``multiprocessing`` with the
fork start method all fork processes that may have threads). Taking the locks first means no other thread
is inside a cache when the fork happens, so the child starts with consistent data and free locks, as the
standard library's ``logging`` does for its handlers. (The Rust worker threads are handled in Rust: a
forked child runs encodes and scans on the calling thread.)

Example:
    >>> import bsc, os
    >>> cache = bsc.BinarySemanticCache(dim=4)  # registered by its constructor
    >>> pid = os.fork()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["APPLIER_LEVEL", "BINARY_LEVEL", "TEXT_LEVEL", "track"]

# The order every thread takes these locks in, so the fork hooks take them in it too: a shared cache's
# applier holds its lock while it calls its listeners (which take a text-level lock), and a text-level
# cache reads its binary cache (whose locks come last) while holding its own.
#: A shared cache's replica applying changes (`bsc.store.replica`).
APPLIER_LEVEL = 0
#: Text-level caches.
TEXT_LEVEL = 1
#: Binary caches.
BINARY_LEVEL = 2


class ForkSafe(Protocol):
    """An object with locks: ``_hold_for_fork`` takes them all (in its own lock order) and
    ``_release_after_fork`` releases them."""

    def _hold_for_fork(self) -> None: ...
    def _release_after_fork(self) -> None: ...


_tracked: tuple[weakref.WeakSet[ForkSafe], ...] = (weakref.WeakSet(), weakref.WeakSet(), weakref.WeakSet())
_held: list[ForkSafe] = []


def track(owner: ForkSafe, level: int) -> None:
    """Registers ``owner`` (weakly) so its locks are held across every later fork."""
    _tracked[level].add(owner)


def _before_fork() -> None:
    for level in _tracked:
        for owner in list(level):
            owner._hold_for_fork()
            _held.append(owner)


def _after_fork() -> None:
    while _held:
        _held.pop()._release_after_fork()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)

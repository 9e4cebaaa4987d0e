"""Passing a live stream through to the caller while keeping what it said, for storing at its end.

Every streaming path of the integration (chat and completion, sync and async, and the query engine's
token streams) stores an answer only once the caller has read the stream to its end: a consumer that
stops early closes the generator at its ``yield``, so ``finish`` never runs and a partial answer is
never cached.

Example:
    >>> seen = []
    >>> list(recorded(iter("abc"), seen.append))
    ['a', 'b', 'c']
    >>> seen
    [['a', 'b', 'c']]
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import TypeVar

__all__ = ["arecorded", "recorded"]

_T = TypeVar("_T")


def recorded(stream: Iterator[_T], finish: Callable[[list[_T]], object]) -> Generator[_T, None, None]:
    """Yields ``stream``'s items, then calls ``finish(items)`` once it is exhausted."""
    items: list[_T] = []
    for item in stream:
        items.append(item)
        yield item
    finish(items)


async def arecorded(
    stream: AsyncIterator[_T], finish: Callable[[list[_T]], Awaitable[object]]
) -> AsyncGenerator[_T, None]:
    """Async `recorded`: awaits ``finish(items)`` once ``stream`` is exhausted."""
    items: list[_T] = []
    async for item in stream:
        items.append(item)
        yield item
    await finish(items)

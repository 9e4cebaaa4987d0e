"""Read-only JSON metadata: what a cache stores and hands out with every hit, built once at store time.

Example:
    >>> from bsc.frozen import freeze
    >>> meta = freeze({"source": "faq", "tags": ["a"]})
    >>> meta == {"source": "faq", "tags": ["a"]}, type(dict(meta)) is dict
    (True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

__all__ = ["MAX_METADATA_DEPTH", "FrozenDict", "FrozenList", "freeze", "metadata_depth"]

#: Deepest nesting of dicts and lists accepted in metadata (a JSON decoder recurses once per level).
MAX_METADATA_DEPTH = 64


def metadata_depth(value: object) -> int:
    """Nesting depth of dicts and lists in ``value`` (0 for a scalar, 1 for a flat dict), found without
    recursion (so it works from a deep call stack) and stopping once past `MAX_METADATA_DEPTH`."""
    depth, level = 0, [value]
    while depth <= MAX_METADATA_DEPTH:
        containers = [v for v in level if isinstance(v, Mapping | list | tuple)]
        if not containers:
            break
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, Mapping) else v)]
    return depth


class FrozenDict(dict[str, Any]):
    """A JSON object no reader can change: a real ``dict`` (``json.dumps`` takes it, it compares equal to
    the dict that was stored), whose mutating methods raise TypeError. ``dict(d)`` gives a mutable copy;
    copying or pickling gives plain dicts and lists."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("cached metadata is read-only; copy it with dict(...) to change it")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_thawed, (dict(self),))

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return _thawed(self)  # type: ignore[no-any-return]


class FrozenList(list[Any]):
    """A JSON array no reader can change (see `FrozenDict`)."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("cached metadata is read-only; copy it with list(...) to change it")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = extend = insert = _read_only  # type: ignore[assignment]
    pop = remove = clear = sort = reverse = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (_thawed, (list(self),))

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return _thawed(self)  # type: ignore[no-any-return]


def _thawed(value: Any) -> Any:
    """Plain, mutable dicts and lists again (for copies and pickles of frozen metadata)."""
    if isinstance(value, dict):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_thawed(v) for v in value]
    return value


def freeze(value: dict[str, Any]) -> Mapping[str, Any]:
    """The stored form of decoded JSON metadata: `FrozenDict` and `FrozenList` all the way down, built
    once when the entry is stored, so a lookup hands it out without copying.

    Raises:
        ValueError: ``value`` is nested deeper than `MAX_METADATA_DEPTH`.
    """
    return cast("Mapping[str, Any]", _freeze_value(value, 1))


def _freeze_value(value: dict[str, Any] | list[Any], depth: int) -> FrozenDict | FrozenList:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    # Copied whole in C first; only nested containers are replaced (snapshots load millions of these).
    if isinstance(value, dict):
        mapping = FrozenDict(value)
        for key, item in value.items():
            if isinstance(item, dict | list):
                dict.__setitem__(mapping, key, _freeze_value(item, depth + 1))
        return mapping
    array = FrozenList(value)
    for i, item in enumerate(value):
        if isinstance(item, dict | list):
            list.__setitem__(array, i, _freeze_value(item, depth + 1))
    return array

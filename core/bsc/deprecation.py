"""Old public names kept working for a while: a module ``__getattr__`` that warns and forwards.

A renamed class or function stays importable under its old name, but every use says what to use
instead (``DeprecationWarning``, pointing at the caller's line), so code moves before the alias goes.

Example:
    >>> import warnings
    >>> __getattr__ = deprecated_aliases("pkg", {"old_name": ("new_name", len)})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     __getattr__("old_name") is len
    True
    >>> str(caught[0].message)
    'pkg.old_name is deprecated; use pkg.new_name'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deprecated_aliases"]


def deprecated_aliases(module: str, aliases: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``module`` serving ``aliases``: old name -> (new name, object).

    Any other missing attribute raises `AttributeError` as usual.
    """
    table = dict(aliases)

    def __getattr__(name: str) -> Any:
        try:
            new_name, value = table[name]
        except KeyError:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
        warnings.warn(
            f"{module}.{name} is deprecated; use {module}.{new_name}", DeprecationWarning, stacklevel=2
        )
        return value

    return __getattr__

"""The one digest bsc and its integrations use for keys: BLAKE2b, 16 bytes, of UTF-8 text.

Keys built from it (exact-match keys, namespace names) are stored in snapshots, so it must never change
for a given text; 16 bytes keep accidental collisions out of reach (2**64 texts for even odds) while
staying short in a namespace name.

Example:
    >>> digest("hello").hex()
    '46fb7408d4f285228f4af516ea25851b'
"""

from __future__ import annotations

import hashlib

__all__ = ["digest"]


def digest(text: str) -> bytes:
    """The 16-byte BLAKE2b digest of ``text`` encoded as UTF-8 (``.hex()`` for a name).

    Raises:
        TypeError: if ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"digest() takes a str, got {type(text).__name__}")
    return hashlib.blake2b(text.encode(), digest_size=16).digest()

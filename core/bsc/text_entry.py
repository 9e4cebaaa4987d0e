"""What the text layer keeps for a cached prompt, and the hit it hands back.

`SemanticCache` stores each answer in a `BinarySemanticCache` entry. The vector layer knows nothing of
prompts; the text layer keeps the prompt inside the entry's metadata, in the form defined here and only
here (so a snapshot or a shared store carries it with the entry, and an entry written by an older
version reads back the same), and keeps beside the cache a `TextRecord` per entry id: the prompt's exact
key and its analysis for the false-hit guard, computed once rather than at every lookup.

Example:
    >>> stored = stored_metadata("What is 2 + 2?", {"model": "m"}, exact_only=False)
    >>> prompt_of(stored), user_metadata(stored)
    ('What is 2 + 2?', {'model': 'm'})
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bsc.cache import Hit
from bsc.guard import PreparedPrompt, prepare

__all__ = ["TextHit", "TextRecord", "normalise_prompt", "prompt_key", "record_of", "stored_metadata"]

# The stored form: {"prompt": str, "metadata": the user's mapping or None, "exact_only": True when the
# prompt is longer than the embedder reads}. These names are in every snapshot and shared store written
# so far; changing them would orphan those entries' prompts.
_PROMPT = "prompt"
_METADATA = "metadata"
_EXACT_ONLY = "exact_only"


@dataclass(frozen=True, slots=True)
class TextHit(Hit):
    """A cached answer found by `SemanticCache` (a `bsc.Hit`, with what only the text layer knows).

    Attributes:
        metadata: the metadata given with the answer (``update(..., metadata=...)``), read-only, or None.
        prompt: the cached prompt's text, for judging the hit; None for an entry stored straight into
            the underlying `BinarySemanticCache`.
        exact: True when the prompt text matched exactly, without embedding it.

    Example:
        >>> hit = TextHit("Paris", 1.0, 0, 7, None, "default", "Capital of France?", True)
        >>> hit.exact, hit.prompt
        (True, 'Capital of France?')
    """

    prompt: str | None
    exact: bool


def normalise_prompt(text: str) -> str:
    """The form used for exact matching: Unicode NFC, line endings unified, trailing spaces of each line
    and blank lines before and after the text dropped. Everything else is kept: case, line breaks,
    indentation and runs of spaces inside a line (code, tables and ASCII art turn on them; prompts that
    differ there go through the semantic path and its guard), and compatibility characters (NFKC would
    make "2³" read "23").

    Example:
        >>> normalise_prompt("What is 2³?  \\r\\n")
        'What is 2³?'
    """
    if text.isascii() and "\n" not in text and "\r" not in text:
        return text.rstrip(" \t")  # the common case: one line, already NFC
    lines = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip(" \t") for line in lines).strip("\n")


def prompt_key(text: str) -> bytes:
    """The exact-match key of a prompt: a 16-byte digest of its normalised form.

    Example:
        >>> prompt_key("hi ") == prompt_key("hi")
        True
    """
    # surrogatepass: a lone surrogate (what `json.loads('"\\ud800"')` gives a web app) is hashed like
    # any other character instead of raising, the same way on every path (update, lookup, reload).
    return hashlib.blake2b(normalise_prompt(text).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def stored_metadata(prompt: str, metadata: Mapping[str, Any] | None, *, exact_only: bool) -> dict[str, Any]:
    """The metadata a text-level entry is stored with in the vector layer."""
    stored: dict[str, Any] = {_PROMPT: prompt, _METADATA: None if metadata is None else dict(metadata)}
    if exact_only:
        stored[_EXACT_ONLY] = True
    return stored


def prompt_of(stored: Mapping[str, Any] | None) -> str | None:
    """The prompt kept in an entry's stored metadata, or None (an entry not written by the text layer)."""
    prompt = None if stored is None else stored.get(_PROMPT)
    return prompt if isinstance(prompt, str) else None


def user_metadata(stored: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The user's own metadata inside an entry's stored metadata (already a read-only copy)."""
    user = None if stored is None else stored.get(_METADATA)
    return user if isinstance(user, Mapping) else None


@dataclass(slots=True)
class TextRecord:
    """The text layer's view of one entry, kept by entry id (ids are never reused, so a record never
    describes another entry).

    Attributes:
        key: the prompt's `prompt_key`; None for an entry without a prompt.
        exact_only: the prompt is longer than the embedder reads, so it is never matched by meaning.
        guard: the prompt analysed for the false-hit guard; computed when the entry is stored, or the
            first time a loaded entry is a candidate, then kept.
        exact_hit: the hit an exact repeat of the prompt returns, built at the first one (an entry is
            immutable under its id, so every exact hit on it is this same read-only value).
    """

    key: bytes | None
    exact_only: bool
    guard: PreparedPrompt | None = None
    exact_hit: TextHit | None = None

    def prepared(self, prompt: str) -> PreparedPrompt:
        """The guard's analysis of this entry's ``prompt``, computed on first use and kept."""
        analysed = self.guard
        if analysed is None:
            # Built whole before it is published: another thread reads it without a lock.
            analysed = self.guard = prepare(prompt).complete()
        return analysed


def record_of(stored: Mapping[str, Any] | None) -> TextRecord:
    """The record of an entry read back from its stored metadata (a loaded or shared entry); the
    guard's analysis of its prompt waits for its first lookup."""
    prompt = prompt_of(stored)
    if prompt is None:
        return TextRecord(None, False)
    return TextRecord(prompt_key(prompt), bool(stored is not None and stored.get(_EXACT_ONLY)))

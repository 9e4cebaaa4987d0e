"""BERT's WordPiece tokenizer, read from a Hugging Face ``tokenizer.json``, in plain Python.

Why not the ``tokenizers`` package: it depends on ``huggingface_hub`` (and so ``hf_xet``, ``fsspec``,
``filelock``, ``click``), ~36 MB of a ~370 MB install for a job of ~150 lines, and a BERT prompt of a
few dozen tokens takes tens of microseconds here against a forward pass of milliseconds. This computes
what ``tokenizers`` computes for the pipeline BERT checkpoints ship (``BertNormalizer``,
``BertPreTokenizer``, ``WordPiece``, a ``[CLS] $A [SEP]`` post-processor, non-normalized special added
tokens), following its Rust sources rule by rule; `Tokenizer.from_file` refuses any other pipeline.
The tests compare the ids with ``tokenizers`` on the reference texts and ``benchmarks/bench_embed.py``
on thousands of sentences.

Example:
    >>> from bsc.embedders.local import packaged_minilm_path
    >>> tokenizer = Tokenizer.from_file(packaged_minilm_path() / "tokenizer.json", max_length=256)
    >>> tokenizer.encode_batch(["Hello, world!"])[0].ids
    [101, 7592, 1010, 2088, 999, 102]
"""

from __future__ import annotations

import bisect
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsc.embedders._unicode8 import UNICODE_8 as _UNICODE_8

# Rust's char::is_whitespace (the Unicode White_Space property), which BERT's rules use; Python's
# str.isspace differs (it adds U+001C..U+001F).
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_OTHER = frozenset({"Cc", "Cf", "Co", "Cs"})  # Rust's is_other: what clean_text removes
_PUNCTUATION = frozenset({"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"})
_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
# CJK Unified Ideographs and their extensions, as in BERT's tokenization.py.
_ASCII_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # Cc but \t \n \r
_ASCII_PUNCTUATION_CLASS = "".join(re.escape(c) for c in sorted(_ASCII_PUNCTUATION))
_ASCII_WORDS = re.compile(f"[^\t\n\x0b\x0c\r {_ASCII_PUNCTUATION_CLASS}]+|[{_ASCII_PUNCTUATION_CLASS}]")
_WORD_CACHE_SIZE = 100_000
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


_UNICODE_8_STARTS = [start for start, _, _ in _UNICODE_8]
_FIRST_OVERRIDE = _UNICODE_8_STARTS[0] if _UNICODE_8_STARTS else 0x110000


@dataclass(frozen=True)
class Encoding:
    """One text's model inputs, padded to its batch's longest text; `overflowing` if it was truncated."""

    ids: list[int]
    type_ids: list[int]
    attention_mask: list[int]
    overflowing: bool


def _category(c: str) -> str:
    """The character's general category as tokenizers sees it: its tables are Unicode 8.0's, so a
    character assigned (or recategorised) since is looked up in `_UNICODE_8` first."""
    code = ord(c)
    if code >= _FIRST_OVERRIDE:
        i = bisect.bisect_right(_UNICODE_8_STARTS, code) - 1
        if i >= 0 and code <= _UNICODE_8[i][1]:
            return _UNICODE_8[i][2]
    return unicodedata.category(c)


def _is_cjk(c: str) -> bool:
    code = ord(c)
    return any(low <= code <= high for low, high in _CJK)


def _is_punctuation(c: str) -> bool:
    return c in _ASCII_PUNCTUATION or _category(c) in _PUNCTUATION


@dataclass(frozen=True)
class _Normalizer:
    """``BertNormalizer``: the same steps in the same order as tokenizers' normalizers/bert.rs."""

    clean_text: bool
    handle_chinese_chars: bool
    strip_accents: bool
    lowercase: bool

    def __call__(self, text: str) -> str:
        if self.clean_text:
            text = "".join(
                " " if c in _WHITESPACE else c
                for c in text
                if c in "\t\n\r" or not (c in "\x00\ufffd" or _category(c) in _OTHER)
            )
        if self.handle_chinese_chars:
            text = "".join(f" {c} " if _is_cjk(c) else c for c in text)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if _category(c) != "Mn")
        if self.lowercase:
            # Per character, like Rust's char::to_lowercase: str.lower() would apply the final-sigma rule.
            text = "".join(c.lower() for c in text)
        return text


def _pre_tokenize(text: str) -> Iterator[str]:
    """``BertPreTokenizer``: split on whitespace (dropped) and around every punctuation character (kept)."""
    word: list[str] = []
    for c in text:
        if c in _WHITESPACE or _is_punctuation(c):
            if word:
                yield "".join(word)
                word = []
            if c not in _WHITESPACE:
                yield c
        else:
            word.append(c)
    if word:
        yield "".join(word)


class Tokenizer:
    """A BERT ``tokenizer.json`` set up as sentence-transformers uses it: truncation at `max_length`
    tokens (special tokens included), padding to the longest text of a batch.

    Read-only after construction, so concurrent `encode_batch` calls are safe.
    """

    def __init__(self, config: dict[str, Any], max_length: int, source: str) -> None:
        self._source = source
        model = config.get("model") or {}
        if model.get("type") != "WordPiece":
            raise self._unsupported("model", model.get("type"))
        self._vocab: dict[str, int] = model["vocab"]
        self._unk = self._vocab[model.get("unk_token", "[UNK]")]
        self._prefix: str = model.get("continuing_subword_prefix", "##")
        self._max_word = int(model.get("max_input_chars_per_word", 100))
        self._normalize = self._read_normalizer(config.get("normalizer"))
        if (config.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
            raise self._unsupported("pre_tokenizer", (config.get("pre_tokenizer") or {}).get("type"))
        self._cls, self._sep, self._type_id = self._read_post_processor(config.get("post_processor"))
        added = config.get("added_tokens") or []
        if any(
            t.get("normalized") or t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added
        ):
            raise self._unsupported("added_tokens", "normalized/lstrip/rstrip/single_word tokens")
        self._added = {t["content"]: int(t["id"]) for t in added}
        # Word -> ids; a word's pieces do not depend on its context. Plain dict reads and writes are
        # atomic, so threads may share it.
        self._known_words: dict[str, list[int]] = {}
        # Leftmost-longest match of the added tokens in the raw text, as tokenizers' AddedVocabulary.
        contents = sorted(self._added, key=len, reverse=True)
        self._added_pattern = re.compile("|".join(map(re.escape, contents))) if contents else None
        padding = config.get("padding") or {}
        pad_token = padding.get("pad_token", "[PAD]")
        self._pad_id = int(padding.get("pad_id", self._vocab.get(pad_token, 0)))
        self._pad_type_id = int(padding.get("pad_type_id", 0))
        if max_length < 3:
            raise ValueError(f"{source}: max_length must leave room for a token besides [CLS] and [SEP]")
        self._max_tokens = max_length - 2

    @classmethod
    def from_file(cls, path: Path, *, max_length: int) -> Tokenizer:
        """Read `path` (a ``tokenizer.json``).

        Raises:
            NotImplementedError: For a pipeline other than BERT's (the message names the part).
            ValueError: If the file is not a JSON object.
        """
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a JSON object")
        return cls(config, max_length, str(path))

    def _unsupported(self, part: str, value: object) -> NotImplementedError:
        return NotImplementedError(
            f"{self._source}: {part} {value!r} is not BERT's; the built-in tokenizer runs BertNormalizer, "
            "BertPreTokenizer and WordPiece only (use SentenceTransformerEmbedder, bsc-cache[torch])"
        )

    def _read_normalizer(self, config: dict[str, Any] | None) -> _Normalizer:
        if not config or config.get("type") != "BertNormalizer":
            raise self._unsupported("normalizer", (config or {}).get("type"))
        lowercase = bool(config.get("lowercase", True))
        strip = config.get("strip_accents")
        return _Normalizer(
            clean_text=bool(config.get("clean_text", True)),
            handle_chinese_chars=bool(config.get("handle_chinese_chars", True)),
            strip_accents=lowercase if strip is None else bool(strip),
            lowercase=lowercase,
        )

    def _read_post_processor(self, config: dict[str, Any] | None) -> tuple[int, int, int]:
        """The [CLS] and [SEP] ids and the type id of a single text."""
        kind = (config or {}).get("type")
        if config and kind == "BertProcessing":
            return int(config["cls"][1]), int(config["sep"][1]), 0
        if config and kind == "TemplateProcessing":
            single = config.get("single") or []
            shape = [next(iter(piece)) for piece in single]
            if shape == ["SpecialToken", "Sequence", "SpecialToken"]:
                specials = config.get("special_tokens") or {}
                first, last = single[0]["SpecialToken"]["id"], single[2]["SpecialToken"]["id"]
                if len(specials[first]["ids"]) == len(specials[last]["ids"]) == 1:
                    type_id = int(single[1]["Sequence"].get("type_id", 0))
                    return int(specials[first]["ids"][0]), int(specials[last]["ids"][0]), type_id
        raise self._unsupported("post_processor", kind)

    def _word_pieces(self, word: str) -> list[int]:
        """Greedy longest-match-first WordPiece; a word with an unmatchable rest is one [UNK]."""
        if len(word) > self._max_word:
            return [self._unk]
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self._prefix + word[start:end]
                if piece in self._vocab:
                    pieces.append(self._vocab[piece])
                    break
                end -= 1
            else:
                return [self._unk]
            start = end
        return pieces

    def _tokens(self, text: str) -> list[int]:
        """The ids of `text` without special tokens or truncation."""
        ids: list[int] = []
        segments = [text] if self._added_pattern is None else self._split_added(text)
        for segment in segments:
            if isinstance(segment, int):
                ids.append(segment)
                continue
            for word in self._words(segment):
                pieces = self._known_words.get(word)
                if pieces is None:
                    if len(self._known_words) >= _WORD_CACHE_SIZE:
                        self._known_words.clear()
                    pieces = self._known_words[word] = self._word_pieces(word)
                ids += pieces
        return ids

    def _words(self, text: str) -> list[str]:
        """`text` normalised and pre-tokenized: the words WordPiece splits."""
        if text.isascii():
            # The same rules for ASCII, by regular expression: ~5x faster than char by char. ASCII
            # has no CJK, no accents to strip, and lowercases by str.lower().
            if self._normalize.clean_text:
                text = _ASCII_CONTROL.sub("", text)
            return _ASCII_WORDS.findall(text.lower() if self._normalize.lowercase else text)
        return list(_pre_tokenize(self._normalize(text)))

    def _split_added(self, text: str) -> list[str | int]:
        assert self._added_pattern is not None
        out: list[str | int] = []
        start = 0
        for match in self._added_pattern.finditer(text):
            out += [text[start : match.start()], self._added[match.group()]]
            start = match.end()
        out.append(text[start:])
        return out

    def encode_batch(self, texts: list[str]) -> list[Encoding]:
        """Model inputs for `texts`: ``[CLS] tokens [SEP]``, truncated and padded to the longest."""
        rows = [self._tokens(text) for text in texts]
        width = min(max((len(r) for r in rows), default=0), self._max_tokens) + 2
        out = []
        for row in rows:
            ids = [self._cls, *row[: self._max_tokens], self._sep]
            pad = width - len(ids)
            out.append(
                Encoding(
                    ids=ids + [self._pad_id] * pad,
                    type_ids=[self._type_id] * len(ids) + [self._pad_type_id] * pad,
                    attention_mask=[1] * len(ids) + [0] * pad,
                    overflowing=len(row) > self._max_tokens,
                )
            )
        return out

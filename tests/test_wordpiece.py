"""`bsc.embedders.wordpiece.Tokenizer` gives the ids the ``tokenizers`` package gives (set up as
sentence-transformers sets it up) on real, edge-case and random Unicode text, and refuses tokenizer.json
pipelines it does not implement."""

from __future__ import annotations

import csv
import json
import random
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bsc.embedders._unicode8 import UNICODE_8
from bsc.embedders.wordpiece import Tokenizer

tokenizers = pytest.importorskip("tokenizers")

DATA = Path(__file__).resolve().parent / "data"
PROMPTS = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "prompt_pairs.tsv"
MAX_LENGTH = 256


@pytest.fixture(scope="module")
def tokenizer_json(minilm_path: Path) -> Path:
    return minilm_path / "tokenizer.json"


@pytest.fixture(scope="module")
def ours(tokenizer_json: Path) -> Tokenizer:
    return Tokenizer.from_file(tokenizer_json, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def reference(tokenizer_json: Path) -> Any:
    """tokenizers itself, configured as sentence-transformers configures it."""
    hf = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    hf.enable_truncation(max_length=MAX_LENGTH)
    hf.enable_padding(pad_id=0, pad_token="[PAD]")
    return hf


def assert_same(ours: Tokenizer, reference: Any, texts: list[str]) -> None:
    for text in texts:
        (expected,), (got,) = reference.encode_batch([text]), ours.encode_batch([text])
        assert got.ids == expected.ids, text
        assert got.overflowing == bool(expected.overflowing), text
    expected_batch, got_batch = reference.encode_batch(texts), ours.encode_batch(texts)
    assert [e.ids for e in got_batch] == [e.ids for e in expected_batch]
    assert [e.attention_mask for e in got_batch] == [e.attention_mask for e in expected_batch]
    assert [e.type_ids for e in got_batch] == [e.type_ids for e in expected_batch]


def test_reference_texts_and_prompts_tokenize_as_with_tokenizers(ours: Tokenizer, reference: Any) -> None:
    with np.load(DATA / "minilm_reference.npz") as data:
        texts = [str(t) for t in data["texts"]]
    with PROMPTS.open(newline="", encoding="utf-8") as f:
        texts += [
            t
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for t in (row["q1"], row["q2"])
        ]
    assert len(texts) > 1000 and any(ours.encode_batch([t])[0].overflowing for t in texts)
    for start in range(0, len(texts), 64):
        assert_same(ours, reference, texts[start : start + 64])


def test_edge_cases_tokenize_as_with_tokenizers(ours: Tokenizer, reference: Any) -> None:
    texts = [
        "",
        " \t\n ",
        "[CLS] special [SEP] tokens [MASK] in the text[PAD]",
        "x" * 150,  # longer than max_input_chars_per_word: one [UNK]
        "unaffable antidisestablishmentarianism",
        "ΣΑΣ Σίσυφος İstanbul straße ﬁne Ⅻ",
        "東京は日本の首都です。 北京欢迎你",
        "naïve café — “quotes” … emoji 👍🏽 and zero\u200bwidth",
        "control\x00chars\x07and\x7fdel\ufffd",
        "tabs\tand\x0bvertical\x0cfeeds\x1cfile\x1dseparators",
        " ".join(["word"] * 254),  # exactly 256 tokens with [CLS] and [SEP]
        " ".join(["word"] * 255),  # one too many
    ]
    assert_same(ours, reference, texts)


def test_random_unicode_tokenizes_as_with_tokenizers(ours: Tokenizer, reference: Any) -> None:
    rng = random.Random(11)
    blocks = [(0, 0x250), (0x370, 0x400), (0x600, 0x700), (0x900, 0x980), (0x2000, 0x2070), (0x3000, 0x3100)]
    blocks += [(0x4E00, 0x4E80), (0xAC00, 0xAC80), (0xFE00, 0xFF00), (0x1F300, 0x1F700), (0x10000, 0x10100)]
    pool = [chr(c) for low, high in blocks for c in range(low, high) if not 0xD800 <= c <= 0xDFFF]
    pool += [chr(a) for a, _, _ in UNICODE_8]  # the characters whose category Unicode 8.0 saw differently
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    assert_same(ours, reference, texts)


def test_every_character_between_letters_tokenizes_as_with_tokenizers(
    ours: Tokenizer, reference: Any
) -> None:
    # All of the BMP below the surrogates: every category decision (controls, accents, punctuation,
    # CJK) is taken once per character.
    texts = [f"a{chr(c)}b" for c in range(0xD800)]
    expected = [e.ids for e in reference.encode_batch(texts)]
    got = [e.ids for e in ours.encode_batch(texts)]
    wrong = [ord(t[1]) for t, a, b in zip(texts, expected, got, strict=True) if a != b]
    # The only exceptions: characters unknown to this Python's Unicode that Rust's newer one lowercases.
    assert len(wrong) <= 10 and all(unicodedata.category(chr(c)) == "Cn" for c in wrong), wrong


def edited(tokenizer_json: Path, tmp_path: Path, **changes: Any) -> Path:
    config = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    config.update(changes)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"normalizer": {"type": "Lowercase"}}, "normalizer 'Lowercase'"),
        ({"pre_tokenizer": {"type": "ByteLevel"}}, "pre_tokenizer 'ByteLevel'"),
        ({"post_processor": {"type": "RobertaProcessing"}}, "post_processor 'RobertaProcessing'"),
        ({"model": {"type": "BPE", "vocab": {}, "merges": []}}, "model 'BPE'"),
    ],
)
def test_a_pipeline_other_than_berts_is_refused_by_part(
    tokenizer_json: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(NotImplementedError, match=rf"{message} is not BERT's.*SentenceTransformerEmbedder"):
        Tokenizer.from_file(edited(tokenizer_json, tmp_path, **change), max_length=MAX_LENGTH)


def test_a_file_that_is_not_a_json_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        Tokenizer.from_file(path, max_length=MAX_LENGTH)

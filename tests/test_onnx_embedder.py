"""Tests for `bsc.embedders.OnnxEmbedder`: the export cache, a torch-free second process, and
agreement with the torch embedder (vectors, binary codes, cache hit decisions)."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")
pytest.importorskip("torch")

from bsc import BinaryEncoder, SemanticCache
from bsc.embedders import OnnxEmbedder, SentenceTransformerEmbedder

PAIRS_TSV = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "prompt_pairs.tsv"
N_PAIRS = 50


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    with PAIRS_TSV.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(r["q1"], r["q2"]) for _, r in zip(range(N_PAIRS), rows, strict=False)]


@pytest.fixture(scope="module")
def prompts(pairs: list[tuple[str, str]]) -> list[str]:
    return [text for pair in pairs for text in pair]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx(cache_dir: Path) -> OnnxEmbedder:
    """Constructed once per module into an empty cache dir, so this is the exporting construction."""
    assert not list(cache_dir.iterdir())
    return OnnxEmbedder(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def minilm(single_thread_default_embedder: SentenceTransformerEmbedder) -> SentenceTransformerEmbedder:
    return single_thread_default_embedder


def test_first_construction_exports_one_graph_and_leaves_no_temp_files(
    onnx: OnnxEmbedder, cache_dir: Path
) -> None:
    assert sorted(cache_dir.iterdir()) == [onnx.graph_path]
    assert onnx.graph_path.suffix == ".onnx" and onnx.graph_path.stat().st_size > 10_000_000


def test_second_process_loads_the_cached_graph_without_importing_torch(
    onnx: OnnxEmbedder, cache_dir: Path, prompts: list[str]
) -> None:
    mtime = onnx.graph_path.stat().st_mtime_ns
    code = (
        "import json, sys\n"
        "from bsc.embedders import OnnxEmbedder\n"
        "texts = json.loads(sys.stdin.read())\n"
        "vectors = OnnxEmbedder(cache_dir=sys.argv[1]).embed(texts)\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers'} & loaded\n"
        "assert not heavy, heavy\n"
        "print(json.dumps(vectors.tolist()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(cache_dir)],
        input=json.dumps(prompts[:20]),
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    vectors = np.array(json.loads(result.stdout), dtype=np.float32)
    np.testing.assert_allclose(vectors, onnx.embed(prompts[:20]), atol=1e-6)
    assert onnx.graph_path.stat().st_mtime_ns == mtime  # loaded, not exported again


def test_vectors_and_binary_codes_match_the_torch_embedder(
    onnx: OnnxEmbedder, minilm: SentenceTransformerEmbedder, prompts: list[str]
) -> None:
    ours, reference = onnx.embed(prompts), minilm.embed(prompts)
    assert ours.shape == (len(prompts), 384) and ours.dtype == np.float32 and ours.flags.c_contiguous
    assert float(np.abs(ours - reference).max()) < 1e-5
    encoder = BinaryEncoder(384)
    np.testing.assert_array_equal(encoder.encode(ours), encoder.encode(reference))


def test_name_is_the_torch_embedders_name_so_caches_are_shared(
    onnx: OnnxEmbedder, minilm: SentenceTransformerEmbedder, cache_dir: Path
) -> None:
    assert onnx.name == minilm.name == "sentence-transformers:all-MiniLM-L6-v2"
    assert OnnxEmbedder(cache_dir=cache_dir, name="mine").name == "mine"


def test_batch_size_does_not_change_the_vectors(
    onnx: OnnxEmbedder, cache_dir: Path, prompts: list[str]
) -> None:
    small_batches = OnnxEmbedder(cache_dir=cache_dir, batch_size=3)
    np.testing.assert_allclose(small_batches.embed(prompts[:30]), onnx.embed(prompts[:30]), atol=1e-6)


async def test_aembed_matches_embed_also_when_called_concurrently(
    onnx: OnnxEmbedder, prompts: list[str]
) -> None:
    chunks = [prompts[i : i + 10] for i in range(0, 40, 10)]
    results = await asyncio.gather(*(onnx.aembed(chunk) for chunk in chunks))
    for chunk, vectors in zip(chunks, results, strict=True):
        np.testing.assert_allclose(vectors, onnx.embed(chunk), atol=1e-6)
    assert (await onnx.aembed([])).shape == (0, 384)


def hit_decisions(
    embedder: OnnxEmbedder | SentenceTransformerEmbedder, pairs: list[tuple[str, str]]
) -> list[bool]:
    cache = SemanticCache(embedder)
    decisions = []
    for i, (q1, q2) in enumerate(pairs):
        cache.update(q1, f"answer {i}", namespace=str(i))
        decisions.append(cache.lookup(q2, namespace=str(i)) is not None)
    return decisions


def test_semantic_cache_makes_the_same_hit_decisions_as_with_torch(
    onnx: OnnxEmbedder, minilm: SentenceTransformerEmbedder, pairs: list[tuple[str, str]]
) -> None:
    ours, reference = hit_decisions(onnx, pairs), hit_decisions(minilm, pairs)
    assert ours == reference
    assert 0 < sum(ours) < len(ours)  # both outcomes occur, so a disagreement could show


def test_corrupt_cached_graph_is_exported_again(
    onnx: OnnxEmbedder, tmp_path: Path, prompts: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = tmp_path / onnx.graph_path.name
    corrupt.write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING, logger="bsc.embedders.onnx_runtime"):
        repaired = OnnxEmbedder(cache_dir=tmp_path)
    assert "unusable" in caplog.text
    assert repaired.graph_path == corrupt and corrupt.stat().st_size > 10_000_000
    np.testing.assert_allclose(repaired.embed(prompts[:4]), onnx.embed(prompts[:4]), atol=1e-5)


def test_export_without_torch_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"bsc-cache\[local,onnx\]"):
        OnnxEmbedder(cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.onnx"))


def test_missing_onnxruntime_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"bsc-cache\[onnx\]"):
        OnnxEmbedder()


def test_bad_input_raises_the_protocol_errors(onnx: OnnxEmbedder) -> None:
    with pytest.raises(TypeError, match="single str"):
        onnx.embed("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        onnx.embed(["fine", 3])  # type: ignore[list-item]
    assert onnx.embed([]).shape == (0, 384)


@pytest.mark.parametrize("option", [{"batch_size": 0}, {"threads": 0}])
def test_non_positive_sizes_are_rejected(option: dict[str, int], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        OnnxEmbedder(cache_dir=tmp_path, **option)


def test_model_that_is_not_a_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="local model directory"):
        OnnxEmbedder(tmp_path / "missing", cache_dir=tmp_path)


def copy_model(source: Path, target: Path) -> Path:
    """A copy of the packaged model's small files, with the weights linked rather than copied."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    return target


def test_pooling_other_than_mean_is_not_implemented(minilm_path: Path, tmp_path: Path) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    config = json.loads((model / "1_Pooling" / "config.json").read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (model / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotImplementedError, match="mean pooling only"):
        OnnxEmbedder(model, cache_dir=tmp_path)


def test_modules_beyond_pooling_and_normalize_are_not_implemented(minilm_path: Path, tmp_path: Path) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(NotImplementedError, match="Dense"):
        OnnxEmbedder(model, cache_dir=tmp_path)


def test_copied_model_directory_shares_the_cached_graph(
    onnx: OnnxEmbedder, minilm_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    model = copy_model(minilm_path, tmp_path / "my-minilm")
    copy = OnnxEmbedder(model, cache_dir=cache_dir)
    assert copy.graph_path == onnx.graph_path  # keyed by config and weights, not by path
    assert copy.name == "sentence-transformers:my-minilm"


def test_both_local_embedders_agree_on_which_texts_overflow_the_model(
    onnx: OnnxEmbedder, minilm: SentenceTransformerEmbedder, prompts: list[str]
) -> None:
    long = " ".join(["token"] * 300)
    edge = " ".join(["word"] * 254)  # 254 words + [CLS] + [SEP] = 256 tokens: just fits
    texts = [*prompts[:20], long, edge, edge + " more"]
    expected = [False] * 20 + [True, False, True]
    assert minilm.overflows(texts) == expected
    assert onnx.overflows(texts) == expected

"""Tests for `bsc.embedders.OnnxEmbedder`, the default embedder: equality with sentence-transformers
(against vectors it recorded, so torch need not be installed), a torch-free process, the BERT
variants it loads and the ones it refuses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")

from bsc import BinaryEncoder, SemanticCache
from bsc.embedders import OnnxEmbedder
from bsc.embedders.protocol import _EmbedderBase
from safetensors import numpy as safetensors_numpy

REFERENCE = Path(__file__).resolve().parent / "data" / "minilm_reference.npz"
# float32 rounding in a different order of operations than torch; measured ~3e-7.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference() -> dict[str, npt.NDArray[np.generic]]:
    """sentence-transformers' vectors for ~300 texts (tests/data/make_minilm_reference.py)."""
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def texts(reference: dict[str, npt.NDArray[np.generic]]) -> list[str]:
    return [str(t) for t in reference["texts"]]


@pytest.fixture(scope="module")
def onnx(single_thread_default_embedder: OnnxEmbedder) -> OnnxEmbedder:
    return single_thread_default_embedder


def test_vectors_equal_sentence_transformers_on_short_long_truncated_and_non_ascii_texts(
    onnx: OnnxEmbedder, reference: dict[str, npt.NDArray[np.generic]], texts: list[str]
) -> None:
    expected = reference["vectors"].astype(np.float32)
    assert {"", " "} <= set(texts) and any("東京" in t for t in texts) and reference["overflows"].sum() >= 5
    ours = onnx.embed(texts)
    assert ours.shape == expected.shape == (len(texts), 384)
    assert ours.dtype == np.float32 and ours.flags.c_contiguous
    cosine = (ours.astype(np.float64) * expected).sum(axis=1)
    assert float(np.abs(1.0 - cosine).max()) <= TOLERANCE
    assert float(np.abs(ours - expected).max()) <= TOLERANCE


def test_binary_codes_equal_those_of_the_sentence_transformers_vectors(
    onnx: OnnxEmbedder, reference: dict[str, npt.NDArray[np.generic]], texts: list[str]
) -> None:
    encoder = BinaryEncoder(384, 256, 42)
    ours = encoder.encode(onnx.embed(texts))
    expected = encoder.encode(reference["vectors"].astype(np.float32))
    assert (ours == expected).all(axis=1).mean() >= 0.999


def test_overflow_flags_equal_sentence_transformers_truncation(
    onnx: OnnxEmbedder, reference: dict[str, npt.NDArray[np.generic]], texts: list[str]
) -> None:
    assert onnx.max_seq_length == int(reference["max_seq_length"]) == 256
    assert onnx.overflows(texts) == reference["overflows"].tolist()
    edge = " ".join(["word"] * 254)  # 254 words + [CLS] + [SEP] = 256 tokens: just fits
    assert onnx.overflows([edge, edge + " more"]) == [False, True]


class RecordedEmbedder(_EmbedderBase):
    """Replays the vectors sentence-transformers recorded for the reference texts."""

    def __init__(self, texts: list[str], vectors: npt.NDArray[np.float32], name: str) -> None:
        self._rows = {t: v for t, v in zip(texts, vectors, strict=True)}
        self._dim = vectors.shape[1]
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def _embed_batch(self, texts: list[str]) -> object:
        return np.stack([self._rows[t] for t in texts])

    async def _aembed_batch(self, texts: list[str]) -> object:
        return self._embed_batch(texts)


def hit_decisions(embedder: _EmbedderBase, pairs: list[tuple[str, str]]) -> list[bool]:
    cache = SemanticCache(embedder)
    decisions = []
    for i, (q1, q2) in enumerate(pairs):
        cache.update(q1, f"answer {i}", namespace=str(i))
        decisions.append(cache.lookup(q2, namespace=str(i)) is not None)
    return decisions


def test_semantic_cache_makes_the_same_hit_decisions_as_with_sentence_transformers(
    onnx: OnnxEmbedder, reference: dict[str, npt.NDArray[np.generic]], texts: list[str]
) -> None:
    # The reference starts with prompt pairs (q1, q2, q1, q2, ...) from benchmarks/data/prompt_pairs.tsv.
    pairs = [(texts[i], texts[i + 1]) for i in range(0, 250, 2)]
    recorded = RecordedEmbedder(texts, reference["vectors"].astype(np.float32), onnx.name)
    ours, expected = hit_decisions(onnx, pairs), hit_decisions(recorded, pairs)
    assert ours == expected
    assert 0 < sum(ours) < len(ours)  # both outcomes occur, so a disagreement could show


def test_a_fresh_process_embeds_without_importing_torch_onnx_tokenizers_or_safetensors(
    onnx: OnnxEmbedder, texts: list[str]
) -> None:
    code = (
        "import json, sys\n"
        "from bsc.embedders import default_embedder\n"
        "vectors = default_embedder().embed(json.loads(sys.stdin.read()))\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers', 'onnx', 'tokenizers', 'safetensors',\n"
        "         'huggingface_hub'} & loaded\n"
        "assert not heavy, heavy\n"
        "print(json.dumps(vectors.tolist()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(texts[:20]),
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    vectors = np.array(json.loads(result.stdout), dtype=np.float32)
    np.testing.assert_allclose(vectors, onnx.embed(texts[:20]), atol=1e-6)


def test_name_is_the_torch_embedders_name_so_caches_are_shared(onnx: OnnxEmbedder) -> None:
    assert onnx.name == "sentence-transformers:all-MiniLM-L6-v2"
    assert OnnxEmbedder(name="mine").name == "mine"


@pytest.mark.parametrize("options", [{"batch_size": 3}, {"threads": 2}])
def test_batch_size_and_threads_do_not_change_the_vectors(
    onnx: OnnxEmbedder, texts: list[str], options: dict[str, int]
) -> None:
    np.testing.assert_allclose(OnnxEmbedder(**options).embed(texts[:30]), onnx.embed(texts[:30]), atol=1e-6)


async def test_aembed_matches_embed_also_when_called_concurrently(
    onnx: OnnxEmbedder, texts: list[str]
) -> None:
    chunks = [texts[i : i + 10] for i in range(0, 40, 10)]
    results = await asyncio.gather(*(onnx.aembed(chunk) for chunk in chunks))
    for chunk, vectors in zip(chunks, results, strict=True):
        np.testing.assert_allclose(vectors, onnx.embed(chunk), atol=1e-6)
    assert (await onnx.aembed([])).shape == (0, 384)


def test_int8_mode_stays_close_to_sentence_transformers_and_keys_caches_apart(
    onnx: OnnxEmbedder, reference: dict[str, npt.NDArray[np.generic]], texts: list[str]
) -> None:
    int8 = OnnxEmbedder(quantize="int8")
    assert int8.name == "sentence-transformers:all-MiniLM-L6-v2:int8" != onnx.name
    ours = int8.embed(texts)
    cosine = (ours.astype(np.float64) * reference["vectors"]).sum(axis=1)
    # Measured: mean 0.992, worst 0.960 (a one-character text); the float32 graph is within 1e-5.
    assert cosine.mean() >= 0.98 and cosine.min() >= 0.9
    assert float(np.abs(1.0 - cosine).max()) > TOLERANCE  # really the quantised graph
    np.testing.assert_allclose(int8.embed(texts[:5]), ours[:5], atol=1e-6)  # deterministic


def test_an_unknown_quantize_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match=r'quantize must be None or "int8", got \'fp16\''):
        OnnxEmbedder(quantize="fp16")  # type: ignore[arg-type]


def test_missing_onnxruntime_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"bsc-cache\[local\]"):
        OnnxEmbedder()


def test_bad_input_raises_the_protocol_errors(onnx: OnnxEmbedder) -> None:
    with pytest.raises(TypeError, match="single str"):
        onnx.embed("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        onnx.embed(["fine", 3])  # type: ignore[list-item]
    assert onnx.embed([]).shape == (0, 384)


@pytest.mark.parametrize("option", [{"batch_size": 0}, {"threads": 0}])
def test_non_positive_sizes_are_rejected(option: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        OnnxEmbedder(**option)


def test_model_that_is_not_a_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="local model directory"):
        OnnxEmbedder(tmp_path / "missing")


def copy_model(source: Path, target: Path) -> Path:
    """A copy of the packaged model's small files, with the weights linked rather than copied."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    (target / "model.safetensors").symlink_to(source / "model.safetensors")
    return target


def edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_pooling_other_than_mean_or_cls_is_not_implemented(minilm_path: Path, tmp_path: Path) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    edit_json(
        model / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True
    )
    with pytest.raises(NotImplementedError, match=r"mean or cls pooling.*max"):
        OnnxEmbedder(model)


def test_cls_pooling_embeds_the_first_token(onnx: OnnxEmbedder, minilm_path: Path, tmp_path: Path) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    edit_json(
        model / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False, pooling_mode_cls_token=True
    )
    texts = ["The cat sat on the mat.", "hello"]
    cls, mean = OnnxEmbedder(model).embed(texts), onnx.embed(texts)
    assert float(np.abs(cls - mean).max()) > 0.01  # a different vector, still a sensible one:
    assert float(cls[0] @ cls[1]) < 0.99


def test_modules_beyond_pooling_and_normalize_are_not_implemented(minilm_path: Path, tmp_path: Path) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(NotImplementedError, match="Dense"):
        OnnxEmbedder(model)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "roberta"}, r"model_type 'roberta' is not supported.*bsc-cache\[torch\]"),
        ({"position_embedding_type": "relative_key"}, "relative_key"),
        ({"hidden_act": "silu"}, "hidden_act 'silu'"),
    ],
)
def test_an_architecture_it_does_not_compute_is_refused_by_name(
    minilm_path: Path, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    edit_json(model / "config.json", **change)
    with pytest.raises(NotImplementedError, match=message):
        OnnxEmbedder(model)


def test_a_model_without_safetensors_weights_is_refused(minilm_path: Path, tmp_path: Path) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    (model / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        OnnxEmbedder(model)


def smaller_bert(minilm_path: Path, target: Path, layers: int, prefix: str = "") -> Path:
    """A BERT of another shape: the packaged model cut to its first `layers` layers, saved anew."""
    shutil.copytree(minilm_path, target, ignore=shutil.ignore_patterns("*.safetensors"))
    weights = safetensors_numpy.load_file(minilm_path / "model.safetensors")
    kept = {
        f"{prefix}{name}": value
        for name, value in weights.items()
        if not name.startswith("encoder.layer.") or int(name.split(".")[2]) < layers
    }
    safetensors_numpy.save_file(kept, target / "model.safetensors")
    edit_json(target / "config.json", num_hidden_layers=layers)
    return target


def test_a_bert_of_another_depth_loads_and_checkpoint_name_prefixes_do_not_matter(
    onnx: OnnxEmbedder, minilm_path: Path, tmp_path: Path, texts: list[str]
) -> None:
    plain = OnnxEmbedder(smaller_bert(minilm_path, tmp_path / "two-layers", 2))
    prefixed = OnnxEmbedder(smaller_bert(minilm_path, tmp_path / "prefixed", 2, prefix="bert."))
    assert plain.name == "sentence-transformers:two-layers"
    np.testing.assert_allclose(plain.embed(texts[:10]), prefixed.embed(texts[:10]), atol=1e-6)
    assert float(np.abs(plain.embed(texts[:10]) - onnx.embed(texts[:10])).max()) > 0.01


@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "relu"])
def test_a_bert_of_another_shape_equals_sentence_transformers_where_torch_is_installed(
    minilm_path: Path, tmp_path: Path, texts: list[str], activation: str
) -> None:
    pytest.importorskip("torch")
    from bsc.embedders import SentenceTransformerEmbedder

    model = smaller_bert(minilm_path, tmp_path / "two-layers", 2)
    edit_json(model / "config.json", hidden_act=activation)
    expected = SentenceTransformerEmbedder(model).embed(texts[200:260])
    assert float(np.abs(OnnxEmbedder(model).embed(texts[200:260]) - expected).max()) <= TOLERANCE


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_embeds_with_the_parents_default_embedder(run_isolated: Any) -> None:
    # gunicorn --preload / Celery prefork: the model is loaded once in the parent, then used in children.
    # With one intra-op thread onnxruntime has no worker pool that the fork could leave behind.
    out = run_isolated(
        """
        import os, sys, warnings
        import numpy as np
        from bsc.embedders import default_embedder
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a multi-threaded process
        embedder = default_embedder()
        expected = embedder.embed(["a forked worker embeds this"])
        pid = os.fork()
        if pid == 0:
            same = np.allclose(embedder.embed(["a forked worker embeds this"]), expected, atol=1e-6)
            os._exit(0 if same else 1)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """,
        timeout=300,
    )
    assert out.strip() == "0"

"""Tests for `bsc.embedders.NativeEmbedder`, the default embedder (bsc's Rust BERT encoder): equality with
sentence-transformers (against vectors it recorded, so neither torch nor onnxruntime is needed; for
`OnnxEmbedder`'s float32 graph too), both matrix kernels, batching and padding invariance, a process
without torch or onnxruntime, bad inputs, and the BERT variants the local embedders load or refuse
(shared with `OnnxEmbedder`)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from bert_models import (
    TOLERANCE,
    RecordedEmbedder,
    copy_model,
    edit_json,
    hit_decisions,
    load_reference,
    smaller_bert,
)
from bsc import BinaryEncoder
from bsc._native import BertModel
from bsc.embedders import NativeEmbedder, OnnxEmbedder, default_embedder
from bsc.embedders.bert_checkpoint import BertConfig, Weights

Reference = dict[str, npt.NDArray[np.generic]]


@pytest.fixture(scope="module")
def reference() -> Reference:
    return load_reference()


@pytest.fixture(scope="module")
def texts(reference: Reference) -> list[str]:
    return [str(t) for t in reference["texts"]]


@pytest.fixture(scope="module")
def native(single_thread_default_embedder: NativeEmbedder) -> NativeEmbedder:
    return single_thread_default_embedder


@pytest.fixture(scope="module", params=["NativeEmbedder", "OnnxEmbedder"])
def float32(request: pytest.FixtureRequest, native: NativeEmbedder) -> NativeEmbedder | OnnxEmbedder:
    """Each float32 local runtime: both must give sentence-transformers' vectors."""
    if request.param == "NativeEmbedder":
        return native
    pytest.importorskip("onnxruntime")
    return OnnxEmbedder(threads=1)


def test_the_default_embedder_is_the_native_one(native: NativeEmbedder) -> None:
    assert isinstance(native, NativeEmbedder) and native is default_embedder()
    assert native.name == "sentence-transformers:all-MiniLM-L6-v2"
    assert NativeEmbedder(name="mine").name == "mine"


def test_vectors_equal_sentence_transformers_on_short_long_truncated_and_non_ascii_texts(
    float32: NativeEmbedder | OnnxEmbedder, reference: Reference, texts: list[str]
) -> None:
    expected = reference["vectors"].astype(np.float32)
    assert {"", " "} <= set(texts) and any("東京" in t for t in texts) and reference["overflows"].sum() >= 5
    ours = float32.embed(texts)
    assert ours.shape == expected.shape == (len(texts), 384)
    assert ours.dtype == np.float32 and ours.flags.c_contiguous
    cosine = (ours.astype(np.float64) * expected).sum(axis=1)
    assert float(np.abs(1.0 - cosine).max()) <= TOLERANCE
    assert float(np.abs(ours - expected).max()) <= TOLERANCE


def test_binary_codes_equal_those_of_the_sentence_transformers_vectors(
    float32: NativeEmbedder | OnnxEmbedder, reference: Reference, texts: list[str]
) -> None:
    encoder = BinaryEncoder(384, 256, 42)
    ours = encoder.encode(float32.embed(texts))
    expected = encoder.encode(reference["vectors"].astype(np.float32))
    assert (ours == expected).all(axis=1).mean() >= 0.999


def test_overflow_flags_equal_sentence_transformers_truncation(
    float32: NativeEmbedder | OnnxEmbedder, reference: Reference, texts: list[str]
) -> None:
    assert float32.max_seq_length == int(reference["max_seq_length"]) == 256
    assert float32.overflows(texts) == reference["overflows"].tolist()
    vectors, flags = float32.embed_with_overflow(texts)
    assert flags == reference["overflows"].tolist()
    np.testing.assert_array_equal(vectors, float32.embed(texts))
    edge = " ".join(["word"] * 254)  # 254 words + [CLS] + [SEP] = 256 tokens: just fits
    assert float32.overflows([edge, edge + " more"]) == [False, True]


def test_semantic_cache_makes_the_same_hit_decisions_as_with_sentence_transformers(
    float32: NativeEmbedder | OnnxEmbedder, reference: Reference, texts: list[str]
) -> None:
    # The reference starts with prompt pairs (q1, q2, q1, q2, ...) from benchmarks/data/prompt_pairs.tsv.
    pairs = [(texts[i], texts[i + 1]) for i in range(0, 250, 2)]
    recorded = RecordedEmbedder(texts, reference["vectors"].astype(np.float32), float32.name)
    ours, expected = hit_decisions(float32, pairs), hit_decisions(recorded, pairs)
    assert ours == expected
    assert 0 < sum(ours) < len(ours)  # both outcomes occur, so a disagreement could show


def test_a_fresh_process_embeds_with_onnxruntime_unimportable_and_no_heavy_import(
    native: NativeEmbedder, texts: list[str]
) -> None:
    code = (
        "import json, sys\n"
        "sys.modules['onnxruntime'] = None  # as if not installed\n"
        "from bsc.embedders import default_embedder\n"
        "vectors = default_embedder().embed(json.loads(sys.stdin.read()))\n"
        "loaded = {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers', 'onnx', 'onnxruntime', 'tokenizers',\n"
        "         'safetensors', 'huggingface_hub'} & loaded\n"
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
    np.testing.assert_allclose(vectors, native.embed(texts[:20]), atol=1e-6)


def test_a_text_embeds_the_same_alone_and_padded_in_a_batch_of_longer_texts(
    native: NativeEmbedder, texts: list[str]
) -> None:
    short = "A short prompt."
    batch = [short, texts[260], "word " * 300, texts[5]]  # the others pad `short` to 256 tokens
    alone = native.embed([short])[0]
    np.testing.assert_allclose(native.embed(batch)[0], alone, atol=1e-6)
    np.testing.assert_allclose(native.embed(batch[::-1])[-1], alone, atol=1e-6)


@pytest.mark.parametrize("options", [{"batch_size": 3}, {"threads": 2}])
def test_batch_size_and_threads_do_not_change_the_vectors(
    float32: NativeEmbedder | OnnxEmbedder, texts: list[str], options: dict[str, int]
) -> None:
    np.testing.assert_allclose(
        type(float32)(**options).embed(texts[:30]), float32.embed(texts[:30]), atol=1e-6
    )


def minilm_model(minilm_path: Path, **options: Any) -> BertModel:
    config = BertConfig.read(minilm_path)
    settings: dict[str, Any] = {
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "activation": config.hidden_act,
        "layer_norm_eps": config.layer_norm_eps,
        "pooling": "mean",
    }
    weight = options.pop("weight", Weights(minilm_path).__getitem__)
    return BertModel(weight, **{**settings, **options})


def tokens(native: NativeEmbedder, texts: list[str]) -> list[npt.NDArray[np.int32]]:
    encodings = native._tokenizer.encode_batch(texts)
    return [
        np.array([getattr(e, field) for e in encodings], dtype=np.int32)
        for field in ("ids", "type_ids", "attention_mask")
    ]


def test_the_portable_kernel_equals_sentence_transformers_too(
    native: NativeEmbedder, minilm_path: Path, reference: Reference, texts: list[str]
) -> None:
    # The matrixmultiply fallback that CPUs without AVX-512 run.
    portable = minilm_model(minilm_path, portable=True)
    assert portable.kernel == "portable"
    batch = texts[:40] + texts[280:300]
    pooled = np.vstack([portable.forward(*tokens(native, batch[i : i + 8])) for i in range(0, 60, 8)])
    ours = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    expected = reference["vectors"][list(range(40)) + list(range(280, 300))]
    assert float(np.abs(1.0 - (ours.astype(np.float64) * expected).sum(axis=1)).max()) <= TOLERANCE


def test_bad_token_arrays_raise_value_or_type_errors_saying_what_was_expected(
    native: NativeEmbedder,
) -> None:
    model = native._model
    ids, types, mask = tokens(native, ["hello world"])
    with pytest.raises(ValueError, match=r"attention_mask has shape \[1, 3\], expected input_ids' shape"):
        model.forward(ids, types, mask[:, :3])
    with pytest.raises(ValueError, match=r"input_ids\[1\] = 30522 is outside the vocabulary of 30522"):
        model.forward(np.array([[101, 30522, 102]], dtype=np.int32), types[:, :3], mask[:, :3])
    with pytest.raises(ValueError, match=r"input_ids\[0\] = -1 is outside"):
        model.forward(np.full((1, 3), -1, dtype=np.int32), types[:, :3], mask[:, :3])
    with pytest.raises(ValueError, match=r"token_type_ids\[0\] = 2 is outside the model's 2 token types"):
        model.forward(ids, np.full_like(types, 2), mask)
    with pytest.raises(ValueError, match=r"attention_mask\[2\] = 7 must be 0 or 1"):
        model.forward(ids, types, np.array([[1, 1, 7, 1]], dtype=np.int32))
    long = np.zeros((1, 513), dtype=np.int32)
    with pytest.raises(ValueError, match="513 tokens are longer than the model's 512 positions"):
        model.forward(long, long, long)
    with pytest.raises(ValueError, match="threads must be positive"):
        model.forward(ids, types, mask, threads=0)
    with pytest.raises(TypeError):
        model.forward(ids.astype(np.int64), types, mask)
    assert model.forward(ids[:0], types[:0], mask[:0]).shape == (0, 384)


def test_bad_weights_raise_errors_naming_the_tensor(minilm_path: Path) -> None:
    weights = Weights(minilm_path)
    query = "encoder.layer.1.attention.self.query.weight"

    def cut(name: str) -> npt.NDArray[np.float32]:
        return weights[name][:100] if name == query else weights[name]

    with pytest.raises(ValueError, match=rf"{query}.*shape \[100, 384\].*expected \(384, 384\)"):
        minilm_model(minilm_path, weight=cut)
    with pytest.raises(TypeError, match="must return a float32 NumPy array"):
        minilm_model(minilm_path, weight=lambda n: weights[n].astype(np.float64))
    missing = r"weight 'encoder\.layer\.6\.attention\.self\.query\.weight' is missing"
    with pytest.raises(ValueError, match=missing):
        minilm_model(minilm_path, num_layers=7)
    with pytest.raises(ValueError, match='activation "silu" is not computed'):
        minilm_model(minilm_path, activation="silu")
    with pytest.raises(ValueError, match='pooling "max" is not computed'):
        minilm_model(minilm_path, pooling="max")
    with pytest.raises(ValueError, match="positive multiple of num_heads 5"):
        minilm_model(minilm_path, num_heads=5)


def test_bad_texts_raise_the_protocol_errors(float32: NativeEmbedder | OnnxEmbedder) -> None:
    with pytest.raises(TypeError, match="single str"):
        float32.embed("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        float32.embed(["fine", 3])  # type: ignore[list-item]
    assert float32.embed([]).shape == (0, 384)


async def test_aembed_matches_embed_also_when_called_concurrently(
    float32: NativeEmbedder | OnnxEmbedder, texts: list[str]
) -> None:
    chunks = [texts[i : i + 10] for i in range(0, 40, 10)]
    results = await asyncio.gather(*(float32.aembed(chunk) for chunk in chunks))
    for chunk, vectors in zip(chunks, results, strict=True):
        np.testing.assert_allclose(vectors, float32.embed(chunk), atol=1e-6)
    assert (await float32.aembed([])).shape == (0, 384)
    vectors, flags = await float32.aembed_with_overflow(["hi", "word " * 300])
    assert flags == [False, True] and vectors.shape == (2, 384)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_embeds_with_the_parents_embedders_also_a_two_thread_one(run_isolated: Any) -> None:
    # gunicorn --preload / Celery prefork: the model is loaded once in the parent, then used in children.
    # The two-thread embedder used bsc's worker pool in the parent; the child has no workers and must
    # run on its own thread instead of waiting for them.
    out = run_isolated(
        """
        import os, warnings
        import numpy as np
        from bsc.embedders import NativeEmbedder, default_embedder
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a multi-threaded process
        embedders = [default_embedder(), NativeEmbedder(threads=2)]
        expected = [e.embed(["a forked worker embeds this"]) for e in embedders]
        pid = os.fork()
        if pid == 0:
            same = all(
                np.allclose(e.embed(["a forked worker embeds this"]), x, atol=1e-6)
                for e, x in zip(embedders, expected)
            )
            os._exit(0 if same else 1)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """,
        timeout=300,
    )
    assert out.strip() == "0"


# ------------------------------------------------- model directories: shared by both local runtimes

LOCAL_EMBEDDERS = [NativeEmbedder, OnnxEmbedder]


@pytest.fixture(params=LOCAL_EMBEDDERS, ids=lambda c: c.__name__)
def local_class(request: pytest.FixtureRequest) -> type[NativeEmbedder | OnnxEmbedder]:
    if request.param is OnnxEmbedder:
        pytest.importorskip("onnxruntime")
    cls: type[NativeEmbedder | OnnxEmbedder] = request.param
    return cls


@pytest.mark.parametrize("option", [{"batch_size": 0}, {"threads": 0}])
def test_non_positive_sizes_are_rejected(local_class: type, option: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        local_class(**option)


def test_model_that_is_not_a_directory_is_rejected(local_class: type, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="local model directory"):
        local_class(tmp_path / "missing")


def test_pooling_other_than_mean_or_cls_is_not_implemented(
    local_class: type, minilm_path: Path, tmp_path: Path
) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    edit_json(
        model / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True
    )
    with pytest.raises(NotImplementedError, match=r"mean or cls pooling.*max"):
        local_class(model)


def test_cls_pooling_embeds_the_first_token_as_both_runtimes_compute_it(
    native: NativeEmbedder, minilm_path: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    model = copy_model(minilm_path, tmp_path / "model")
    edit_json(
        model / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False, pooling_mode_cls_token=True
    )
    texts = ["The cat sat on the mat.", "hello"]
    cls, mean = NativeEmbedder(model).embed(texts), native.embed(texts)
    assert float(np.abs(cls - mean).max()) > 0.01  # a different vector, still a sensible one:
    assert float(cls[0] @ cls[1]) < 0.99
    np.testing.assert_allclose(cls, OnnxEmbedder(model).embed(texts), atol=TOLERANCE)


def test_modules_beyond_pooling_and_normalize_are_not_implemented(
    local_class: type, minilm_path: Path, tmp_path: Path
) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(NotImplementedError, match="Dense"):
        local_class(model)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "roberta"}, r"model_type 'roberta' is not supported.*bsc-cache\[torch\]"),
        ({"position_embedding_type": "relative_key"}, "relative_key"),
        ({"hidden_act": "silu"}, "hidden_act 'silu'"),
    ],
)
def test_an_architecture_it_does_not_compute_is_refused_by_name(
    local_class: type, minilm_path: Path, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    edit_json(model / "config.json", **change)
    with pytest.raises(NotImplementedError, match=message):
        local_class(model)


def test_a_model_without_safetensors_weights_is_refused(
    local_class: type, minilm_path: Path, tmp_path: Path
) -> None:
    model = copy_model(minilm_path, tmp_path / "model")
    (model / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        local_class(model)


def test_a_bert_of_another_depth_loads_and_checkpoint_name_prefixes_do_not_matter(
    native: NativeEmbedder, minilm_path: Path, tmp_path: Path, texts: list[str]
) -> None:
    pytest.importorskip("safetensors")
    plain = NativeEmbedder(smaller_bert(minilm_path, tmp_path / "two-layers", 2))
    prefixed = NativeEmbedder(smaller_bert(minilm_path, tmp_path / "prefixed", 2, prefix="bert."))
    assert plain.name == "sentence-transformers:two-layers"
    np.testing.assert_allclose(plain.embed(texts[:10]), prefixed.embed(texts[:10]), atol=1e-6)
    assert float(np.abs(plain.embed(texts[:10]) - native.embed(texts[:10])).max()) > 0.01


@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "relu"])
def test_every_activation_equals_onnxruntime_and_sentence_transformers_where_installed(
    minilm_path: Path, tmp_path: Path, texts: list[str], activation: str
) -> None:
    # onnxruntime runs each activation with its own kernels (BiasGelu, FastGelu, Relu), so it checks the
    # native encoder's without torch; torch, where installed, checks both.
    pytest.importorskip("safetensors")
    pytest.importorskip("onnxruntime")
    model = smaller_bert(minilm_path, tmp_path / "two-layers", 2)
    edit_json(model / "config.json", hidden_act=activation)
    ours = NativeEmbedder(model).embed(texts[200:260])
    assert float(np.abs(ours - OnnxEmbedder(model).embed(texts[200:260])).max()) <= TOLERANCE
    if importlib.util.find_spec("torch") is None:
        return
    from bsc.embedders import SentenceTransformerEmbedder

    expected = SentenceTransformerEmbedder(model).embed(texts[200:260])
    assert float(np.abs(ours - expected).max()) <= TOLERANCE

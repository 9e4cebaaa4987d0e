"""Tests for `bsc.embedders.OnnxEmbedder`, the opt-in onnxruntime embedder (``bsc-cache[onnx]``): its int8
mode and what only it can get wrong. Its float32 graph's equality with sentence-transformers, async and
bad-input behaviour and the model-directory checks it shares with the default `NativeEmbedder` are
tested for both in tests/test_native_embedder.py."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")

from bert_models import TOLERANCE, load_reference
from bsc.embedders import OnnxEmbedder


@pytest.fixture(scope="module")
def reference() -> dict[str, npt.NDArray[np.generic]]:
    return load_reference()


@pytest.fixture(scope="module")
def texts(reference: dict[str, npt.NDArray[np.generic]]) -> list[str]:
    return [str(t) for t in reference["texts"]]


@pytest.fixture(scope="module")
def onnx() -> OnnxEmbedder:
    return OnnxEmbedder(threads=1)


def test_name_is_the_torch_embedders_name_so_caches_are_shared_with_the_native_one(
    onnx: OnnxEmbedder,
) -> None:
    assert onnx.name == "sentence-transformers:all-MiniLM-L6-v2"
    assert OnnxEmbedder(name="mine").name == "mine"


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
    with pytest.raises(ImportError, match=r"bsc-cache\[onnx\]"):
        OnnxEmbedder()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_embeds_with_the_parents_onnx_embedder(run_isolated: Any) -> None:
    # gunicorn --preload / Celery prefork: the model is loaded once in the parent, then used in children.
    # With one intra-op thread onnxruntime has no worker pool that the fork could leave behind.
    out = run_isolated(
        """
        import os, sys, warnings
        import numpy as np
        from bsc.embedders import OnnxEmbedder
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a multi-threaded process
        embedder = OnnxEmbedder(threads=1)
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

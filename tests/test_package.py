"""The package's public surface: explicit exports, a light import, stubs that match the compiled module."""

from __future__ import annotations

import subprocess
import sys
from importlib.resources import files

import bsc


def test_public_names_are_exactly_these() -> None:
    assert sorted(bsc.__all__) == sorted(
        [
            "DEFAULT_RERANK",
            "DEFAULT_THRESHOLD",
            "BinaryEncoder",
            "BinarySemanticCache",
            "CacheFormatError",
            "CacheStats",
            "FalseHitGuard",
            "Hit",
            "SemanticCache",
            "SemanticCacheStats",
            "Verifier",
        ]
    )
    for name in bsc.__all__:
        assert hasattr(bsc, name), name


def test_importing_bsc_pulls_in_only_numpy() -> None:
    code = (
        "import sys, bsc, bsc.embedders, bsc.persistence, bsc.guard, bsc.cli;"
        "heavy = {'torch', 'sentence_transformers', 'transformers', 'langchain_core', 'llama_index', "
        "'openai', 'httpx', 'xxhash', 'msgpack', 'onnxruntime', 'tokenizers', "
        "'starlette', 'uvicorn', 'prometheus_client'} "
        "& set(m.split('.')[0] for m in sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_type_stubs_match_the_compiled_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "bsc._native"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_ships_its_typing_marker_and_demo_prompts() -> None:
    assert files("bsc").joinpath("py.typed").is_file()
    prompts = files("bsc").joinpath("demo_data/prompts.jsonl").read_text().splitlines()
    assert len(prompts) >= 100

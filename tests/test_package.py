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
        "import sys, bsc, bsc.embedders, bsc.persistence, bsc.guard;"
        "heavy = {'torch', 'sentence_transformers', 'transformers', 'langchain_core', 'llama_index', "
        "'openai', 'httpx', 'xxhash', 'msgpack', 'onnxruntime', 'tokenizers'} "
        "& set(m.split('.')[0] for m in sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_type_stubs_match_the_compiled_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "bsc._native"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_ships_its_typing_marker() -> None:
    assert files("bsc").joinpath("py.typed").is_file()


def test_bsc_demo_without_langchain_bsc_says_what_to_install_in_one_line() -> None:
    # `bsc-cache` alone (no langchain-bsc): None in sys.modules makes the import fail as if not installed.
    code = (
        "import sys; sys.modules['langchain_bsc'] = None;"
        "from bsc.cli import main; raise SystemExit(main(['demo', '--no-progress']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "langchain_bsc" in lines[0]
    assert "pip install" in lines[0] and "integrations/langchain_bsc" in lines[0]

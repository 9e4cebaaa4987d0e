"""The package's public surface: explicit exports, a light import, stubs that match the compiled module."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import subprocess
import sys
import tomllib
from importlib.resources import files
from pathlib import Path

import bsc
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_are_exactly_these() -> None:
    assert sorted(bsc.__all__) == sorted(
        [
            "__version__",
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
            "TextHit",
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


@pytest.mark.parametrize(
    ("module", "distribution"),
    [("bsc", "bsc-cache"), ("langchain_bsc", "langchain-bsc"), ("llamaindex_bsc", "llama-index-bsc")],
)
def test_every_package_exports_the_version_of_its_installed_distribution(
    module: str, distribution: str
) -> None:
    pytest.importorskip(module)
    version = importlib.import_module(module).__version__
    assert version == importlib.metadata.version(distribution)


def test_bsc_version_is_the_one_in_pyproject_and_cargo() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    assert bsc.__version__ == pyproject["project"]["version"] == cargo["package"]["version"]


def test_digest_is_blake2b_128_of_the_utf8_text_and_takes_only_str() -> None:
    from bsc.digest import digest

    # Namespace names and exact keys in saved snapshots are built from it: it must never change.
    assert digest("hello").hex() == "46fb7408d4f285228f4af516ea25851b"
    assert digest("Grüße") == hashlib.blake2b("Grüße".encode(), digest_size=16).digest()
    with pytest.raises(TypeError, match="takes a str, got bytes"):
        digest(b"hello")  # type: ignore[arg-type]

"""The three distributions build into wheels that hold exactly their package, and those wheels work.

A wheel once shipped without both adapters while every test passed against the source tree, so this
builds the real wheels (once per session: `maturin build` for bsc-cache, which reuses the editable
install's compiled crate in ``target/``, and ``pip wheel`` for the two pure-Python integrations) and
compares each wheel with its package's source folder, then imports the packages from the unpacked
wheels, not from the checkout.
"""

from __future__ import annotations

import configparser
import email.parser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# distribution -> (source folder holding the package, import name)
DISTRIBUTIONS = {
    "bsc_cache": (ROOT / "core", "bsc"),
    "langchain_bsc": (ROOT / "integrations" / "langchain_bsc", "langchain_bsc"),
    "llama_index_bsc": (ROOT / "integrations" / "llamaindex_bsc", "llamaindex_bsc"),
}


def _tool(name: str) -> str:
    """An executable of this interpreter's environment (the test extra installs maturin)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found is not None, f"{name} is not installed beside {sys.executable}: pip install -e '.[test]'"
    return found


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """distribution (normalised) -> its freshly built wheel."""
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [_tool("maturin"), "build", "--quiet", "--interpreter", sys.executable, "--out", str(out)],
        cwd=ROOT,
        check=True,
    )
    for source, _ in list(DISTRIBUTIONS.values())[1:]:
        pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        subprocess.run([*pip_wheel, "--wheel-dir", str(out), str(source)], check=True)
    built = {path.name.split("-")[0]: path for path in out.glob("*.whl")}
    assert sorted(built) == sorted(DISTRIBUTIONS)
    return built


def _source_files(folder: Path, package: str) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in (folder / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".so"}
    }


def _metadata(wheel: zipfile.ZipFile, name: str) -> email.message.Message:
    return email.parser.Parser().parsestr(wheel.read(f"{_dist_info(wheel)}/{name}").decode())


def _dist_info(wheel: zipfile.ZipFile) -> str:
    (dist_info,) = {n.split("/")[0] for n in wheel.namelist() if n.split("/")[0].endswith(".dist-info")}
    return dist_info


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_wheel_holds_exactly_its_package(distribution: str, wheels: dict[str, Path]) -> None:
    folder, package = DISTRIBUTIONS[distribution]
    with zipfile.ZipFile(wheels[distribution]) as wheel:
        names = set(wheel.namelist())
        dist_info = _dist_info(wheel)
    top_level = {n.split("/")[0] for n in names}
    assert top_level == {package, dist_info}, "a wheel holds its own package and nothing else"
    in_package = {n for n in names if n.startswith(f"{package}/")}
    compiled = {n for n in in_package if n.startswith(f"{package}/_native.") and n.endswith(".so")}
    assert in_package - compiled == _source_files(folder, package)
    assert f"{package}/py.typed" in in_package
    if package == "bsc":
        assert len(compiled) == 1, "bsc ships its Rust extension"
        assert "bsc/_native.pyi" in in_package
    else:
        assert not compiled


def test_wheel_metadata_names_dependencies_and_the_cli(wheels: dict[str, Path]) -> None:
    requires = {}
    for distribution, path in wheels.items():
        with zipfile.ZipFile(path) as wheel:
            metadata = _metadata(wheel, "METADATA")
            requires[distribution] = {
                r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip()
                for r in metadata.get_all("Requires-Dist") or []
                if "extra ==" not in r
            }
            if distribution == "bsc_cache":
                entry_points = configparser.ConfigParser()
                entry_points.read_string(wheel.read(f"{_dist_info(wheel)}/entry_points.txt").decode())
                assert dict(entry_points["console_scripts"]) == {"bsc": "bsc.cli:main"}
    assert requires["bsc_cache"] == {"numpy"}
    assert requires["langchain_bsc"] == {"bsc-cache", "langchain-core"}
    assert requires["llama_index_bsc"] == {"bsc-cache", "llama-index-core"}


def test_packages_import_from_the_unpacked_wheels(wheels: dict[str, Path], tmp_path: Path) -> None:
    for path in wheels.values():
        with zipfile.ZipFile(path) as wheel:
            wheel.extractall(tmp_path)
    code = f"""
import sys
import bsc
heavy = {{"torch", "sentence_transformers", "transformers", "langchain_core", "llama_index"}}
assert not heavy & {{m.split(".")[0] for m in sys.modules}}, "import bsc pulled in a framework"
import numpy as np
cache = bsc.BinarySemanticCache(dim=3)
cache.put(np.array([0.9, 0.1, 0.0]), "42")
assert cache.get(np.array([0.9, 0.12, 0.0])).response == "42"
import langchain_bsc, llamaindex_bsc
from langchain_bsc.demo import load_prompts
assert len(load_prompts()) >= 100
from bsc.calibrate import demo_pairs  # `bsc calibrate --demo` reads its data file from the wheel
assert len(demo_pairs()) >= 300
for module in (bsc, bsc._native, langchain_bsc, llamaindex_bsc):
    assert module.__file__.startswith({str(tmp_path)!r}), module.__file__
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_every_wheel_ships_the_mit_license(distribution: str, wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels[distribution]) as wheel:
        metadata = _metadata(wheel, "METADATA")
        licenses = [n for n in wheel.namelist() if n.startswith(f"{_dist_info(wheel)}/licenses/")]
        assert [n.rsplit("/", 1)[1] for n in licenses] == ["LICENSE"]
        assert wheel.read(licenses[0]).decode().startswith("MIT License")
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]

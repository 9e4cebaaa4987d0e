"""The ``bsc`` command line: --version, ``bsc info FILE``, and errors that are one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from bsc import BinarySemanticCache
from bsc.cli import main
from bsc.persistence import FORMAT_VERSION


def _bsc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the command as a user would, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "bsc.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    cache = BinarySemanticCache(dim=4, ttl=60.0)
    rng = np.random.default_rng(0)
    for i in range(3):
        cache.put(rng.normal(size=4), f"answer {i}", namespace="docs")
    cache.put(rng.normal(size=4), "default answer")
    cache.get(rng.normal(size=4), namespace="docs")
    path = tmp_path / "cache.bsc"
    cache.save(path)
    return path


def test_version_prints_the_installed_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"bsc {version('bsc-cache')}"


def test_info_shows_format_settings_and_entries_by_namespace(snapshot: Path) -> None:
    result = _bsc("info", str(snapshot))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"format version {FORMAT_VERSION}," in out
    assert "checksums:  ok" in out
    assert "dim 4, 256 bits, seed 42" in out
    assert "threshold 0.9, two-stage (int8 rerank of 10)" in out
    assert "ttl 60 s" in out
    assert "4 in 2 namespaces" in out
    assert [line.split() for line in out.splitlines() if line.startswith("    ")] == [
        ["default", "1"],
        ["docs", "3"],
    ]


def test_info_json_is_machine_readable(snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(snapshot), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries_by_namespace"] == {"default": 1, "docs": 3}
    assert info["checksums_ok"] is True and info["format_version"] == FORMAT_VERSION
    assert info["settings"] == {"threshold": 0.9, "rerank": 10, "max_entries": 100_000, "ttl": 60.0}
    assert info["counters"]["hits"] + info["counters"]["misses"] == 1


def test_info_on_a_missing_file_is_one_line_naming_it(tmp_path: Path) -> None:
    line = _one_line_error(_bsc("info", str(tmp_path / "nope.bsc")))
    assert line.startswith("bsc info: error: ") and "nope.bsc" in line and "No such file" in line


def test_info_on_a_corrupted_snapshot_reports_it_in_one_line(snapshot: Path) -> None:
    data = bytearray(snapshot.read_bytes())
    data[-10] ^= 0xFF  # inside the last section: its checksum no longer matches
    snapshot.write_bytes(bytes(data))
    line = _one_line_error(_bsc("info", str(snapshot)))
    assert "checksum" in line


def test_info_on_a_foreign_file_is_one_line(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_text("just some text\n")
    assert _one_line_error(_bsc("info", str(foreign))).startswith("bsc info: error: ")


def test_usage_errors_are_one_line_with_status_2() -> None:
    assert "required: FILE" in _one_line_error(_bsc("info"))
    assert "invalid choice" in _one_line_error(_bsc("no-such-command"))
    assert "unrecognized arguments" in _one_line_error(_bsc("--bogus", "info", "x"))


# ------------------------------------------------------------------ bsc demo: errors before any model loads
def test_demo_rejects_a_threshold_outside_the_cosine_range() -> None:
    line = _one_line_error(_bsc("demo", "--threshold", "2"))
    assert line.startswith("bsc demo: error: argument --threshold:") and "[-1, 1]" in line
    assert "--limit" in _one_line_error(_bsc("demo", "--limit", "0"))


def test_demo_with_a_missing_prompts_file_names_it(tmp_path: Path) -> None:
    line = _one_line_error(_bsc("demo", "--prompts", str(tmp_path / "none.jsonl")))
    assert "none.jsonl: No such file or directory" in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "hi", "group": "g", "kind": "first"}\nnot json\n', "line 2: not JSON"),
        (
            '{"prompt": "hi", "group": "g"}\n',
            "line 1: expected an object with string fields prompt, group, kind",
        ),
        ('["hi", "g", "first"]\n', "line 1: expected an object"),
        ('{"prompt": 3, "group": "g", "kind": "first"}\n', "line 1: expected an object"),
    ],
)
def test_demo_with_a_malformed_prompts_file_says_which_line(
    tmp_path: Path, content: str, expected: str
) -> None:
    pytest.importorskip("langchain_bsc.demo")
    path = tmp_path / "prompts.jsonl"
    path.write_text(content, encoding="utf-8")
    line = _one_line_error(_bsc("demo", "--prompts", str(path)))
    assert str(path) in line and expected in line


_WITHOUT_LANGCHAIN = "import sys; sys.modules['langchain_core'] = None; from bsc.cli import main; "


def test_demo_help_works_without_the_langchain_extra() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LANGCHAIN + "raise SystemExit(main(['demo', '--help']))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: bsc demo" in result.stdout and "simulated LangChain chat model" in result.stdout
    assert "needs langchain_core, which is not installed: pip install" in result.stdout


def test_demo_without_the_langchain_extra_says_what_to_install() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LANGCHAIN + "raise SystemExit(main(['demo']))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = _one_line_error(result)
    assert line.startswith("bsc demo: error: needs langchain_core") and "langchain_bsc[demo]" in line

"""The LangChain quickstart notebook and ``bsc demo`` run end to end, so neither rots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")

from bsc.cli import main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "langchain_quickstart.ipynb"


@pytest.mark.slow
def test_bsc_demo_runs_the_shipped_stream_with_no_false_hits(
    single_thread_default_embedder: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "THE LLM IS SIMULATED" in out
    assert "upstream LLM calls               121" in out
    assert "false hits                         -    0 of " in out
    assert "near-miss 0/18" in out
    assert "repeat 19/19" in out
    for label in ("latency p50", "latency p95", "estimated cost", "Saved:"):
        assert label in out


def test_bsc_demo_limit_and_a_custom_stream(
    single_thread_default_embedder: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "What is the capital of France?", "group": "fr", "kind": "first"},
        {"prompt": "Which city is the capital of France?", "group": "fr", "kind": "paraphrase"},
        {"prompt": "What is the capital of Spain?", "group": "es", "kind": "near_miss"},
        {"prompt": "never sent", "group": "x", "kind": "first"},
    ]
    stream.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert main(["demo", "--prompts", str(stream), "--limit", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 prompts" in out
    assert "paraphrase 1/1, near-miss 0/1" in out


def test_langchain_bsc_ships_the_demo_prompt_stream() -> None:
    from langchain_bsc.demo import load_prompts

    prompts = load_prompts()
    assert len(prompts) >= 100
    assert {p.kind for p in prompts} == {"first", "repeat", "paraphrase", "near_miss"}


def test_cli_requires_a_known_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "demo" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_notebook_executes(notebook_kernel: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, kernel_name=notebook_kernel, timeout=300, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError if any cell (its asserts included) fails
    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "upstream calls: 1" in printed
    # Nothing printed unasked: no warnings (tqdm's "IProgress not found"), no log lines, no text bars.
    stderr = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stderr"
    ]
    assert not stderr, stderr
    assert "1 semantic" in printed

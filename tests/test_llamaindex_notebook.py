"""Runs examples/llamaindex_quickstart.ipynb end to end in a kernel of the interpreter running the tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("llama_index.core")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "llamaindex_quickstart.ipynb"
KERNEL = "bsc-test-python"


@pytest.fixture
def kernel_of_this_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec for ``sys.executable`` in a temp Jupyter path, so a fresh venv needs no install step."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "bsc tests",
                "language": "python",
                "env": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


@pytest.mark.slow
def test_llamaindex_quickstart_notebook_runs_offline(kernel_of_this_interpreter: str, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_of_this_interpreter,
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "'exact': False" in printed
    # Nothing printed unasked: no warnings (tqdm's "IProgress not found"), no log lines, no text bars.
    assert not [o for o in outputs if o.get("name") == "stderr"]

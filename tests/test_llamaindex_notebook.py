"""Runs examples/llamaindex_quickstart.ipynb end to end in a kernel of the interpreter running the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("llama_index.core")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "llamaindex_quickstart.ipynb"


@pytest.mark.slow
def test_llamaindex_quickstart_notebook_runs_offline(notebook_kernel: str, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=notebook_kernel,
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

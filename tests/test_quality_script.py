"""`benchmarks/quality.py` without the labelled MSRP/PAWS data says what is missing, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


def test_missing_labelled_data_is_named_with_the_bundled_alternative(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "q.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "labelled data not found" in error and str(tmp_path / "no-data" / "msrp_pairs.tsv") in error
    assert "--datasets prompts" in error
    assert not (tmp_path / "q.json").exists()

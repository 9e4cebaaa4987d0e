"""`bsc calibrate` end to end with the real default embedder, and its answers to bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bsc.calibrate import demo_pairs
from bsc.calibrate.report import PLOTS
from bsc.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def embedder(single_thread_default_embedder: object) -> object:
    """The CLI's ``local`` embedder is this process-wide default; the fixture loads it once."""
    return single_thread_default_embedder


def _assert_valid_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200


def _tiny_inputs(tmp_path: Path) -> tuple[Path, Path]:
    shipped = demo_pairs()
    pairs = [p for p in shipped if p.label == 1][:12] + [p for p in shipped if p.label == 0][:12]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(t for p in pairs for t in (p.q1, p.q2)) + "\n", encoding="utf-8")
    labelled = tmp_path / "pairs.tsv"
    labelled.write_text(
        "q1\tq2\tlabel\n" + "".join(f"{p.q1}\t{p.q2}\t{p.label}\n" for p in pairs), encoding="utf-8"
    )
    return prompts, labelled


def test_calibrate_writes_the_report_and_plots_for_prompts_and_pairs(
    embedder: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts, labelled = _tiny_inputs(tmp_path)
    out = tmp_path / "report"
    status = main(
        [
            "calibrate",
            str(prompts),
            "--pairs",
            str(labelled),
            "--bits",
            "64,256",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "## Recommendation" in printed and "Written:" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["bits"] == [64, 256] and report["pairs"] == 24
    assert set(report["bands"]) == {"64", "256"}
    assert report["bands"]["256"]["recall_at_10"] in {"green", "yellow", "red"}
    # 48 prompts are too few to train PQ: the rows say so instead of failing
    pq = [q for q in report["quantizers"] if q["method"] == "pq"]
    assert pq and all(q["retrieval"] is None and "at least 256" in q["note"] for q in pq)
    binary = [q for q in report["quantizers"] if q["method"] == "binary"]
    assert all(0.0 <= q["retrieval"]["recall_at_10"] <= 1.0 for q in binary)
    assert report["recommendation"]["mode"] == "two-stage + guard"
    md = (out / "report.md").read_text()
    assert "| bits | R@1 | R@10 | band | overlap@10 |" in md
    assert "| bytes | binary | PQ |" in md and ("Wilson CI" in md or "no code size" in md)
    assert "| bytes | method | R@1 | R@10 | nDCG@10 | overlap@10 | note |" in md
    assert "| pq | 256 | 32 | skipped |" in md  # PQ's decisions are skipped like its retrieval
    modes = {(a["mode"], a["bits"]) for a in report["agreement"]}
    assert {("int8", 64), ("int8", 256), ("int8-full", 8 * 384)} <= modes
    assert "| int8 | 256 | 32 |" in printed and "| two-stage | 256 | 32 + 384 |" in printed
    for name in PLOTS:
        _assert_valid_png(out / name)


def test_calibrate_demo_runs_offline_on_the_shipped_pairs(embedder: object, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = ["calibrate", "--demo", "--bits", "256", "--out", str(out), "--no-progress", "--no-plots"]
    assert main([*argv, "--threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == len(demo_pairs()) >= 300
    rec = report["recommendation"]
    assert rec["point"]["bits"] == 256 and 0.70 <= rec["point"]["threshold"] <= 0.99
    assert rec["point"]["false_hit_rate"] <= 0.02
    # enough prompts to train PQ at equal memory
    (pq,) = [q for q in report["quantizers"] if q["method"] == "pq"]
    assert pq["retrieval"] is not None and pq["bytes_per_entry"] == 32
    pq_decisions = {a["threshold"]: a for a in report["agreement"] if a["mode"] == "pq"}
    assert sorted(pq_decisions) == [0.80, 0.85, 0.90, 0.95]
    assert all(0.0 <= a["agreement"] <= 1.0 and a["bits"] == 256 for a in pq_decisions.values())
    md = (out / "report.md").read_text()
    assert "| pq | 256 | 32 | " in md and "| 32 | pq | " in md
    assert not list(out.glob("*.png"))


def test_calibrate_without_pairs_recommends_a_code_size_and_says_how_many_pairs_to_label(
    embedder: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts, _ = _tiny_inputs(tmp_path)
    assert (
        main(["calibrate", str(prompts), "--bits", "128", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    )
    printed = capsys.readouterr().out
    assert "No labelled pairs were given" in printed and "labelled pairs" in printed
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["recommendation"] is None and report["code_size"]["bits"] == 128
    assert report["pairs_needed"] > 300
    _assert_valid_png(tmp_path / "r" / "similarity_hist.png")  # drawn, saying there are no pairs


@pytest.mark.parametrize(
    ("prompts_text", "pairs_text", "message"),
    [
        ("", None, "is empty"),
        ("\n  \n", None, "is empty"),
        ('{"text": "no prompt field"}\n', None, "expected a 'prompt' string or a 'messages' list"),
        ("one\ntwo\n", None, "need at least 11 distinct prompts"),
        (None, "q1\tq2\tlabel\nWhat is 2+2?\tHow much is 2+2?\n", "expected q1<TAB>q2<TAB>label"),
        (None, "What is 2+2?\tHow much is 2+2?\tyes\n", "label must be 0 or 1, got 'yes'"),
        (None, "a\tb\t1\nc\td\t1\n", "has only label 1 pairs"),
        (None, "q1\tq2\tlabel\n", "holds no pairs"),
    ],
)
def test_bad_input_ends_with_one_error_line_and_status_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    prompts_text: str | None,
    pairs_text: str | None,
    message: str,
) -> None:
    argv = ["calibrate", "--out", str(tmp_path / "out"), "--no-progress", "--embedder", "nosuch"]
    if prompts_text is not None:
        (tmp_path / "p.txt").write_text(prompts_text, encoding="utf-8")
        argv.append(str(tmp_path / "p.txt"))
    if pairs_text is not None:
        (tmp_path / "pairs.tsv").write_text(pairs_text, encoding="utf-8")
        argv += ["--pairs", str(tmp_path / "pairs.tsv")]
    if message.startswith("need at least"):
        argv.remove("nosuch")
        argv.remove("--embedder")
    status = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("bsc calibrate: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_label_error_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("q1\tq2\tlabel\na\tb\t1\nc\td\t2\n", encoding="utf-8")
    assert main(["calibrate", "--pairs", str(pairs)]) == 2
    assert f"{pairs}:3: label must be 0 or 1, got '2'" in capsys.readouterr().err


def test_local_with_a_directory_is_the_native_embedder_on_that_model(minilm_path: Path) -> None:
    from bsc.calibrate.cli import make_embedder
    from bsc.embedders import NativeEmbedder, default_embedder

    embedder = make_embedder(f"local:{minilm_path}")
    assert isinstance(embedder, NativeEmbedder) and embedder is not default_embedder()
    assert embedder.name == default_embedder().name
    assert make_embedder("local") is default_embedder()


def test_unknown_embedder_and_missing_file_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calibrate", "--demo", "--embedder", "word2vec", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown embedder 'word2vec': expected one of local[:MODEL_DIR] (bsc's default)" in err
    assert main(["calibrate", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["calibrate"]) == 2
    assert "give a PROMPTS file" in capsys.readouterr().err
    assert main(["calibrate", "--demo", "--threads", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--threads must be a positive number of threads, got 0" in capsys.readouterr().err


def test_bad_option_values_are_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["calibrate", "--demo", "--bits", "100"], "code sizes must be among 64,128,256,512,1024"),
        (["calibrate", "--demo", "--target-false-hit-rate", "2"], "expected a rate in (0, 1)"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


def test_the_bsc_command_lists_calibrate() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bsc.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "calibrate" in result.stdout


def test_prompts_are_read_from_text_lines_or_json_lines_with_prompt_or_messages(tmp_path: Path) -> None:
    from bsc.calibrate import load_prompts

    text = tmp_path / "p.txt"
    text.write_text("  first prompt \n\nsecond prompt\n", encoding="utf-8")
    assert load_prompts(text) == ["first prompt", "second prompt"]
    jsonl = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "plain prompt", "group": "x"},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "chat prompt"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "parts prompt"}]}]},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert load_prompts(jsonl) == ["plain prompt", "chat prompt", "parts prompt"]
    jsonl.write_text(
        '{"prompt": "ok"}\n{"messages": [{"role": "system", "content": "x"}]}\n', encoding="utf-8"
    )
    with pytest.raises(ValueError, match=r"p\.jsonl:2: 'messages' has no user message"):
        load_prompts(jsonl)


def test_the_shipped_demo_pairs_are_the_benchmark_prompt_pairs() -> None:
    from bsc.calibrate import load_pairs

    # One labelled set, two places (the package must ship it; the benchmarks read the repository's copy).
    assert demo_pairs() == load_pairs(Path(__file__).parents[1] / "benchmarks" / "data" / "prompt_pairs.tsv")

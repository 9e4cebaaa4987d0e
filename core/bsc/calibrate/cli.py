"""The ``bsc calibrate`` subcommand: parse options, load inputs, run the campaign, write the report.

Bad input ends with one line on stderr (``bsc calibrate: error: ...``) and exit status 2, the argparse
convention; nothing is written to ``--out`` before the inputs have been read and checked.

Example:
    $ bsc calibrate --demo --out calibration
    $ bsc calibrate my_prompts.txt --pairs my_pairs.tsv --target-false-hit-rate 0.01
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bsc.calibrate.campaign import DEFAULT_BITS, calibrate
from bsc.calibrate.inputs import CalibrationInputError, LabelledPair, demo_pairs, load_pairs, load_prompts
from bsc.embedders import Embedder

__all__ = ["add_arguments", "limit_threads", "make_embedder", "run"]

logger = logging.getLogger(__name__)

EMBEDDERS = (
    "local[:MODEL_DIR] (bsc's default), onnx[:MODEL_DIR], sentence-transformers[:MODEL], openai[:MODEL], "
    "ollama[:MODEL]"
)


def make_embedder(spec: str) -> Embedder:
    """The embedder named by ``spec`` (``kind[:model]``, see `EMBEDDERS`): ``local`` is
    `bsc.embedders.default_embedder()` (all-MiniLM-L6-v2 on bsc's Rust encoder, offline), ``local:DIR``
    another model directory on it, ``onnx[:DIR]`` onnxruntime (the ``onnx`` extra),
    ``sentence-transformers[:MODEL]`` the torch runtime (the ``torch`` extra), ``openai`` and ``ollama``
    the API embedders.

    Raises:
        ValueError: an unknown kind.
        ImportError: the kind's optional dependencies are missing.
    """
    kind, _, model = spec.partition(":")
    if kind == "local" and not model:
        from bsc.embedders import default_embedder

        return default_embedder()
    if kind == "local":
        from bsc.embedders import NativeEmbedder

        return NativeEmbedder(model)
    if kind == "onnx":
        from bsc.embedders import OnnxEmbedder

        return OnnxEmbedder(model or None)
    if kind == "sentence-transformers":
        from bsc.embedders import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(model or None)
    if kind == "openai":
        from bsc.embedders import OpenAIEmbedder

        return OpenAIEmbedder(model) if model else OpenAIEmbedder()
    if kind == "ollama":
        from bsc.embedders import OllamaEmbedder

        return OllamaEmbedder(model) if model else OllamaEmbedder()
    raise ValueError(f"unknown embedder {spec!r}: expected one of {EMBEDDERS}")


def limit_threads(threads: int) -> None:
    """Caps the threads of torch (if it is in use), faiss (OpenMP) and the BLAS under numpy for the rest
    of the process. (bsc's default embedder runs on one thread already.)

    On a machine shared with other busy processes, these pools spin against each other: measured on a
    loaded 2-core machine, training and searching PQ on 2,000 prompts took 41 s with faiss's default
    threads and 5 s with one, and numpy's SVD 11.9 s against 0.5 s.
    """
    torch = sys.modules.get("torch")  # only if an embedder loaded it: importing torch costs seconds
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        import faiss
    except ImportError:
        pass
    else:
        faiss.omp_set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        logger.info("threadpoolctl is not installed: numpy's BLAS keeps its own thread count")
    else:
        threadpool_limits(threads)


def _bits(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated code sizes such as 64,256, got {text!r}"
        ) from None
    if not sizes or any(b not in DEFAULT_BITS for b in sizes):
        raise argparse.ArgumentTypeError(
            f"code sizes must be among {','.join(map(str, DEFAULT_BITS))}, got {text!r}"
        )
    return sizes


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1) such as 0.02, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``bsc calibrate`` options to ``parser``."""
    parser.add_argument(
        "prompts",
        nargs="?",
        metavar="PROMPTS",
        help="your prompts: one a line, or JSON lines with a 'prompt' or 'messages' field",
    )
    parser.add_argument(
        "--pairs",
        metavar="LABELLED.tsv",
        help="labelled pairs q1<TAB>q2<TAB>label (1 = same answer is right)",
    )
    parser.add_argument(
        "--demo", action="store_true", help="use the labelled prompt pairs shipped with bsc (offline)"
    )
    parser.add_argument("--embedder", default="local", metavar="NAME", help=f"{EMBEDDERS} (default: local)")
    parser.add_argument(
        "--bits",
        type=_bits,
        default=list(DEFAULT_BITS),
        metavar="LIST",
        help="code sizes to measure (default: 64,128,256,512,1024)",
    )
    parser.add_argument("--out", default="bsc-calibration", metavar="DIR", help="report directory")
    parser.add_argument(
        "--target-false-hit-rate",
        type=_rate,
        default=0.02,
        metavar="RATE",
        help="false-hit budget of the threshold recommendation (default: 0.02)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="cap torch, faiss and BLAS threads (1 is much faster on a machine busy with other work)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fail(message: str) -> int:
    print(f"bsc calibrate: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Runs ``bsc calibrate`` with parsed arguments; returns the exit status (2 for bad input)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        pairs: list[LabelledPair] = demo_pairs() if args.demo else []
        if args.pairs:
            pairs = load_pairs(args.pairs)
        if args.prompts:
            prompts = load_prompts(args.prompts)
        elif pairs:
            prompts = [t for p in pairs for t in (p.q1, p.q2)]
        else:
            return _fail("give a PROMPTS file (one prompt a line), --pairs LABELLED.tsv, or --demo")
    except CalibrationInputError as exc:
        return _fail(str(exc))
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401  (checked before the long run, imported for real in report)
        except ImportError:
            return _fail('plots need matplotlib: pip install "bsc-cache[calibrate]" (or pass --no-plots)')
    if args.threads is not None and args.threads < 1:
        return _fail(f"--threads must be a positive number of threads, got {args.threads}")
    try:
        embedder = make_embedder(args.embedder)
    except (ValueError, ImportError) as exc:
        return _fail(str(exc))
    if args.threads is not None:
        limit_threads(args.threads)
    try:
        result = calibrate(
            prompts,
            embedder=embedder,
            pairs=pairs,
            bits=args.bits,
            target_false_hit_rate=args.target_false_hit_rate,
            progress=not args.no_progress,
        )
    except CalibrationInputError as exc:
        return _fail(str(exc))

    from bsc.calibrate.report import summary, write_report

    try:
        written = write_report(result, args.out, plots=not args.no_plots)
    except OSError as exc:
        return _fail(f"cannot write the report to {args.out!r}: {exc}")
    print(summary(result))
    print("Written: " + ", ".join(str(p) for p in written))
    return 0

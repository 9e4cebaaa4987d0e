"""The default embedder (all-MiniLM-L6-v2 on bsc's own Rust encoder, `NativeEmbedder`), the opt-in
`OnnxEmbedder` (ONNX Runtime on a graph built from the safetensors) and its int8 mode, against
sentence-transformers on torch and against the old ONNX route (a ``torch.onnx.export`` of the
transformer, run by onnxruntime), all in one run.

Measured, for every backend in the same process and interleaved call by call, so that load from
other processes on a shared machine hits all of them alike:

- agreement with sentence-transformers on ``--sentences`` MSRP sentences: the largest
  ``|1 - cosine(ours, torch)|`` per vector, the share of sentences whose 256-bit `bsc.BinaryEncoder`
  codes are identical, and the hit decisions (pair cosine >= `bsc.DEFAULT_THRESHOLD`) that change on the
  MSRP pairs and on ``benchmarks/data/prompt_pairs.tsv``;
- batch-1 latency (one prompt per call, the cache's online path): p50/p99 over ``--single`` calls;
- batch-64 throughput (sentences/s over ``--bulk`` sentences in batches of 64);
- both at 1 and 2 threads (``--threads``: intra-op threads, or the native encoder's ``threads``);
- process start to first embedding and peak RSS, in fresh subprocesses (median of ``--starts``).

Needs the ``[torch]`` and ``[onnx]`` extras besides ``[local]`` (torch, onnxruntime and the old route are the
peers measured against).

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_embed.py [--sentences 5000] [--single 500]

Writes benchmarks/results/embed.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import numpy.typing as npt
from bsc import DEFAULT_THRESHOLD, BinaryEncoder
from bsc.embedders import NativeEmbedder, OnnxEmbedder, SentenceTransformerEmbedder, packaged_minilm_path

ROOT = Path(__file__).resolve().parents[1]
MSRP = ROOT.parent / "shared" / "data" / "msrp_pairs.tsv"  # ../shared beside the checkout
PROMPTS = ROOT / "benchmarks" / "data" / "prompt_pairs.tsv"
RESULTS = ROOT / "benchmarks" / "results" / "embed.json"

Embed = Callable[[list[str]], npt.NDArray[np.float32]]
# Every backend but torch, the reference the others are compared with.
PEERS = ("onnx-export", "onnx", "bsc", "onnx-int8")

START_CODE = """
import json, sys, time
start = time.perf_counter()
kind = sys.argv[1]
if kind == "torch":
    from bsc.embedders import SentenceTransformerEmbedder
    embedder = SentenceTransformerEmbedder()
else:
    from bsc.embedders import default_embedder
    embedder = default_embedder()
embedder.embed(["What is the capital of France?"])
elapsed = time.perf_counter() - start
# VmHWM, not ru_maxrss: the latter carries the forking parent's size over exec.
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"in_process_s": elapsed, "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
                  "torch_imported": "torch" in sys.modules}))
"""


def load_pairs(path: Path, n: int | None = None) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(r["q1"], r["q2"]) for _, r in zip(range(n or 10**9), rows, strict=False)]


class ExportedOnnx:
    """The previous route: the transformer exported with torch.onnx.export, pooled in NumPy.

    Shares the new embedder's tokenizer, so only the graph differs between the two.
    """

    def __init__(self, tokenizer_of: NativeEmbedder, threads: int, path: Path) -> None:
        import onnxruntime as ort

        self._embedder = tokenizer_of
        if not path.exists():
            export(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        rows = []
        for start in range(0, len(texts), 64):
            encodings = self._embedder._tokenizer.encode_batch(texts[start : start + 64])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            types = np.array([e.type_ids for e in encodings], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            hidden = self._session.run(None, feed)[0]
            weights = mask.astype(np.float32)[..., None]
            rows.append((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))
        pooled = np.concatenate(rows)
        unit: npt.NDArray[np.float32] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return unit


def export(path: Path) -> None:
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(str(packaged_minilm_path()), local_files_only=True).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            return self.model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    sample = (
        torch.tensor([[101, 2023, 102, 0], [101, 2023, 2003, 102]]),
        torch.tensor([[1, 1, 1, 0], [1] * 4]),
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHidden(),
            (*sample, torch.zeros_like(sample[0])),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def latencies(backends: dict[str, Embed], texts: list[str]) -> dict[str, dict[str, float]]:
    """p50/p99 of one-text calls in ms; backends take turns on every text."""
    times: dict[str, list[float]] = {name: [] for name in backends}
    names = list(backends)
    for i, text in enumerate(texts):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate who goes first
            start = time.perf_counter()
            backends[name]([text])
            times[name].append((time.perf_counter() - start) * 1000)
    return {
        n: {"p50_ms": percentile(t, 50), "p99_ms": percentile(t, 99), "calls": len(t)}
        for n, t in times.items()
    }


def throughput(backends: dict[str, Embed], texts: list[str]) -> dict[str, float]:
    """Sentences/s in batches of 64; backends take turns on every batch."""
    spent = dict.fromkeys(backends, 0.0)
    for start in range(0, len(texts), 64):
        batch = texts[start : start + 64]
        for name, embed in backends.items():
            t = time.perf_counter()
            embed(batch)
            spent[name] += time.perf_counter() - t
    return {name: len(texts) / seconds for name, seconds in spent.items()}


def agreement(
    reference: npt.NDArray[np.float32], ours: npt.NDArray[np.float32], prompt_ref: Any, prompt_ours: Any
) -> dict[str, float]:
    cosine = (reference.astype(np.float64) * ours).sum(axis=1)
    encoder = BinaryEncoder(reference.shape[1], 256, 42)
    same_codes = (encoder.encode(reference) == encoder.encode(ours)).all(axis=1)

    def changed(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> int:
        pair_a = (a[0::2].astype(np.float64) * a[1::2]).sum(axis=1) >= DEFAULT_THRESHOLD
        pair_b = (b[0::2].astype(np.float64) * b[1::2]).sum(axis=1) >= DEFAULT_THRESHOLD
        return int((pair_a != pair_b).sum())

    return {
        "max_abs_cosine_deviation": float(np.abs(1.0 - cosine).max()),
        "max_abs_component_delta": float(np.abs(reference - ours).max()),
        "codes_identical_share": float(same_codes.mean()),
        "msrp_hit_decisions_changed": changed(reference, ours),
        "prompt_pair_hit_decisions_changed": changed(prompt_ref, prompt_ours),
    }


def start_times(runs: int) -> dict[str, dict[str, float]]:
    """Process start -> first embedding (wall, measured outside) and peak RSS, median over runs."""
    out: dict[str, dict[str, float]] = {}
    for kind in ("bsc", "torch"):
        rows = []
        for _ in range(runs):
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", START_CODE, kind], capture_output=True, text=True, check=True
            )
            row = json.loads(result.stdout.strip().splitlines()[-1])
            row["wall_s"] = time.perf_counter() - start
            rows.append(row)
        out[kind] = {
            "wall_s": statistics.median(r["wall_s"] for r in rows),
            "in_process_s": statistics.median(r["in_process_s"] for r in rows),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rows),
            "torch_imported": any(r["torch_imported"] for r in rows),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sentences", type=int, default=5000, help="MSRP sentences for agreement")
    parser.add_argument("--single", type=int, default=500, help="one-sentence calls per backend for latency")
    parser.add_argument("--bulk", type=int, default=640, help="sentences embedded in batches of 64")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--starts", type=int, default=3, help="fresh processes timed per backend")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import onnxruntime
    import torch

    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    results["start"] = start_times(args.starts)

    msrp = load_pairs(MSRP, args.sentences // 2)
    sentences = [s for pair in msrp for s in pair]
    prompts = [s for pair in load_pairs(PROMPTS) for s in pair]
    export_dir = tempfile.TemporaryDirectory(prefix="bsc-bench-embed-")
    graph = Path(export_dir.name) / "exported.onnx"

    by_threads: dict[str, Any] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        ours = NativeEmbedder(threads=threads)
        backends: dict[str, Embed] = {
            "torch": SentenceTransformerEmbedder(batch_size=64).embed,
            "onnx-export": ExportedOnnx(ours, threads, graph).embed,
            "onnx": OnnxEmbedder(threads=threads).embed,
            "bsc": ours.embed,
            "onnx-int8": OnnxEmbedder(threads=threads, quantize="int8").embed,
        }
        for embed in backends.values():
            embed(sentences[:64])  # warm-up: first calls allocate
        row: dict[str, Any] = {
            "batch1": latencies(backends, sentences[: args.single]),
            "batch64_sentences_per_s": throughput(backends, sentences[: args.bulk]),
        }
        if threads == args.threads[0]:
            vectors = {name: embed(sentences) for name, embed in backends.items()}
            prompt_vectors = {name: embed(prompts) for name, embed in backends.items()}
            results["agreement_with_torch"] = {
                name: agreement(
                    vectors["torch"], vectors[name], prompt_vectors["torch"], prompt_vectors[name]
                )
                for name in PEERS
            }
            results["agreement_with_torch"]["sentences"] = len(sentences)
            results["agreement_with_torch"]["prompt_pairs"] = len(prompts) // 2
        by_threads[str(threads)] = row
    results["threads"] = by_threads
    results["machine"]["load_average_at_end"] = os.getloadavg()
    export_dir.cleanup()
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def report(results: dict[str, Any]) -> None:
    machine = results["machine"]
    print(
        f"load average at start {machine['load_average_at_start']}, at end {machine['load_average_at_end']}"
    )
    print("\nstart -> first embedding (fresh process, median):")
    for kind, row in results["start"].items():
        rss, torch_imported = row["peak_rss_mb"], row["torch_imported"]
        print(
            f"  {kind:<6} {row['wall_s']:.2f} s wall, peak RSS {rss:.0f} MB, imports torch: {torch_imported}"
        )
    for threads, row in results["threads"].items():
        print(f"\n{threads} thread(s)   batch-1 p50 / p99 (ms)   batch-64 (sent/s)", end="")
        print("   p50 vs torch   vs onnx-export   vs onnx   batch-64 vs onnx")
        b1, b64 = row["batch1"], row["batch64_sentences_per_s"]
        for name in b1:
            print(
                f"  {name:<12} {b1[name]['p50_ms']:>8.2f} / {b1[name]['p99_ms']:<8.2f} {b64[name]:>16.1f}"
                f"   x{b1[name]['p50_ms'] / b1['torch']['p50_ms']:.2f}"
                f"          x{b1[name]['p50_ms'] / b1['onnx-export']['p50_ms']:.2f}"
                f"         x{b1[name]['p50_ms'] / b1['onnx']['p50_ms']:.2f}"
                f"     x{b64[name] / b64['onnx']:.2f}"
            )
    agree = results["agreement_with_torch"]
    print(f"\nagreement with sentence-transformers ({agree['sentences']} MSRP sentences, ", end="")
    print(f"{agree['prompt_pairs']} prompt pairs):")
    for name in PEERS:
        print(f"  {name:<12} {agree[name]}")


if __name__ == "__main__":
    raise SystemExit(main())

"""`bsc serve` on loopback: what a cache hit costs through the proxy, and how many hits/s it serves.

Peers in the same run, over the same raw keep-alive HTTP/1.1 client:
  * the fake upstream called directly (`bsc.serve.testing.FakeUpstream`, 0 ms and 300 ms latency);
  * a plain pass-through proxy on the same stack (Starlette + uvicorn + httpx, no cache): the floor;
  * `bsc serve`: a miss, an exact-repeat hit (no embedding), a semantic hit whose paraphrase was
    embedded before (embedding excluded: search, guard, replay) and a fresh paraphrase (embedding included).
Each server runs in its own process. Hits/s: concurrent keep-alive connections for a few seconds against
`bsc serve --workers 1` and `--workers 2`. In-proxy time comes from the hit's ``server-timing`` header.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/bench_proxy.py            # ~3 minutes
    HF_HUB_OFFLINE=1 python benchmarks/bench_proxy.py --quick    # fewer samples

Prints a table and writes ``benchmarks/results/proxy.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "proxy.json"
PAIRS = Path(__file__).resolve().parent / "data" / "prompt_pairs.tsv"
MODEL = "gpt-4o-mini"
_TIMING = re.compile(rb"server-timing: [^\r]*dur=([0-9.]+)", re.IGNORECASE)


# ---------------------------------------------------------------- a minimal HTTP/1.1 client
class RawClient:
    """One keep-alive connection; requests are bytes built once, responses parsed by content-length.
    (An HTTP library's own per-request cost would blur sub-millisecond differences between rows.)"""

    def __init__(self, port: int) -> None:
        self.port = port
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def post(self, path: str, body: dict[str, Any], key: str = "sk-bench") -> tuple[int, bytes, bytes]:
        """(status, head, body) of one POST; reconnects once if the server closed the idle connection."""
        try:
            self.sock.sendall(request_bytes(self.port, path, body, key))
            return self.read()
        except ConnectionError:
            self.sock.close()
            self._connect()
            self.sock.sendall(request_bytes(self.port, path, body, key))
            return self.read()

    def read(self) -> tuple[int, bytes, bytes]:
        while b"\r\n\r\n" not in self._buffer:
            self._recv()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
        if match is None:
            raise RuntimeError(f"response without content-length: {head[:300]!r}")
        length = int(match.group(1))
        while len(self._buffer) < length:
            self._recv()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(head.split(b" ", 2)[1]), head, body

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self._buffer += data


def request_bytes(port: int, path: str, body: dict[str, Any], key: str) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode() + payload


def chat_body(question: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}]}


# ---------------------------------------------------------------- servers in their own processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(args: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{args} did not start: {proc.communicate()[1].decode()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def fake_upstream(latency: float) -> Any:
    port = free_port()
    return server(["-m", "bsc.serve.testing", "--port", str(port), "--latency", str(latency)], port)


def bsc_proxy(upstream_port: int, workers: int = 1) -> Any:
    port = free_port()
    args = [
        "-m",
        "bsc.cli",
        "serve",
        "--upstream",
        f"http://127.0.0.1:{upstream_port}/v1",
        "--port",
        str(port),
    ]
    args += ["--workers", str(workers), "--log-level", "warning"]
    # One torch thread per worker: batch-1 embeddings gain nothing from more on a shared 2-core machine.
    return server(args, port, {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})


def passthrough_proxy(upstream_port: int) -> Any:
    port = free_port()
    return server([__file__, "--passthrough", str(port), str(upstream_port)], port)


def run_passthrough(port: int, upstream_port: int) -> None:
    """The floor: the same stack forwarding requests unchanged, no cache, no parsing."""
    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{upstream_port}")

    async def forward(request: Request) -> Response:
        upstream = await client.post(
            request.url.path,
            content=await request.body(),
            headers={"authorization": request.headers["authorization"]},
        )
        return Response(upstream.content, upstream.status_code, media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- measurements
def percentiles(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": statistics.median(samples), "p99_ms": q[98], "n": len(samples)}


class _Row:
    """Samples of one path: client-observed latency, and the in-proxy time of hits."""

    def __init__(self, name: str, client: RawClient, want: str | None, *, semantic: bool = False) -> None:
        self.name, self.client, self.want, self.semantic = name, client, want, semantic
        self.latencies: list[float] = []
        self.inside: list[float] = []
        self.not_counted = 0

    def send(self, body: dict[str, Any]) -> None:
        start = time.perf_counter()
        status, head, _ = self.client.post("/v1/chat/completions", body)
        elapsed = (time.perf_counter() - start) * 1000
        if status != 200:
            raise RuntimeError(f"{self.name}: status {status}: {head!r}")
        wanted = self.want is None or f"x-bsc-cache: {self.want}".encode() in head.lower()
        # A paraphrase below the threshold was a miss and got stored: asked again it is an exact hit.
        if not wanted or (self.semantic and b"x-bsc-similarity: 1.0000" in head.lower()):
            self.not_counted += 1
            return
        self.latencies.append(elapsed)
        timing = _TIMING.search(head)
        if timing:
            self.inside.append(float(timing.group(1)))

    def result(self, latency: float) -> dict[str, Any]:
        row: dict[str, Any] = {
            "path": self.name,
            "upstream_ms": latency * 1000,
            **percentiles(self.latencies),
        }
        if self.inside:
            inside = percentiles(self.inside)
            row |= {"in_proxy_p50_ms": inside["p50_ms"], "in_proxy_p99_ms": inside["p99_ms"]}
        row["not_counted"] = self.not_counted
        return row


def latency_rows(latency: float, pairs: list[tuple[str, str]], samples: int) -> list[dict[str, Any]]:
    """Every path measured in the same loop, one request each in turn, so the machine's noise falls on
    all of them alike."""
    with fake_upstream(latency) as up_port, passthrough_proxy(up_port) as pt_port, bsc_proxy(up_port) as port:
        direct, floor, proxy = RawClient(up_port), RawClient(pt_port), RawClient(port)
        for client in (direct, floor, proxy):
            for i in range(10):
                client.post("/v1/chat/completions", chat_body(f"warm up {i}"))
        miss = _Row("bsc serve: miss (embed, forward, store)", proxy, "miss")
        exact = _Row("bsc serve: exact-repeat hit", proxy, "hit")
        fresh = _Row("bsc serve: semantic hit, embedding included", proxy, "hit", semantic=True)
        again = _Row("bsc serve: semantic hit, embedding excluded", proxy, "hit", semantic=True)
        rows = [_Row("fake upstream, direct", direct, None), _Row("pass-through proxy (floor)", floor, None)]
        # Paraphrase i is asked (fresh) right after its cached prompt was stored, then again (memoised).
        # Rows that wait for the upstream take fewer samples when it sleeps 300 ms each time.
        waits = samples if latency == 0 else max(20, samples // 10)
        for i in range(samples):
            paraphrase, cached = pairs[i % len(pairs)]
            if i < len(pairs):
                if i < waits:
                    miss.send(chat_body(cached))
                else:
                    proxy.post("/v1/chat/completions", chat_body(cached))
                fresh.send(chat_body(paraphrase))
            if i < waits:
                for row in rows:
                    row.send(chat_body(paraphrase))
            exact.send(chat_body(cached))
            again.send(chat_body(paraphrase))
    return [r.result(latency) for r in (*rows, miss, exact, fresh, again)]


async def _hammer(port: int, body: dict[str, Any], connections: int, seconds: float) -> tuple[int, int]:
    payload = request_bytes(port, "/v1/chat/completions", body, "sk-bench")
    hits = others = 0
    stop = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal hits, others
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop:
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            if b"x-bsc-cache: hit" in head:
                hits += 1
            else:
                others += 1
        writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return hits, others


def throughput_rows(
    workers_list: list[int], connections: int, seconds: float, pairs: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    rows = []
    with fake_upstream(0.0) as up_port:
        for workers in workers_list:
            with bsc_proxy(up_port, workers) as port:
                cached, paraphrase = pairs[0][1], pairs[0][0]
                for kind, question in (
                    ("exact-repeat hits", cached),
                    ("semantic hits (embedding excluded)", paraphrase),
                ):
                    client = RawClient(port)
                    for _ in range(
                        20 * workers
                    ):  # every worker stores the answer and memoises the paraphrase
                        client.post("/v1/chat/completions", chat_body(cached))
                        client.post("/v1/chat/completions", chat_body(paraphrase))
                    asyncio.run(_hammer(port, chat_body(question), connections, 1.0))  # warm every worker
                    hits, others = asyncio.run(_hammer(port, chat_body(question), connections, seconds))
                    rows.append(
                        {
                            "workers": workers,
                            "kind": kind,
                            "hits_per_s": hits / seconds,
                            "hits_per_s_per_worker": hits / seconds / workers,
                            "non_hits": others,
                        }
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter load")
    parser.add_argument("--passthrough", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.passthrough:
        run_passthrough(*args.passthrough)
        return
    rows = [line.split("\t") for line in PAIRS.read_text().splitlines()[1:]]
    pairs = [(q1, q2) for q1, q2, label, _ in rows if label == "1"]
    samples = 200 if args.quick else 1000
    seconds = 3.0 if args.quick else 6.0
    latency = [row for upstream in (0.0, 0.3) for row in latency_rows(upstream, pairs, samples)]
    throughput = throughput_rows([1, 2], connections=32, seconds=seconds, pairs=pairs)

    print(f"\nLatency per request, sequential, loopback (load average {os.getloadavg()[0]:.1f}):")
    print(f"{'upstream':>8}  {'path':<46} {'p50 ms':>8} {'p99 ms':>8} {'in-proxy p50/p99 ms':>20} {'n':>5}")
    for r in latency:
        inside = f"{r['in_proxy_p50_ms']:.3f} / {r['in_proxy_p99_ms']:.3f}" if "in_proxy_p50_ms" in r else ""
        print(
            f"{r['upstream_ms']:>6.0f}ms  {r['path']:<46} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
            f"{inside:>20} {r['n']:>5}"
        )
    for upstream in (0.0, 300.0):
        by = {r["path"]: r for r in latency if r["upstream_ms"] == upstream}
        floor, direct = by["pass-through proxy (floor)"], by["fake upstream, direct"]
        for kind in (
            "exact-repeat hit",
            "semantic hit, embedding excluded",
            "semantic hit, embedding included",
        ):
            hit = by[f"bsc serve: {kind}"]
            print(
                f"  {upstream:.0f} ms upstream, {kind}: p50 {hit['p50_ms'] / direct['p50_ms']:.2f}x direct, "
                f"{hit['p50_ms'] / floor['p50_ms']:.2f}x the pass-through floor"
            )
    print(f"\nHits served per second (32 keep-alive connections, {seconds:.0f} s, fake upstream 0 ms):")
    for r in throughput:
        print(
            f"  {r['workers']} worker(s), {r['kind']:<36} {r['hits_per_s']:>8.0f}/s  "
            f"({r['hits_per_s_per_worker']:.0f}/s per worker)"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"latency": latency, "throughput": throughput, "loadavg": os.getloadavg()}, indent=2)
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

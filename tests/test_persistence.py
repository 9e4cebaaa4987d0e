"""Snapshots: exact round trips (hypothesis), TTLs across restarts, settings checks, corruption fuzzing."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import bsc
import numpy as np
import numpy.typing as npt
import pytest
from bsc import BinarySemanticCache, CacheFormatError, SemanticCache
from bsc._native import xxh3_64
from bsc.persistence import _SECTIONS, codes_view, read_index
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DIM = 8


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def frozen_wall(t: float = 5.0e8) -> Any:
    return lambda: t


# ---------------------------------------------------------------------------------------------- model
texts = st.text(max_size=12)
responses = st.one_of(texts, st.binary(max_size=12))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
metadata = st.none() | st.dictionaries(texts, json_values, max_size=3)
namespaces = st.sampled_from(["default", "a", "ü-ns", ""])
operation = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 2**32 - 1), responses, namespaces, metadata),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("get"), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.floats(0, 30)),
)


def vector(seed: int) -> npt.NDArray[np.float32]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v


def build(ops: list[Any], *, code_bits: int, rerank: int, ttl: float | None, clock: FakeClock) -> Any:
    cache = BinarySemanticCache(
        DIM, code_bits=code_bits, rerank=rerank, ttl=ttl, max_entries=10, threshold=0.5, clock=clock
    )
    ids: list[int] = []
    for op in ops:
        if op[0] == "put":
            ids.append(cache.put(vector(op[1]), op[2], namespace=op[3], metadata=op[4]))
        elif op[0] == "delete" and ids:
            cache.delete(ids[op[1] % len(ids)])
        elif op[0] == "get" and ids:
            cache.touch(ids[op[1] % len(ids)])
            cache.get(vector(op[1]))
        elif op[0] == "tick":
            clock.now += op[1]
    return cache


def observable(cache: BinarySemanticCache) -> dict[str, Any]:
    """Everything a user or the next operation can tell apart."""
    order = cache._index.lru_order()
    snap = cache.to_snapshot()
    handle_of = dict(zip(snap.ids.tolist(), snap.handles.tolist(), strict=True))
    entries = {}
    for entry_id in order:
        ns, code, expires = cache._index.entry(entry_id)
        hit = cache.entry(entry_id)
        h = handle_of[entry_id]
        row = snap.vectors[h].tobytes() if cache.rerank else b""
        norm = float(snap.norms[h]) if cache.rerank else 0.0
        entries[entry_id] = (
            ns,
            code,
            expires,
            None if hit is None else (hit.response, type(hit.response), hit.metadata, hit.namespace),
            row,
            norm,
        )
    stats = cache.stats()
    return {
        "order": order,
        "entries": entries,
        "namespaces": cache.namespaces(),
        "len": len(cache),
        "counters": (stats.hits, stats.misses, stats.evictions, stats.expirations),
        "settings": (
            cache.dim,
            cache.code_bits,
            cache.seed,
            cache.threshold,
            cache.max_entries,
            cache.ttl,
            cache.rerank,
        ),
    }


def future(cache: BinarySemanticCache, clock: FakeClock) -> list[Any]:
    """What happens next: ids, evictions, lookups and expirations after the same further operations."""
    out: list[Any] = []
    for i in range(14):
        new_id = cache.put(vector(10_000 + i), f"later {i}", namespace=["default", "a"][i % 2])
        clock.now += 3.0
        hit = cache.get(vector(i))
        out.append((new_id, None if hit is None else (hit.id, hit.response, round(hit.similarity, 6))))
        out.append(cache._index.lru_order())
    return out


# ---------------------------------------------------------------------------------------------- round trips
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(operation, max_size=40),
    code_bits=st.sampled_from([64, 256]),
    rerank=st.sampled_from([0, 3]),
    ttl=st.sampled_from([None, 50.0]),
)
def test_load_equals_the_saved_cache_in_every_observable_way(
    tmp_path: Path, ops: list[Any], code_bits: int, rerank: int, ttl: float | None
) -> None:
    clock = FakeClock()
    cache = build(ops, code_bits=code_bits, rerank=rerank, ttl=ttl, clock=clock)
    path = tmp_path / "cache.bsc"
    cache.save(path)
    loaded_clock = FakeClock(clock.now)
    loaded = BinarySemanticCache.load(path, clock=loaded_clock, wall_clock=frozen_wall())
    # The wall clock did not move: saved expiry times are bit-identical.
    assert observable(loaded) == observable(cache)
    assert future(loaded, loaded_clock) == future(cache, clock)
    assert observable(loaded) == observable(cache)


def test_saving_twice_writes_identical_files_and_index_only_load_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    ops = [("put", i, f"r{i}", ["a", "b"][i % 2], {"i": i}) for i in range(15)] + [("delete", 3)]
    cache = build(ops, code_bits=256, rerank=3, ttl=None, clock=clock)
    # The wall-clock time of the save is in the header; frozen, nothing else may differ.
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    cache.save(tmp_path / "one.bsc")
    cache.save(tmp_path / "two.bsc")
    assert (tmp_path / "one.bsc").read_bytes() == (tmp_path / "two.bsc").read_bytes()
    assert read_index(tmp_path / "one.bsc").to_parts()[0] == cache._index.to_parts()[0]
    for mine, theirs in zip(
        read_index(tmp_path / "two.bsc").to_parts()[1:], cache._index.to_parts()[1:], strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)


def test_codes_view_maps_the_codes_without_a_copy(tmp_path: Path) -> None:
    cache = BinarySemanticCache(DIM, rerank=0)
    for i in range(5):
        cache.put(vector(i), str(i), namespace="x" if i % 2 else "y")
    cache.save(tmp_path / "c.bsc")
    mapped, codes = codes_view(tmp_path / "c.bsc")
    assert codes.shape == (5, 4) and not codes.flags.writeable and not codes.flags.owndata
    np.testing.assert_array_equal(codes.reshape(-1), cache._index.to_parts()[2])
    del codes
    mapped.close()


def test_methods_on_the_cache_round_trip_and_check_dim_code_bits_and_seed(tmp_path: Path) -> None:
    cache = BinarySemanticCache(DIM, code_bits=128, seed=7)
    cache.put(vector(1), "one", metadata={"k": [1, 2]})
    path = tmp_path / "c.bsc"
    cache.save(path)
    loaded = BinarySemanticCache.load(path, dim=DIM, code_bits=128, seed=7, threshold=0.95)
    hit = loaded.get(vector(1))
    assert hit is not None and hit.response == "one" and dict(hit.metadata or {}) == {"k": [1, 2]}
    assert loaded.threshold == 0.95
    for wrong in ({"dim": DIM + 1}, {"code_bits": 256}, {"seed": 8}):
        with pytest.raises(ValueError, match="saved with") as info:
            BinarySemanticCache.load(path, **wrong)
        assert not isinstance(info.value, CacheFormatError)
    with pytest.raises(ValueError, match="max_entries"):
        BinarySemanticCache.load(path, max_entries=0)


def test_ttls_survive_a_restart_aged_by_the_wall_clock_time_between(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    cache = BinarySemanticCache(DIM, ttl=10.0, clock=clock)
    entry_id = cache.put(vector(1), "short-lived")
    clock.now += 2.0  # 8 s left at the save
    path = tmp_path / "c.bsc"
    cache.save(path)
    # A new process: its monotonic clock starts elsewhere, and 3 s of wall time passed.
    new_clock = FakeClock(7.0)
    saved_wall = _saved_wall(path)
    loaded = BinarySemanticCache.load(path, clock=new_clock, wall_clock=lambda: saved_wall + 3.0)
    new_clock.now += 4.9
    assert loaded.entry(entry_id) is not None
    new_clock.now += 0.2
    assert loaded.entry(entry_id) is None
    assert loaded.get(vector(1)) is None


def _saved_wall(path: Path) -> float:
    # The save's wall-clock time, from the header (offset 112).
    return float(struct.unpack_from("<d", path.read_bytes(), 112)[0])


def test_an_empty_cache_round_trips(tmp_path: Path) -> None:
    cache = BinarySemanticCache(DIM, ttl=5.0)
    cache.save(tmp_path / "e.bsc")
    loaded = BinarySemanticCache.load(tmp_path / "e.bsc")
    assert len(loaded) == 0 and loaded.ttl == 5.0
    loaded.put(vector(1), "x")
    assert loaded.get(vector(1)) is not None


def test_metadata_that_json_cannot_encode_is_refused_at_put_and_the_file_stays_loadable(
    tmp_path: Path,
) -> None:
    cache = BinarySemanticCache(DIM)
    cache.put(vector(1), "fine")
    path = tmp_path / "c.bsc"
    cache.save(path)
    # Refused when stored (what could not be saved is never accepted), and nothing is stored.
    with pytest.raises(TypeError, match="JSON"):
        cache.put(vector(2), "bad", metadata={"obj": object()})
    assert len(cache) == 1
    cache.save(path)
    assert len(BinarySemanticCache.load(path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.bsc"]


def test_a_pickle_file_is_rejected_without_being_unpickled(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> Any:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "c.bsc"
    path.write_bytes(pickle.dumps(Boom()) * 40)
    with pytest.raises(CacheFormatError, match="not a bsc snapshot"):
        BinarySemanticCache.load(path)
    assert not (tmp_path / "pwned").exists()


def test_cache_format_error_is_exported_and_a_value_error() -> None:
    assert "CacheFormatError" in bsc.__all__ and issubclass(CacheFormatError, ValueError)


# ---------------------------------------------------------------------------------------------- text level
class HashEmbedder:
    """Deterministic offline embedder: the same text always gives the same unit vector."""

    dim = 16
    name = "hash"

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.array(rows, dtype=np.float32).reshape(len(texts), self.dim)

    async def aembed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return self.embed(texts)


def test_text_cache_loads_at_start_saves_on_demand_and_rebuilds_the_exact_table(tmp_path: Path) -> None:
    path = tmp_path / "text.bsc"
    first = SemanticCache(HashEmbedder(), path=path, guard=False)
    first.update("What is 2+2?", "4", metadata={"src": "math"})
    first.update("Capital of France?", b"Paris", namespace="geo")
    first.update("What is 2+2?", "four")  # replaces the earlier answer
    first.save()

    second = SemanticCache(HashEmbedder(), path=path, guard=False)
    hit = second.lookup("What is 2+2?  \r\n")  # exact up to trailing spaces and line endings
    assert hit is not None and hit.exact and hit.response == "four" and hit.prompt == "What is 2+2?"
    geo = second.lookup("Capital of France?", namespace="geo")
    assert geo is not None and geo.exact and geo.response == b"Paris"
    assert second.stats().embedded_texts == 0  # no embedding needed for exact repeats
    again = SemanticCache.load(path, HashEmbedder(), guard=False)
    assert len(again) == 2

    with pytest.raises(ValueError, match="ttl"):
        SemanticCache(HashEmbedder(), path=path, ttl=5.0)
    with pytest.raises(FileNotFoundError):
        SemanticCache.load(tmp_path / "missing.bsc", HashEmbedder())
    with pytest.raises(ValueError, match="path"):
        SemanticCache(HashEmbedder()).save()


def test_text_cache_refuses_a_corrupt_file_instead_of_starting_empty(tmp_path: Path) -> None:
    path = tmp_path / "text.bsc"
    cache = SemanticCache(HashEmbedder(), path=path, guard=False)
    cache.update("hello", "world")
    cache.save()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CacheFormatError):
        SemanticCache(HashEmbedder(), path=path)


# ---------------------------------------------------------------------------------------------- corruption
@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    clock = FakeClock()
    ops: list[Any] = [
        ("put", i, f"résponse {i}" if i % 3 else b"\x00\xffbytes", ["a", "b", "default"][i % 3], {"i": i})
        for i in range(14)
    ]
    cache = build(
        [*ops, ("delete", 2), ("delete", 5), ("get", 7)], code_bits=256, rerank=3, ttl=60.0, clock=clock
    )
    path = tmp_path_factory.mktemp("snap") / "good.bsc"
    cache.save(path)
    return path.read_bytes()


def _section_spans(data: bytes) -> dict[str, tuple[int, int]]:
    spans = {"header": (0, 192), "table": (192, 192 + 32 * len(_SECTIONS))}
    for i, name in enumerate(_SECTIONS):
        _, _, offset, length, _ = struct.unpack_from("<IIQQQ", data, 192 + 32 * i)
        spans[name] = (offset, length)
    return spans


def _rejected(tmp_path: Path, data: bytes, *, index_only: bool = False) -> CacheFormatError:
    path = tmp_path / "bad.bsc"
    path.write_bytes(data)
    with pytest.raises(CacheFormatError) as info:
        if index_only:
            read_index(path)
        else:
            BinarySemanticCache.load(path)
    return info.value


def test_a_bit_flip_in_every_section_and_in_the_padding_is_rejected_naming_the_part(
    tmp_path: Path, snapshot: bytes
) -> None:
    spans = _section_spans(snapshot)
    checked = 0
    for name, (offset, length) in spans.items():
        if length == 0:
            continue
        for at in {offset, offset + length // 2, offset + length - 1}:
            data = bytearray(snapshot)
            data[at] ^= 1 << (at % 8)
            message = str(_rejected(tmp_path, bytes(data)))
            if name not in ("header", "table") and at >= 8:
                assert name in message, (name, message)
            checked += 1
    # Padding between sections.
    ends = sorted((o + n, o) for o, n in spans.values())
    gaps = [(end, nxt) for (end, _), (_, nxt) in pairwise(ends) if nxt > end]
    assert gaps
    for end, _ in gaps:
        data = bytearray(snapshot)
        data[end] ^= 0x80
        assert "padding" in str(_rejected(tmp_path, bytes(data)))
    assert checked > 30


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"NOTACACHE" + d[9:], "magic"),
        (lambda d: d[:8] + struct.pack("<I", 3) + d[12:], "version 3"),
        (lambda d: d[:12] + struct.pack(">I", 0x01020304) + d[16:], "big-endian"),
        (lambda d: d[:12] + struct.pack("<I", 7) + d[16:], "endianness"),
        (lambda d: d[:100], "shorter than"),
        (lambda d: b"", "empty"),
        (lambda d: b"PK\x03\x04 a zip file", "not a bsc snapshot (magic b'PK"),
        (lambda d: b"{}", "not a bsc snapshot"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\0", "trailing"),
        (lambda d: bytes(len(d)), "magic"),
    ],
)
def test_foreign_truncated_and_wrong_version_files_are_rejected_with_the_reason(
    tmp_path: Path, snapshot: bytes, mutate: Any, message: str
) -> None:
    assert message in str(_rejected(tmp_path, mutate(snapshot)))


def test_a_consistent_header_with_a_broken_index_is_rejected_by_the_rust_checks(
    tmp_path: Path, snapshot: bytes
) -> None:
    # Make the LRU list name one row twice, then fix every checksum: only from_parts can notice.
    spans = _section_spans(snapshot)
    data = bytearray(snapshot)
    lru_at, _ = spans["lru"]
    data[lru_at : lru_at + 4] = data[lru_at + 4 : lru_at + 8]
    index = _SECTIONS.index("lru")
    lru_off, lru_len = spans["lru"]
    struct.pack_into("<Q", data, 192 + 32 * index + 24, xxh3_64(bytes(data[lru_off : lru_off + lru_len])))
    struct.pack_into("<Q", data, 24, 0)
    struct.pack_into("<Q", data, 24, xxh3_64(bytes(data[: 192 + 32 * len(_SECTIONS)])))
    assert "index: LRU row" in str(_rejected(tmp_path, bytes(data)))


corruptions = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**31), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 2**31)),
    st.tuples(st.just("overwrite"), st.integers(0, 2**31), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("random"), st.binary(max_size=4096)),
    st.tuples(st.just("header-random"), st.binary(min_size=8, max_size=600)),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corruption=corruptions, index_only=st.booleans())
def test_corrupted_variants_are_all_rejected_cleanly(
    tmp_path: Path, snapshot: bytes, corruption: Any, index_only: bool
) -> None:
    data = bytearray(snapshot)
    kind = corruption[0]
    if kind == "flip":
        at = corruption[1] % len(data)
        data[at] ^= 1 << corruption[2]
    elif kind == "truncate":
        data = data[: corruption[1] % len(data)]
    elif kind == "overwrite":
        at = corruption[1] % len(data)
        patch = corruption[2]
        if bytes(data[at : at + len(patch)]) == patch:
            patch = bytes(b ^ 0xFF for b in patch)
        data[at : at + len(patch)] = patch
    elif kind == "random":
        data = bytearray(corruption[1])
    else:
        data[: len(corruption[1])] = corruption[1]
        data[:8] = b"BSCCACHE"  # past the magic check, into the header checks
    if bytes(data) == snapshot:
        return
    spans = _section_spans(snapshot)
    if index_only and kind in ("flip", "overwrite"):
        # read_index reads the header and index parts only; damage elsewhere is for the full load.
        at = corruption[1] % len(snapshot)
        end_of_index = sum(spans["ns_names"])
        if at >= end_of_index:
            index_only = False
    error = _rejected(tmp_path, bytes(data), index_only=index_only)
    assert isinstance(error, ValueError) and str(error)


# ---------------------------------------------------------------------------------------------- forged files
def _forged(data: bytes, **fields: int) -> bytes:
    """``data`` with header fields replaced and the header checksum recomputed (xxh3 is no MAC: anyone
    can), so only the loader's own checks stand between the file and the allocator."""
    at = {"dim": (32, "<I"), "code_bits": (36, "<I"), "max_entries": (48, "<Q"), "rerank": (76, "<I")}
    out = bytearray(data)
    for name, value in fields.items():
        offset, fmt = at[name]
        struct.pack_into(fmt, out, offset, value)
    struct.pack_into("<Q", out, 24, 0)
    struct.pack_into("<Q", out, 24, xxh3_64(bytes(out[: 192 + 32 * len(_SECTIONS)])))
    return bytes(out)


def test_a_forged_header_claiming_a_huge_dim_is_a_format_error_not_an_abort(
    tmp_path: Path, run_isolated: Any
) -> None:
    path = tmp_path / "forged.bsc"
    BinarySemanticCache(dim=8).save(path)  # empty: no section's length depends on dim
    path.write_bytes(_forged(path.read_bytes(), dim=2**32 - 1))
    out = run_isolated(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        import bsc
        try:
            bsc.BinarySemanticCache.load({str(path)!r})
        except bsc.CacheFormatError as exc:
            print("CacheFormatError", "dim" in str(exc))
        """
    )
    assert out.split() == ["CacheFormatError", "True"]


@pytest.mark.parametrize("max_entries", [0, 2**24, 2**64 - 1])
def test_a_corrupt_header_max_entries_is_a_format_error(
    tmp_path: Path, snapshot: bytes, max_entries: int
) -> None:
    assert "max_entries" in str(_rejected(tmp_path, _forged(snapshot, max_entries=max_entries)))


def test_a_broken_index_is_a_cache_format_error_raised_by_the_rust_core() -> None:
    from bsc._native import CacheFormatError as NativeError
    from bsc._native import HammingIndex

    assert CacheFormatError is NativeError and issubclass(CacheFormatError, ValueError)
    u32, u64 = np.zeros(0, np.uint32), np.zeros(0, np.uint64)
    with pytest.raises(CacheFormatError, match="namespace"):
        HammingIndex.from_parts(4, 10, False, ["a"], u32, u64, u64, u32, np.zeros(0), u64)
    # Bad arguments (not bad data) stay plain ValueErrors.
    with pytest.raises(ValueError) as info:
        HammingIndex.from_parts(3, 10, False, [], u32, u64, u64, u32, np.zeros(0), u64)
    assert type(info.value) is ValueError


def _with_section(data: bytes, name: str, payload: bytes) -> bytes:
    """``data`` with section ``name`` replaced by ``payload`` and every checksum and length fixed up
    (``name`` must be the last section, or ``payload`` as long as what it replaces)."""
    spans = _section_spans(data)
    offset, length = spans[name]
    index = _SECTIONS.index(name)
    assert len(payload) == length or index == len(_SECTIONS) - 1
    out = bytearray(data[:offset] + payload + data[offset + length :])
    struct.pack_into("<QQ", out, 192 + 32 * index + 16, len(payload), xxh3_64(payload))
    return _forged(bytes(out))


def test_forged_norms_that_do_not_match_their_vectors_are_refused(tmp_path: Path, snapshot: bytes) -> None:
    _, length = _section_spans(snapshot)["norms"]
    tiny = np.full(length // 4, 1e-3, dtype="<f4").tobytes()
    assert "norms" in str(_rejected(tmp_path, _with_section(snapshot, "norms", tiny)))


def test_forged_deeply_nested_metadata_is_a_format_error_not_a_recursion_error(
    tmp_path: Path, snapshot: bytes
) -> None:
    offset, length = _section_spans(snapshot)["metadata"]
    items = json.loads(snapshot[offset : offset + length])
    live = next(i for i, m in enumerate(items) if m is not None)
    for depth in (100, 100_000):
        items[live] = {"x": "PLACEHOLDER"}
        text = json.dumps(items).replace('"PLACEHOLDER"', "[" * depth + "]" * depth)
        error = _rejected(tmp_path, _with_section(snapshot, "metadata", text.encode()))
        assert "metadata" in str(error) and "deeper" in str(error)


def test_format_errors_name_the_file(tmp_path: Path, snapshot: bytes) -> None:
    data = bytearray(snapshot)
    data[-3] ^= 0x10  # in the metadata
    assert str(tmp_path / "bad.bsc") in str(_rejected(tmp_path, bytes(data)))
    data = bytearray(snapshot)
    data[40] ^= 0x10  # in the header
    (tmp_path / "bad.bsc").write_bytes(bytes(data))
    for reader in (BinarySemanticCache.load, read_index, codes_view):
        with pytest.raises(CacheFormatError) as info:
            reader(tmp_path / "bad.bsc")
        assert str(info.value).startswith(f"{tmp_path / 'bad.bsc'}: header")


def test_saving_into_a_missing_directory_names_the_path_given(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "cache.bsc"
    with pytest.raises(FileNotFoundError) as info:
        BinarySemanticCache(dim=4).save(target)
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)


def test_a_new_snapshot_honours_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path: Path) -> None:
    cache = BinarySemanticCache(dim=4)
    old = os.umask(0o027)
    try:
        cache.save(tmp_path / "new.bsc")
    finally:
        os.umask(old)
    assert (tmp_path / "new.bsc").stat().st_mode & 0o777 == 0o640
    (tmp_path / "shared.bsc").write_bytes(b"")
    os.chmod(tmp_path / "shared.bsc", 0o664)
    cache.save(tmp_path / "shared.bsc")
    assert (tmp_path / "shared.bsc").stat().st_mode & 0o777 == 0o664


def test_loading_a_fifo_is_refused_instead_of_blocking_forever(tmp_path: Path, run_isolated: Any) -> None:
    fifo = tmp_path / "cache.bsc"
    os.mkfifo(fifo)
    out = run_isolated(
        f"""
        import bsc
        for load in (bsc.BinarySemanticCache.load, bsc.persistence.read_index, bsc.persistence.codes_view):
            try:
                load({str(fifo)!r})
            except bsc.CacheFormatError as exc:
                print("refused", "regular file" in str(exc))
        """,
        timeout=60,
    )
    assert out.split() == ["refused", "True"] * 3


def test_a_file_truncated_while_it_is_loaded_is_a_format_error_not_sigbus(
    tmp_path: Path, run_isolated: Any
) -> None:
    path = tmp_path / "cache.bsc"
    cache = BinarySemanticCache(dim=16)
    cache.put_many(np.random.default_rng(5).standard_normal((20_000, 16)), ["answer"] * 20_000)
    cache.save(path)
    # `cp new.bsc cache.bsc` truncates the file it writes into: do that right after the header is read.
    out = run_isolated(
        f"""
        import os
        import bsc, bsc.persistence as p
        parse = p._parse_header
        def parse_then_truncate(buf, size):
            header = parse(buf, size)
            os.truncate({str(path)!r}, 4096)
            return header
        p._parse_header = parse_then_truncate
        try:
            bsc.BinarySemanticCache.load({str(path)!r})
        except bsc.CacheFormatError as exc:
            print("CacheFormatError", "changed while" in str(exc))
        """
    )
    assert out.split() == ["CacheFormatError", "True"]
    # Truncated after the file was opened and read (a mapped file then raised SIGBUS on the next access):
    # the load goes on from its own copy and returns the cache as it was saved.
    cache.save(path)
    out = run_isolated(
        f"""
        import os
        import bsc, bsc.persistence as p
        verify = p._verify
        def truncate_then_verify(buf, header, name):
            os.truncate({str(path)!r}, 4096)
            return verify(buf, header, name)
        p._verify = truncate_then_verify
        print(len(bsc.BinarySemanticCache.load({str(path)!r})))
        """
    )
    assert out.split() == ["20000"]


def test_a_save_or_load_removes_the_temp_files_of_killed_saves_but_not_of_running_ones(
    tmp_path: Path, run_isolated: Any
) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "cache.bsc"
    saver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import numpy as np, bsc\n"
            "c = bsc.BinarySemanticCache(dim=64, rerank=0, max_entries=400_000)\n"
            "c.put_many(np.random.default_rng(1).standard_normal((400_000, 64)), ['r' * 40] * 400_000)\n"
            f"print('ready', flush=True)\nc.save({str(path)!r})\nprint('saved', flush=True)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert saver.stdout is not None and saver.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".cache.bsc.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        saver.send_signal(signal.SIGKILL)
    finally:
        saver.wait(timeout=60)
    left = list(tmp_path.glob(".cache.bsc.*.tmp"))
    assert left and not path.exists(), "the save finished before it could be killed"
    # A temp file of a save still running (this process, by its pid) must survive.
    running = tmp_path / f".cache.bsc.{os.getpid()}.abcd1234.tmp"
    running.write_bytes(b"in progress")
    BinarySemanticCache(dim=4).save(path)
    assert sorted(tmp_path.glob(".cache.bsc.*.tmp")) == [running]
    os.rename(running, tmp_path / f".cache.bsc.{saver.pid}.abcd1234.tmp")  # its writer is dead too
    BinarySemanticCache.load(path)
    assert not list(tmp_path.glob(".cache.bsc.*.tmp"))


def _as_version_1(data: bytes) -> bytes:
    """A version-2 snapshot rewritten as version 1 wrote it: 32-bit ids and free handles."""
    header = bytearray(data[:192])
    struct.pack_into("<I", header, 8, 1)
    table = bytearray()
    body = bytearray()
    position = 192 + 32 * len(_SECTIONS)
    for i, name in enumerate(_SECTIONS):
        _, _, offset, length, _ = struct.unpack_from("<IIQQQ", data, 192 + 32 * i)
        payload = data[offset : offset + length]
        if name in ("ids", "free"):
            wide = np.frombuffer(payload, dtype="<u8")
            assert np.all(wide >> 32 == 0)  # generations below 256 fit the old ids
            payload = wide.astype("<u4").tobytes()
        start = (position + 63) // 64 * 64
        body += bytes(start - position) + payload
        table += struct.pack("<IIQQQ", i + 1, 0, start, len(payload), xxh3_64(payload))
        position = start + len(payload)
    out = bytearray(header + table + body)
    struct.pack_into("<Q", out, 24, 0)
    struct.pack_into("<Q", out, 24, xxh3_64(bytes(out[: 192 + 32 * len(_SECTIONS)])))
    return bytes(out)


def test_a_version_1_snapshot_still_loads_with_the_same_ids_and_entries(
    tmp_path: Path, snapshot: bytes
) -> None:
    new, old = tmp_path / "v2.bsc", tmp_path / "v1.bsc"
    new.write_bytes(snapshot)
    old.write_bytes(_as_version_1(snapshot))
    a = BinarySemanticCache.load(new, clock=FakeClock(), wall_clock=frozen_wall())
    b = BinarySemanticCache.load(old, clock=FakeClock(), wall_clock=frozen_wall())
    assert observable(a) == observable(b)
    assert len(read_index(old)) == len(a)

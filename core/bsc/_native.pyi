"""Type stubs of the Rust extension (checked against the compiled module by mypy.stubtest in the tests)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BertModel",
    "BinaryEncoder",
    "CacheFormatError",
    "CacheReader",
    "CacheWriter",
    "GeneralPath",
    "HammingIndex",
    "Payloads",
    "cpu_features",
    "hamming_search",
    "thread_count",
    "xxh3_64",
]

_HitT = TypeVar("_HitT")

class CacheFormatError(ValueError): ...
class GeneralPath(Exception): ...

@final
class BertModel:
    def __new__(
        cls,
        weight: Callable[[str], npt.NDArray[np.float32]],
        *,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        activation: str,
        layer_norm_eps: float,
        pooling: str,
        portable: bool = False,
    ) -> BertModel: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def max_positions(self) -> int: ...
    @property
    def kernel(self) -> str: ...
    def forward(
        self,
        input_ids: npt.NDArray[np.int32],
        token_type_ids: npt.NDArray[np.int32],
        attention_mask: npt.NDArray[np.int32],
        *,
        threads: int = 1,
    ) -> npt.NDArray[np.float32]: ...

@final
class BinaryEncoder:
    def __new__(cls, dim: int, code_bits: int = 256, seed: int = 42) -> BinaryEncoder: ...
    @property
    def dim(self) -> int: ...
    @property
    def code_bits(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def words(self) -> int: ...
    def encode(self, x: Any) -> npt.NDArray[np.uint64]: ...
    def encode_rows(
        self, x: Any, with_rows: bool = True
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int8], npt.NDArray[np.float32]]: ...
    def projection_matrix(self) -> npt.NDArray[np.float32]: ...

@final
class HammingIndex:
    def __new__(
        cls,
        words: int,
        max_entries: int,
        with_expiry: bool = False,
        eviction: str = "lru",
        radius: int = 0,
        row_dim: int = 0,
    ) -> HammingIndex: ...
    @property
    def eviction(self) -> str: ...
    def set_eviction(self, eviction: str, radius: int) -> None: ...
    @property
    def words(self) -> int: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def row_dim(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: int, /) -> bool: ...
    def namespace_len(self, namespace: str) -> int: ...
    def namespaces(self) -> list[str]: ...
    def bytes_in_use(self) -> int: ...
    def bytes_allocated(self) -> int: ...
    def insert(
        self, namespace: str, code: npt.NDArray[np.uint64], expires_at: float
    ) -> tuple[int, int | None]: ...
    def insert_many(
        self, namespace: str, codes: npt.NDArray[np.uint64], expires_at: float
    ) -> tuple[list[int], list[int]]: ...
    def search(
        self,
        namespace: str,
        query: npt.NDArray[np.uint64],
        k: int,
        max_distance: int,
        now: float = 0.0,
    ) -> tuple[list[tuple[int, int]], list[int]]: ...
    def remove(self, id: int) -> bool: ...
    def touch(self, id: int) -> bool: ...
    def record_lookup(self, hit: bool) -> None: ...
    def record_removals(self, evictions: int, expirations: int) -> None: ...
    def counters(self) -> tuple[int, int, int, int]: ...
    def set_counters(self, values: tuple[int, int, int, int]) -> None: ...
    def clear(self, namespace: str | None = None) -> list[int]: ...
    def expired(self, now: float) -> list[int]: ...
    def lru_order(self) -> list[int]: ...
    def entry(self, id: int) -> tuple[str, list[int], float] | None: ...
    def to_parts(
        self,
    ) -> tuple[
        list[str],
        npt.NDArray[np.uint32],
        npt.NDArray[np.uint64],
        npt.NDArray[np.uint64],
        npt.NDArray[np.uint32],
        npt.NDArray[np.float64],
        npt.NDArray[np.uint64],
    ]: ...
    def snapshot(
        self,
    ) -> tuple[
        tuple[
            list[str],
            npt.NDArray[np.uint32],
            npt.NDArray[np.uint64],
            npt.NDArray[np.uint64],
            npt.NDArray[np.uint32],
            npt.NDArray[np.float64],
            npt.NDArray[np.uint64],
        ],
        npt.NDArray[np.uint32],
        npt.NDArray[np.int8],
        npt.NDArray[np.float32],
    ]: ...
    @staticmethod
    def handles_of(ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint32]: ...
    def _hold_for_fork(self) -> None: ...
    def _release_after_fork(self) -> None: ...
    @staticmethod
    def from_parts(
        words: int,
        max_entries: int,
        with_expiry: bool,
        names: list[str],
        counts: npt.NDArray[np.uint32],
        codes: npt.NDArray[np.uint64],
        ids: npt.NDArray[np.uint64],
        lru: npt.NDArray[np.uint32],
        expires: npt.NDArray[np.float64],
        free: npt.NDArray[np.uint64],
        row_dim: int = 0,
        rows: npt.NDArray[np.int8] | None = None,
        norms: npt.NDArray[np.float32] | None = None,
    ) -> HammingIndex: ...

def hamming_search(
    codes: npt.NDArray[np.uint64],
    query: npt.NDArray[np.uint64],
    k: int = 1,
    max_distance: int | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]: ...
def cpu_features() -> list[str]: ...
def thread_count() -> int: ...
def xxh3_64(data: Any) -> int: ...

@final
class Payloads:
    def __new__(cls) -> Payloads: ...
    def publish(self, ids: Sequence[int], responses: Sequence[Any], metadata: Sequence[Any]) -> None: ...
    def forget(self, ids: list[int]) -> None: ...
    def clear(self) -> None: ...
    def get(self, id: int) -> tuple[Any, Any] | None: ...
    def rows(self, ids: list[int]) -> tuple[list[Any], list[Any]]: ...

@final
class CacheReader(Generic[_HitT]):
    def __new__(
        cls,
        index: HammingIndex,
        encoder: BinaryEncoder,
        payloads: Payloads,
        hit_type: type[_HitT],
        *,
        shortlist: int,
        max_distance: int,
        min_similarity: float,
        rerank: bool,
        clock: Callable[[], float] | None,
    ) -> CacheReader[_HitT]: ...
    def get(self, embedding: Any, namespace: Any) -> _HitT | None: ...
    def lookup(
        self, embedding: Any, namespace: str, k: int, touch_and_count: bool
    ) -> tuple[list[_HitT], list[int]]: ...

@final
class CacheWriter:
    def __new__(cls, index: HammingIndex, encoder: BinaryEncoder, payloads: Payloads) -> CacheWriter: ...
    def put(
        self,
        embedding: Any,
        response: Any,
        namespace: Any,
        metadata: Mapping[str, Any] | None,
        expires_at: float,
    ) -> int: ...
    def put_many(
        self,
        embeddings: Any,
        responses: Sequence[str | bytes],
        namespace: str,
        metadata: Sequence[Mapping[str, Any] | None],
        expires_at: float,
    ) -> list[int]: ...
    def insert_encoded(
        self,
        namespace: str,
        codes: npt.NDArray[np.uint64],
        rows: npt.NDArray[np.int8],
        expires_at: float,
        responses: Sequence[str | bytes],
        metadata: Sequence[Mapping[str, Any] | None],
    ) -> list[int]: ...

"""`ReplicatedCache`: a `BinarySemanticCache` whose entries live in Redis and are searched locally.

Redis is the source of truth. Every write (put, delete, clear) goes to Redis first, as one script that
changes the entries and appends the matching event to the cache's change stream; the writer then applies
the stream up to its own event, so it reads its own writes. A daemon thread tails the stream with
``XREAD BLOCK`` and applies other processes' events. Lookups are the inherited in-memory search: they
never touch the network.

A replica rebuilds from the entries when it starts, when an event's epoch differs from its own (the cache
was made again: ``FLUSHALL``, a restart without persistence, a failover to an empty node), when an event
is missing (it fell behind the trimmed stream), and when Redis comes back after an outage.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from bsc import _fork
from bsc._input import as_embeddings
from bsc.cache import BinarySemanticCache, EncodedRows, Hit, Response, _check_namespace, checked_payloads
from bsc.persistence import CacheFormatError
from bsc.store.codec import DecodedRows, decode_entries, encode_entry
from bsc.store.redis_store import RedisStore, StoreUnavailableError
from bsc.thresholds import radius_for

__all__ = ["PutListener", "ReplicaStats", "ReplicatedCache"]

logger = logging.getLogger(__name__)

#: ``listener(namespace, ids, metadata)``: entries a replica has just added (see `ReplicatedCache.subscribe`).
PutListener = Callable[[str, list[int], list[Mapping[str, Any] | None]], None]

# Rows a put script takes at once: a script blocks Redis while it runs, so batches stay short.
_PUT_CHUNK = 500
_RECENT = 65_536
_NO_ID = -1
_NOTHING: Mapping[str, bytes] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """The state of a replica (a snapshot).

    Attributes:
        connected: False while Redis is unreachable (lookups are served locally meanwhile).
        seq: number of the last change event applied.
        events_applied: change events applied since the replica was made.
        rebuilds: full reloads from Redis (the first start counts).
        lost_writes: entries, deletes and clears made while Redis was unreachable (``fail_open``);
            they stayed local and were dropped when the replica rebuilt on reconnection.
        pending_touches: uses not yet sent to the global LRU order.
    """

    connected: bool
    seq: int
    events_applied: int
    rebuilds: int
    lost_writes: int
    pending_touches: int


class ReplicatedCache(BinarySemanticCache):
    """A shared cache: Redis holds the entries, this process holds a replica and searches it in memory.

    Made by `RedisStore.open` (or ``SemanticCache(redis_url=...)``). It behaves as a
    `BinarySemanticCache` with these differences:

    - ``put``/``put_many``/``delete``/``clear`` change the shared cache (one Redis round trip plus
      applying the change locally); other processes see them within their propagation delay.
    - ``max_entries`` and ``eviction`` are global: when the shared cache is full, Redis evicts the entry
      the policy chooses over the entries and uses of all processes, in the put script (``lru``: the
      least recently used; ``lfu``, ``sieve``, ``diverse``: the same algorithms as a local cache, over a
      queue and a state field per entry kept in Redis). Each replica's own index never evicts. Uses
      are sent in batches every ``touch_interval`` seconds, so an entry used by another process within
      the last interval can be evicted as if it had not been, and ``lfu`` counts at most one use per
      entry, process and interval. ``diverse``'s neighbourhood admission is judged by the writer against
      its replica. While Redis is unreachable (``fail_open``), local writes are trimmed oldest first.
    - ``ttl`` is global: a deadline in wall-clock seconds is stored with each entry and honoured by every
      replica (so clocks of the hosts should agree to well within the TTL).
    - ``dim``, ``code_bits``, ``seed``, ``max_entries``, ``ttl``, ``eviction`` and the embedder's name
      are pinned in Redis by the first process; a process with other settings gets ValueError.
      ``threshold`` and ``rerank`` may differ per process.
    - Ids are local to a process (the same entry has different ids in different processes).

    Args:
        dim: embedding dimension.
        store: the `RedisStore` to share through.
        model: the embedder's name (pinned, so caches of different models never mix).
        **options: as for `BinarySemanticCache`.

    Raises:
        StoreUnavailableError: Redis is unreachable and the store's ``fail_open`` is False.
        ValueError: the shared cache exists with other settings, or an option is invalid.

    Example:
        >>> import numpy as np
        >>> from bsc.store import RedisStore
        >>> a = RedisStore("redis://127.0.0.1:6379").open(dim=4)  # doctest: +SKIP
        >>> b = RedisStore("redis://127.0.0.1:6379").open(dim=4)  # doctest: +SKIP
        >>> _ = a.put(np.array([1.0, 0.2, 0.0, 0.1]), "shared answer")  # doctest: +SKIP
        >>> b.sync(); b.get(np.array([1.0, 0.21, 0.0, 0.1])).response  # doctest: +SKIP
        'shared answer'
    """

    def __init__(
        self,
        dim: int,
        *,
        store: RedisStore,
        model: str = "",
        max_entries: int = 100_000,
        ttl: float | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(store, RedisStore):
            raise TypeError(f"store must be a RedisStore, got {type(store).__name__}")
        if not isinstance(max_entries, int) or max_entries <= 0:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        # Redis enforces max_entries. The local index has room for twice as many: a replica starting
        # while others write can briefly hold entries that an event it has not applied yet removes, and
        # its own LRU must never evict on its own (the replicas would then differ).
        super().__init__(dim, max_entries=2 * max_entries, ttl=ttl, **options)
        self.max_entries = max_entries
        self._hit_radius = radius_for(self.threshold, self.code_bits)
        self.store = store
        self.fail_open = store.fail_open
        self._cfg = (
            f"v1 dim={dim} code_bits={self.code_bits} seed={self.seed} max_entries={max_entries} "
            f"ttl={None if ttl is None else float(ttl)!r} model={model}"
            # Only a policy other than the default shows, so caches made before policies still match.
            + ("" if self.eviction == "lru" else f" eviction={self.eviction}")
        )
        # Held while applying changes (by the follower thread, a writer catching up, sync): one applier at
        # a time, in stream order. No round trip to Redis is made under it but a reload's scan (see
        # `_reload`): while Redis hangs, each takes a store timeout, and local writes would wait on it.
        self._applier = _Applier()
        self._sync = self._applier.lock
        self._by_uid: dict[str, int] = {}
        self._uid_of: dict[int, str] = {}
        self._recent: OrderedDict[str, int] = OrderedDict()  # uid -> id of recent puts, for writers
        self._listeners: list[PutListener] = []
        self._epoch: str | None = None
        self._seq = 0
        self._last_id = "0-0"
        self._connected = False
        self._outage_logged = False
        self._uses: dict[str, float] = {}
        self._uses_lock = threading.Lock()
        self._events_applied = self._rebuilds = self._lost = 0
        self._pid = os.getpid()
        try:
            self._reload()
        except StoreUnavailableError as exc:
            if not self.fail_open:
                raise
            self._went_down(exc)
        self._start_following()

    def _start_following(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_follow,
            args=(weakref.ref(self), self._stop, self.store.touch_interval),
            name=f"bsc-replica-{self.store.name}",
            daemon=True,
        )
        self._thread.start()

    def _hold_for_fork(self) -> None:
        # _sync is held already, at its own level (see _Applier).
        self._uses_lock.acquire()
        super()._hold_for_fork()

    def _release_after_fork(self) -> None:
        super()._release_after_fork()
        self._uses_lock.release()
        if os.getpid() != self._pid:
            # A forked child (gunicorn --preload, Celery prefork) has no follower thread: start its own.
            # redis-py opens new connections in a child by itself.
            self._pid = os.getpid()
            self._start_following()

    # ---------------------------------------------------------------- writing (through Redis)
    def put(
        self,
        embedding: npt.ArrayLike,
        response: Response,
        *,
        namespace: str = "default",
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Stores an entry in the shared cache (as `BinarySemanticCache.put`) and returns its local id."""
        x = as_embeddings(embedding, self.dim, ndim=1)
        return self.put_many(x[None, :], [response], namespace=namespace, metadata=[metadata])[0]

    def put_many(
        self,
        embeddings: npt.ArrayLike,
        responses: Sequence[Response],
        *,
        namespace: str = "default",
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[int]:
        """Writes validated, encoded rows to Redis, then applies the stream up to that write. Every row
        carries its int8 rerank copy, even with ``rerank=0`` here: peers may rerank."""
        rows = self.encode_rows(embeddings)
        n = len(rows.codes)
        frozen = checked_payloads(namespace, responses, metadata, rows=n)
        expires = math.inf if self.ttl is None else self._clock() + self.ttl
        deadline = 0.0 if math.isinf(expires) else time.time() + (expires - self._clock())
        admitted = self._has_neighbours(namespace, rows.codes)
        blobs = [
            encode_entry(
                rows.codes[i], rows.vectors[i], float(rows.norms[i]), responses[i], frozen[i], deadline
            )
            for i in range(n)
        ]
        if not self._connected and self.fail_open:
            return self._local_only(namespace, rows, responses, frozen, expires)
        uids: list[str] = []
        target: tuple[str, int, str] | None = None
        written: dict[str, bytes] = {}
        chunk = min(_PUT_CHUNK, self.max_entries)
        try:
            for start in range(0, len(blobs), chunk):
                result = self.store.put(
                    secrets.token_hex(8),
                    self._cfg,
                    namespace,
                    self.max_entries,
                    [(deadline, admitted[start + i], b) for i, b in enumerate(blobs[start : start + chunk])],
                    self.eviction,
                )
                written.update(zip(result.uids, blobs[start : start + chunk], strict=True))
                uids += result.uids
                target = (result.epoch, result.seq, result.stream_id)
        except StoreUnavailableError as exc:
            self._went_down(exc)
            if not self.fail_open:
                raise
            return self._local_only(namespace, rows, responses, frozen, expires)
        if target is not None:
            self._catch_up(*target, written)
        return [self._by_uid.get(u, self._recent.get(u, _NO_ID)) for u in uids]

    def _has_neighbours(self, namespace: str, codes: npt.NDArray[np.uint64]) -> list[bool]:
        """Per row, whether this replica holds an entry of ``namespace`` within the hit radius of it
        (``diverse`` admits those as visited); all False for the other policies."""
        if self.eviction != "diverse":
            return [False] * len(codes)
        now = self._clock()
        return [bool(self._index.search(namespace, code, 1, self._hit_radius, now)[0]) for code in codes]

    def _local_only(
        self,
        namespace: str,
        rows: EncodedRows,
        responses: Sequence[Response],
        frozen: Sequence[Mapping[str, Any] | None],
        expires: float,
    ) -> list[int]:
        """Stores rows in this replica only (Redis is down, ``fail_open``): counted as lost, dropped when
        the replica rebuilds; the local LRU keeps it within ``max_entries``."""
        with self._sync:
            over = len(self) + len(rows.codes) - self.max_entries
            if over > 0:
                for old in self._index.lru_order()[:over]:
                    self._drop_local(old)
            self._lost += len(rows.codes)
            return self.insert_encoded(namespace, rows, responses, frozen, expires=expires)

    def delete(self, id: int) -> bool:
        """Removes an entry from the shared cache; False if it is already gone."""
        uid = self._uid_of.get(id) if isinstance(id, int) else None
        if uid is None:  # gone, or stored while Redis was down (local only)
            return super().delete(id)
        if not self._connected and self.fail_open:
            self._lost += 1
            return self._drop_local(id)
        try:
            seq, stream_id, removed = self.store.delete([uid])
        except StoreUnavailableError as exc:
            self._went_down(exc)
            if not self.fail_open:
                raise
            self._lost += 1
            return self._drop_local(id)
        if seq:
            self._catch_up(self._epoch, seq, stream_id)
        return bool(removed)

    def clear(self, namespace: str | None = None) -> None:
        """Removes every entry of the shared cache, or only one namespace's, in every process."""
        if namespace is not None:
            _check_namespace(namespace)
        if not self._connected and self.fail_open:
            self._lost += 1
            return self._clear_local(namespace)
        try:
            seq, stream_id = self.store.clear(namespace)
        except StoreUnavailableError as exc:
            self._went_down(exc)
            if not self.fail_open:
                raise
            self._lost += 1
            return self._clear_local(namespace)
        if seq:
            self._catch_up(self._epoch, seq, stream_id)
        else:
            self._clear_local(namespace)

    # ---------------------------------------------------------------- use (for the global LRU)
    def get(self, embedding: npt.ArrayLike, *, namespace: str = "default") -> Hit | None:
        hit = super().get(embedding, namespace=namespace)
        if hit is not None:
            self._used(hit.id)
        return hit

    def touch(self, id: int) -> bool:
        if not super().touch(id):
            return False
        self._used(id)
        return True

    def _used(self, id: int) -> None:
        uid = self._uid_of.get(id)
        if uid is not None:
            with self._uses_lock:
                self._uses[uid] = time.time()

    def _flush_uses(self) -> None:
        with self._uses_lock:
            uses, self._uses = self._uses, {}
        self.store.touch(uses, self.eviction)

    # ---------------------------------------------------------------- following the stream
    def sync(self, timeout: float = 10.0) -> None:
        """Waits until this replica has applied every change made in Redis before the call (e.g. to read
        another process's write at once). Lookups never wait; this is for when freshness matters.

        Raises:
            StoreUnavailableError: Redis is unreachable.
            TimeoutError: not caught up within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        before = self._last_id
        state = self.store.state()
        while True:
            with self._sync:
                # Compared only if no other applier moved the replica since Redis was asked: one ahead of
                # ``state`` would look like a Redis gone back.
                unmoved = self._last_id == before
                reload = not self._connected or (unmoved and self._moved(*state.position))
                if not reload and self._epoch == state.epoch and self._seq >= state.seq:
                    return
            if reload:
                self._reload()
                before = self._last_id
                state = self.store.state()
            elif not self._step():  # behind, and the events are gone from the stream: reload
                self._reload()
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica did not catch up with Redis within {timeout} s")

    def _catch_up(
        self, epoch: str | None, seq: int, stream_id: str, known: Mapping[str, bytes] = _NOTHING
    ) -> None:
        """Applies the stream until event ``seq`` of ``epoch``, at ``stream_id`` (a writer reading its
        own write, whose packed entries are ``known``). Both are compared: after Redis went back to an
        earlier state, its numbers come again, and only the stream id tells the write from the change
        this replica applied under the same number (it then reloads, see `_apply`)."""
        try:
            for _ in range(3):
                with self._sync:
                    applied = _stream_order(self._last_id) >= _stream_order(stream_id)
                    if self._epoch == epoch and self._seq >= seq and applied:
                        return
                if not self._step(known):  # the event is gone from the stream already: reload
                    self._reload()
        except StoreUnavailableError as exc:
            self._went_down(exc)  # the write is in Redis; the follower applies it on reconnection

    def _follow_once(self, interval: float) -> None:
        if not self._connected:
            self._reload()
            return
        before = self._last_id
        if not self._step(block=min(1.0, interval)):
            position = self.store.position()
            with self._sync:  # compared only if no writer moved the replica meanwhile (see `sync`)
                moved = self._last_id == before and self._moved(*position)
            if moved:
                self._reload()
        self._flush_uses()

    def _step(self, known: Mapping[str, bytes] = _NOTHING, *, block: float | None = None) -> bool:
        """Reads the events after the replica's last one and the entries they add, then applies them
        under ``_sync`` unless another applier moved the replica meanwhile (it then has them, or will
        read them again). ``known`` holds packed entries the caller has already (a writer's own).
        Returns False if the stream holds nothing after the replica's last event and no one moved it."""
        after = self._last_id
        events = self.store.read(after, block=block)
        if not events:
            return self._last_id != after
        seq = self._seq  # a stale (lower) number only makes the fetch read more
        wanted = [
            uid
            for _, f in events
            if f.get(b"o") == b"p" and f.get(b"u") and int(f.get(b"s", 0)) > seq
            for uid in f[b"u"].decode().split(",")
            if uid not in known
        ]
        blobs = {**known, **self.store.fetch(wanted)} if wanted else known
        with self._sync:
            followed = self._last_id != after or self._apply(events, blobs)
        if not followed:
            self._reload()
        return True

    def _apply(self, events: list[tuple[str, dict[bytes, bytes]]], blobs: Mapping[str, bytes]) -> bool:
        """Applies events in stream order (caller holds ``_sync``), the entries they add taken from
        ``blobs`` (an entry not there is gone from Redis already). Returns False, having applied those
        before it, at an event the replica cannot follow from: it must reload."""
        for stream_id, fields in events:
            try:
                seq, epoch, op = int(fields[b"s"]), fields[b"e"].decode(), fields[b"o"]
                namespace, removed = fields[b"n"].decode(), fields[b"x"].decode()
            except (KeyError, ValueError) as exc:
                logger.warning(
                    "shared cache %r: malformed change event %s (%s); reloading",
                    self.store.name,
                    stream_id,
                    exc,
                )
                return False
            if epoch != self._epoch:
                return False
            if seq <= self._seq:
                if _stream_order(stream_id) > _stream_order(self._last_id):  # a number come again
                    self._went_back(seq - 1)
                    return False
                continue  # applied already (in the snapshot)
            if seq != self._seq + 1:  # events were trimmed before this replica read them
                return False
            for uid in removed.split(",") if removed else ():
                self._drop_uid(uid)
            if op == b"p":
                new = fields.get(b"u", b"").decode()
                self._insert_packed(namespace, [(u, blobs[u]) for u in new.split(",") if u in blobs])
            elif op == b"c":
                self._clear_local(namespace)
            elif op == b"C":
                self._clear_local(None)
            self._seq, self._last_id = seq, stream_id
            self._events_applied += 1
        return True

    def _moved(self, epoch: str | None, seq: int, last_id: str) -> bool:
        """Whether Redis, at change ``seq`` of ``epoch`` (stream id ``last_id``), is no longer at or ahead
        of this replica: flushed or restarted empty (another epoch, or none), or back at an earlier state
        of the same epoch (see `_went_back`): fewer changes, or as many but another last one."""
        if epoch != self._epoch:
            return True
        if seq < self._seq or (seq == self._seq and seq and last_id != self._last_id):
            self._went_back(min(seq, self._seq - 1))
            return True
        return False

    def _went_back(self, seq: int) -> None:
        """Logs that Redis is back at change ``seq``, before this replica's (restored from an older
        snapshot, or failed over to a replica that lagged): the numbers after it come again for other
        changes, so the replica must reload, and the changes it had after ``seq`` are lost."""
        logger.warning(
            "shared cache %r: Redis at %s went back from change %d to %d (an older snapshot, or a "
            "failover to a replica that lagged); reloading: the changes after %d are lost",
            self.store.name,
            self.store.url,
            self._seq,
            seq,
            seq,
        )

    def _reload(self) -> None:
        """Reloads the replica from Redis. Its first round trips, the ones a hung Redis makes take a
        store timeout each, are made before taking ``_sync``, so local writes do not wait on them; the
        scan is made under it, streaming the entries into the replica (a reload holds no second copy).
        If another applier reloads meanwhile, this one has nothing left to do."""
        reloads = self._rebuilds
        self.store.init(secrets.token_hex(8), self._cfg)
        state = self.store.state()
        with self._sync:
            if self._rebuilds != reloads:
                return
            self._clear_local(None)
            for number, namespace in state.namespaces.items():
                for batch in self.store.scan(number):
                    self._insert_packed(namespace, batch, recent=False)
            self._epoch, self._seq, self._last_id = state.position
            self._rebuilds += 1
            self._connected = True
        if self._outage_logged:
            self._outage_logged = False
            logger.warning(
                "shared cache %r: Redis at %s is back; replica reloaded", self.store.name, self.store.url
            )

    def _insert_packed(self, namespace: str, batch: list[tuple[str, bytes]], *, recent: bool = True) -> None:
        """Adds packed entries to the replica, replacing any it holds under the same uids; ``recent``
        remembers their ids for a writer waiting for them."""
        if not batch:
            return
        uids, rows = self._decoded(batch)
        if not uids:
            return  # every entry was corrupt (each skipped with a warning): nothing to add
        for uid in [u for u in uids if u in self._by_uid]:  # seen twice (a scan during writes)
            self._drop_uid(uid)
        now_wall, now = time.time(), self._clock()
        groups = [np.arange(len(uids))] if not rows.deadlines.any() else _same_values(rows.deadlines)
        for group in groups:
            deadline = float(rows.deadlines[group[0]])
            if deadline and deadline <= now_wall:
                continue  # expired; Redis drops it on a later write
            expires = math.inf if not deadline else now + (deadline - now_wall)
            metas = [rows.metadata[i] for i in group]
            encoded = EncodedRows(rows.codes[group], rows.vectors[group], rows.norms[group])
            ids = self.insert_encoded(
                namespace, encoded, [rows.responses[i] for i in group], metas, expires=expires
            )
            placed = [uids[i] for i in group]
            self._by_uid.update(zip(placed, ids, strict=True))
            self._uid_of.update(zip(ids, placed, strict=True))
            if recent:
                self._recent.update(zip(placed, ids, strict=True))
                while len(self._recent) > _RECENT:
                    self._recent.popitem(last=False)
            for listener in self._listeners:
                listener(namespace, ids, metas)

    def _decoded(self, batch: list[tuple[str, bytes]]) -> tuple[list[str], DecodedRows]:
        words = self.code_bits // 64
        try:
            return [u for u, _ in batch], decode_entries([b for _, b in batch], words=words, dim=self.dim)
        except CacheFormatError:
            good = []
            for uid, blob in batch:
                try:
                    decode_entries([blob], words=words, dim=self.dim)
                except CacheFormatError as exc:
                    logger.warning("shared cache %r: skipping entry %s: %s", self.store.name, uid, exc)
                else:
                    good.append((uid, blob))
            return [u for u, _ in good], decode_entries([b for _, b in good], words=words, dim=self.dim)

    def _drop_uid(self, uid: str) -> None:
        local = self._by_uid.pop(uid, None)
        if local is not None:
            self._drop_local(local)

    def _drop_local(self, id: int) -> bool:
        uid = self._uid_of.pop(id, None)
        if uid is not None:
            self._by_uid.pop(uid, None)
        return BinarySemanticCache.delete(self, id)

    def _clear_local(self, namespace: str | None) -> None:
        with self._sync:
            BinarySemanticCache.clear(self, namespace)
            if namespace is None:
                self._by_uid.clear()
                self._uid_of.clear()
                return
            for gone in [i for i in self._uid_of if i not in self._index]:
                self._by_uid.pop(self._uid_of.pop(gone), None)

    def _went_down(self, exc: BaseException) -> None:
        self._connected = False
        if not self._outage_logged:  # once per outage, not once per call
            self._outage_logged = True
            logger.warning(
                "shared cache %r: %s; lookups are served from the local replica%s",
                self.store.name,
                exc,
                "; writes stay local and are counted as lost until Redis is back" if self.fail_open else "",
            )

    # ---------------------------------------------------------------- the rest
    def subscribe(self, listener: PutListener) -> None:
        """Calls ``listener(namespace, ids, metadata)`` for the entries this replica holds now, and from
        then on for every entry it adds (its own writes, other processes', and reloads). It runs on the
        thread applying the change and must not write to the cache."""
        with self._sync:
            self._listeners.append(listener)
            for entry_id in self._index.lru_order():
                hit = self.entry(entry_id)
                if hit is not None:
                    listener(hit.namespace, [entry_id], [hit.metadata])

    def replication(self) -> ReplicaStats:
        """Connection state, events applied, rebuilds and writes lost during outages."""
        with self._uses_lock:
            pending = len(self._uses)
        return ReplicaStats(
            connected=self._connected,
            seq=self._seq,
            events_applied=self._events_applied,
            rebuilds=self._rebuilds,
            lost_writes=self._lost,
            pending_touches=pending,
        )

    def close(self) -> None:
        """Stops following the stream and sends the pending uses. The replica keeps serving lookups."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        # With Redis down there is nothing to send the uses to; the LRU order is approximate anyway.
        with contextlib.suppress(StoreUnavailableError):
            self._flush_uses()

    def __repr__(self) -> str:
        return (
            f"ReplicatedCache(store={self.store!r}, dim={self.dim}, entries={len(self)}, "
            f"max_entries={self.max_entries})"
        )


def _stream_order(stream_id: str) -> tuple[int, int]:
    """A Redis stream id (``"ms-seq"``) as a key that sorts as Redis orders them."""
    ms, _, n = stream_id.partition("-")
    return int(ms), int(n or 0)


class _Applier:
    """A replica's applier lock (its ``_sync``) as a fork participant of its own, at
    `bsc._fork.APPLIER_LEVEL`: the applier calls the replica's listeners, which take a text-level cache's
    lock, so the fork hooks must take this lock before that one (and the replica's other locks after it)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        _fork.track(self, _fork.APPLIER_LEVEL)

    def _hold_for_fork(self) -> None:
        self.lock.acquire()

    def _release_after_fork(self) -> None:
        self.lock.release()


def _same_values(values: npt.NDArray[np.float64]) -> list[npt.NDArray[np.intp]]:
    """Indices of ``values`` grouped by equal value."""
    _, inverse = np.unique(values, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return list(np.split(order, bounds))


def _follow(ref: weakref.ReferenceType[ReplicatedCache], stop: threading.Event, interval: float) -> None:
    """The follower thread: applies the stream until the replica is closed or garbage collected. It
    holds the replica only for one step at a time, so an abandoned replica is collected."""
    delay = 0.05
    failing = False  # an unexpected error is logged with its traceback once, not once a second
    while not stop.is_set():
        cache = ref()
        if cache is None:
            return
        try:
            cache._follow_once(interval)
            delay = 0.05
            failing = False
        except StoreUnavailableError as exc:
            cache._went_down(exc)
            cache = None
            stop.wait(delay)
            delay = min(2 * delay, 2.0)  # retry soon after a blip, every 2 s in a long outage
        except Exception:  # a bug must not end the thread silently: the replica would go stale
            if not failing:
                logger.exception(
                    "shared cache replica: unexpected error while following the stream; retrying every "
                    "second, and logging again only after it recovers"
                )
            failing = True
            cache = None
            stop.wait(1.0)
        cache = None

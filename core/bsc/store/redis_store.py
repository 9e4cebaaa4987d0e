"""`RedisStore`: where a shared cache's entries and change stream live in Redis.

The store holds no replica and no thread: it names the keys (see `bsc.store.redis_scripts`), runs the
scripts that change them, and reads what a replica needs to start and to follow. `ReplicatedCache` is
the in-process side. The ``redis`` client is imported only when a store is made, so ``import bsc``
stays light.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from bsc.store.redis_scripts import CLEAR, DELETE, INIT, PUT, STATE, TOUCH

if TYPE_CHECKING:
    from bsc.cache import BinarySemanticCache
    from bsc.store.replica import ReplicatedCache

__all__ = ["RedisStore", "StoreUnavailableError", "redact_url"]

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_SCAN_COUNT = 10_000
# Events a replica reads in one go; small enough for one reply, large enough to catch up fast.
_READ_COUNT = 1000


class StoreUnavailableError(ConnectionError):
    """The shared store cannot be reached (Redis down, refused, timed out, or failing over)."""


@dataclass(frozen=True, slots=True)
class StoreState:
    """Where a replica starts: the cache's epoch (None if the cache does not exist in Redis), the seq and
    stream id of the last event, namespace numbers -> names, and how many entries there are."""

    epoch: str | None
    seq: int
    last_id: str
    namespaces: dict[str, str]
    entries: int

    @property
    def position(self) -> tuple[str | None, int, str]:
        """``(epoch, seq, last_id)``, as `RedisStore.position` returns it."""
        return self.epoch, self.seq, self.last_id


@dataclass(frozen=True, slots=True)
class PutResult:
    epoch: str
    seq: int
    stream_id: str
    uids: list[str]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (what may be logged or shown).

    Example:
        >>> redact_url("redis://user:secret@cache:6379/0")
        'redis://user:***@cache:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisStore:
    """The Redis side of a shared cache: entries, global LRU and TTL, and a stream of changes.

    Accepted URLs: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path``,
    ``redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db]`` (asks the sentinels
    for the current master) and ``redis+cluster://[user:password@]host:port`` (a Redis Cluster; the
    cache's keys share one hash tag so they live on one slot). Without a URL, ``BSC_REDIS_URL`` is read.
    The password is never logged or shown (`redact_url`).

    Args:
        url: where Redis is (see above).
        name: the cache's name in Redis: letters, digits and ``_.:-``, at most 100. Processes that use
            the same name share entries; every key is ``bsc:{name}:...``.
        fail_open: when Redis is unreachable, keep serving and storing locally (one warning; writes
            counted as lost) instead of raising `StoreUnavailableError`.
        stream_len: about how many change events Redis keeps (a put event carries its entries, so
            this bounds the stream's memory); a replica that falls further behind rebuilds from the
            entries.
        touch_interval: seconds between a process's batched updates of the global LRU order.
        timeout: seconds for connecting and for each command.
        client: an already made ``redis`` client to use instead of ``url`` (for custom setups).

    Raises:
        ValueError: a malformed name, URL or setting.

    Example:
        >>> from bsc import SemanticCache
        >>> store = RedisStore("redis://127.0.0.1:6379/0", name="support-bot")  # doctest: +SKIP
        >>> cache = SemanticCache(store=store)  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        name: str = "default",
        fail_open: bool = False,
        stream_len: int = 10_000,
        touch_interval: float = 1.0,
        timeout: float = 5.0,
        client: Any = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"name must be 1-100 letters, digits or '_.:-', got {name!r}")
        if not isinstance(stream_len, int) or stream_len < 100:
            raise ValueError(f"stream_len must be an integer >= 100, got {stream_len!r}")
        if not touch_interval > 0:
            raise ValueError(f"touch_interval must be a positive number of seconds, got {touch_interval!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        url = url if url is not None else os.environ.get("BSC_REDIS_URL")
        if client is None and not url:
            raise ValueError("a Redis URL is needed: pass url=... or set BSC_REDIS_URL")
        self.name = name
        self.fail_open = bool(fail_open)
        self.stream_len = stream_len
        self.touch_interval = float(touch_interval)
        self.timeout = float(timeout)
        self.url = redact_url(url) if url else "<client>"
        self._prefix = f"bsc:{{{name}}}:"
        self._keys = [self._prefix + k for k in ("meta", "ns", "nsn", "lru", "exp", "log", "ord", "st")]
        self._client = client if client is not None else _connect(url or "", timeout)
        self._put = self._client.register_script(PUT)
        self._delete = self._client.register_script(DELETE)
        self._clear = self._client.register_script(CLEAR)
        self._init = self._client.register_script(INIT)
        self._state = self._client.register_script(STATE)
        self._touch = self._client.register_script(TOUCH)

    def open(self, dim: int, *, model: str = "", **options: Any) -> ReplicatedCache:
        """A local replica of this shared cache (see `ReplicatedCache`); ``options`` as for
        `BinarySemanticCache`. ``model`` names the embedder, so caches of other models never mix.

        Raises:
            StoreUnavailableError: Redis is unreachable and ``fail_open`` is False.
            ValueError: the cache exists in Redis with other settings (dim, code_bits, seed,
                max_entries, ttl, model).
        """
        from bsc.store.replica import ReplicatedCache

        return ReplicatedCache(dim, store=self, model=model, **options)

    # ------------------------------------------------------------ errors
    @contextmanager
    def _calling(self) -> Iterator[None]:
        import redis.exceptions as rex

        try:
            yield
        except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
            # redis-py's messages name host and port, never the password.
            raise StoreUnavailableError(f"Redis at {self.url} is unreachable: {exc}") from None
        except rex.ResponseError as exc:
            message = str(exc)
            if "BSCCONFIG" in message:
                raise ValueError(
                    f"the shared cache {self.name!r} in Redis was made with other settings: "
                    f"{message.split('BSCCONFIG', 1)[1].strip()}"
                ) from None
            # Redis up but refusing work for now: failing over, out of memory (maxmemory with noeviction),
            # busy with a script, or unable to persist. redis-py turns some codes into their own classes
            # (dropping the code from the message); the others keep it at the message's start.
            refusing = (
                rex.OutOfMemoryError,
                rex.ReadOnlyError,
                rex.TryAgainError,
                rex.ClusterDownError,
                rex.MasterDownError,
            )
            codes = ("MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "OOM", "BUSY", "MISCONF")
            if isinstance(exc, refusing) or message.startswith(codes):
                raise StoreUnavailableError(f"Redis at {self.url} cannot serve writes now: {exc}") from None
            raise

    # ------------------------------------------------------------ writes
    def init(self, epoch: str, cfg: str) -> str:
        """Creates the cache in Redis if needed (pinning ``cfg``); returns its epoch."""
        with self._calling():
            return _text(self._init(keys=self._keys, args=[self._prefix, epoch, cfg]))

    def put(
        self,
        epoch: str,
        cfg: str,
        namespace: str,
        max_entries: int,
        entries: Sequence[tuple[float, bool, bytes]],
        eviction: str = "lru",
    ) -> PutResult:
        """Stores packed entries (deadline, admitted, blob) in one namespace, evicting expired entries
        and then, beyond ``max_entries``, the ones the ``eviction`` policy chooses, and appends one put
        event. ``admitted`` starts an entry visited (``diverse``)."""
        args: list[Any] = [
            self._prefix,
            epoch,
            cfg,
            repr(time.time()),
            self.stream_len,
            max_entries,
            namespace,
            eviction,
        ]
        for deadline, admitted, blob in entries:
            args += [repr(deadline), "1" if admitted else "0", blob]
        with self._calling():
            reply = self._put(keys=self._keys, args=args)
        uids = _text(reply[3])
        return PutResult(_text(reply[0]), int(reply[1]), _text(reply[2]), uids.split(",") if uids else [])

    def delete(self, uids: Sequence[str]) -> tuple[int, str, list[str]]:
        """Deletes entries; returns the event's seq (0 if none existed), its stream id and the uids
        removed."""
        with self._calling():
            reply = self._delete(keys=self._keys, args=[self._prefix, self.stream_len, *uids])
        removed = _text(reply[2])
        return int(reply[0]), _text(reply[1]), removed.split(",") if removed else []

    def clear(self, namespace: str | None) -> tuple[int, str]:
        """Clears one namespace or everything; returns the event's seq (0 if the cache does not exist)
        and its stream id."""
        args = [self._prefix, self.stream_len, "all" if namespace is None else "ns", namespace or ""]
        with self._calling():
            reply = self._clear(keys=self._keys, args=args)
        return int(reply[0]), _text(reply[1])

    def touch(self, uses: dict[str, float], eviction: str = "lru") -> None:
        """Records uses for the global eviction policy: ``lru`` moves entries up the order (only ever
        later); the others mark them visited or count the use. Entries gone stay gone."""
        if not uses:
            return
        with self._calling():
            if eviction == "lru":
                self._client.zadd(self._keys[3], uses, xx=True, gt=True)
            else:
                self._touch(keys=self._keys, args=[self._prefix, eviction, *uses])

    # ------------------------------------------------------------ reads
    def state(self) -> StoreState:
        with self._calling():
            epoch, seq, last_id, pairs, entries = self._state(keys=self._keys, args=[self._prefix])
        names = [_text(p) for p in pairs]
        return StoreState(
            None if epoch is None else _text(epoch),
            int(seq),
            _text(last_id),
            dict(zip(names[::2], names[1::2], strict=True)),
            int(entries),
        )

    def position(self) -> tuple[str | None, int, str]:
        """The cache's epoch (None when Redis holds no cache), the number of its last change and that
        change's stream id, in one round trip: for a replica with nothing to read, to check that Redis
        did not move under it."""
        with self._calling():
            pipe = self._client.pipeline(transaction=False)
            pipe.hmget(self._keys[0], ["epoch", "seq"])
            pipe.xrevrange(self._keys[5], count=1)
            (epoch, seq), last = pipe.execute()
        return (None if epoch is None else _text(epoch)), int(seq or 0), _text(last[0][0]) if last else "0-0"

    def scan(self, namespace_number: str) -> Iterator[list[tuple[str, bytes]]]:
        """The entries of one namespace in batches of (uid, packed entry); HSCAN semantics: an entry
        present throughout is returned (maybe twice), one added or removed meanwhile maybe not."""
        key = f"{self._prefix}e:{namespace_number}"
        cursor: int | bytes = 0
        while True:
            with self._calling():
                cursor, batch = self._client.hscan(key, cursor, count=_SCAN_COUNT)
            if batch:
                yield [(uid.decode(), blob) for uid, blob in batch.items()]
            if int(cursor) == 0:
                return

    def fetch(self, uids: Sequence[str]) -> dict[str, bytes]:
        """The packed entries of ``uids`` that still exist (one pipelined HMGET per namespace)."""
        by_namespace: dict[str, list[str]] = {}
        for uid in uids:
            by_namespace.setdefault(uid.split(":", 1)[0], []).append(uid)
        with self._calling():
            pipe = self._client.pipeline(transaction=False)
            for number, group in by_namespace.items():
                pipe.hmget(f"{self._prefix}e:{number}", group)
            replies = pipe.execute()
        found: dict[str, bytes] = {}
        for group, blobs in zip(by_namespace.values(), replies, strict=True):
            found.update((uid, blob) for uid, blob in zip(group, blobs, strict=True) if blob is not None)
        return found

    def read(self, after: str, *, block: float | None = None) -> list[tuple[str, dict[bytes, bytes]]]:
        """Events after stream id ``after``, waiting up to ``block`` seconds for the first one."""
        with self._calling():
            reply = self._client.xread(
                {self._keys[5]: after},
                count=_READ_COUNT,
                block=None if block is None else max(1, int(block * 1000)),
            )
        if not reply:
            return []
        return [(_text(sid), fields) for sid, fields in reply[0][1]]

    def entry_count(self) -> int:
        """Entries in Redis (the global LRU's size)."""
        with self._calling():
            return int(self._client.zcard(self._keys[3]))

    def dump(self, cache: BinarySemanticCache) -> set[tuple[str, str | bytes]]:
        """(namespace, response) of every entry in Redis, decoded for ``cache``'s layout (for checks)."""
        from bsc.store.codec import decode_entries

        out: set[tuple[str, str | bytes]] = set()
        for number, namespace in self.state().namespaces.items():
            for batch in self.scan(number):
                rows = decode_entries([b for _, b in batch], words=cache.code_bits // 64, dim=cache.dim)
                out.update((namespace, r) for r in rows.responses)
        return out

    def close(self) -> None:
        """Closes the client's connections."""
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStore(url={self.url!r}, name={self.name!r}, fail_open={self.fail_open})"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _connect(url: str, timeout: float) -> Any:
    """A ``redis`` client for ``url`` (plain, TLS, unix socket, Sentinel or Cluster)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One retry: a pooled connection may be dead after a restart while a fresh one works. More would
    # only delay noticing an outage (the replica keeps serving meanwhile).
    common: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        # A replica's XREAD blocks up to a second; the socket must outlast it.
        "socket_timeout": timeout + 2.0,
        "retry": Retry(NoBackoff(), 1),
    }
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return redis.Redis.from_url(url, **common)
    if scheme in ("redis+cluster", "rediss+cluster"):
        from redis.cluster import RedisCluster

        plain = urlunsplit(parts._replace(scheme=scheme.split("+")[0]))
        return RedisCluster.from_url(plain, socket_connect_timeout=timeout, socket_timeout=timeout + 2.0)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        from redis.sentinel import Sentinel

        hosts_part = parts.netloc.rsplit("@", 1)[-1]
        hosts = []
        for item in hosts_part.split(","):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sentinel address must be host:port, got {item!r} in {redact_url(url)!r}")
            hosts.append((host, int(port)))
        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError(f"sentinel URL must end in /master-name[/db], got {redact_url(url)!r}")
        auth: dict[str, Any] = {}
        if parts.password is not None:
            auth["password"] = unquote(parts.password)
        if parts.username:
            auth["username"] = unquote(parts.username)
        if scheme.startswith("rediss"):
            auth["ssl"] = True
        query = parse_qs(parts.query)
        sentinel_auth = auth if query.get("sentinel_auth", ["0"])[0] == "1" else {}
        sentinel_kwargs = {**sentinel_auth, "socket_timeout": timeout}
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **auth)  # type: ignore[no-untyped-call]
        db = int(path[1]) if len(path) == 2 else 0
        return sentinel.master_for(path[0], db=db, **common)  # type: ignore[no-untyped-call]
    raise ValueError(
        f"unsupported Redis URL scheme {parts.scheme!r} in {redact_url(url)!r}: expected redis://, "
        "rediss://, unix://, redis+sentinel:// or redis+cluster://"
    )

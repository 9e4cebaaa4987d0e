"""`ServeConfig`: every setting of `bsc serve`, from defaults, a TOML file, the environment and flags.

One frozen dataclass holds them so the app, the CLI and each uvicorn worker read the same values; a
worker gets its copy as JSON in an environment variable (`to_env` / `from_env`), because uvicorn starts
workers by importing the app, not by forking the CLI's objects.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bsc.snapshot import EVICTION_POLICIES

__all__ = ["DEFAULT_PRICES", "ENV_PREFIX", "ServeConfig"]

#: Environment variables ``BSC_SERVE_<FIELD>`` (upper case) set any field; flags win over them.
ENV_PREFIX = "BSC_SERVE_"
_WORKER_ENV = "BSC_SERVE_WORKER_CONFIG"

#: US dollars per million tokens (input, output) by model-name prefix; the longest matching prefix
#: wins. Used only to estimate what cache hits saved; override with ``prices`` (``--prices FILE``).
DEFAULT_PRICES: Mapping[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Settings of the caching proxy.

    Attributes:
        upstream: base URL of the OpenAI-compatible API, as a client's ``base_url`` would be
            (``https://api.openai.com/v1``, ``http://127.0.0.1:11434/v1``).
        host, port: where the proxy listens.
        prefix: the path clients call under (``/v1``); ``<prefix>/x`` goes to ``<upstream>/x``.
        workers: uvicorn worker processes (each holds its own in-memory cache unless ``redis_url``).
        threshold, max_entries, ttl: passed to `bsc.SemanticCache`.
        eviction: which entry a full cache drops, passed to `bsc.SemanticCache` (``"lru"``, ``"lfu"``,
            ``"sieve"`` or ``"diverse"``; README, "Workloads and eviction"). A snapshot loaded from
            ``path`` takes this policy; a shared cache must have been made with it.
        path: snapshot file, loaded at start and written every ``snapshot_interval`` seconds and at
            shutdown.
        redis_url: a shared store (needs ``bsc.store``) so several replicas share one cache; needs a
            ``secret`` shared by the replicas (unless ``shared_cache``), so a key is one tenant on all.
        redis_name: the shared cache's name in Redis; replicas with the same URL and name share it.
        shared_cache: all API keys share one namespace (default: each key is its own tenant).
        namespace_header: if set, a request carrying this header is cached in the namespace it names
            (shared by every key that names it) instead of its key's.
        secret: mixed into the hash of API keys (tenants); random per start when empty and not needed
            across restarts or replicas.
        upstream_api_key: sent upstream instead of the client's credentials (clients' keys still pick
            their tenant).
        connect_timeout, read_timeout: seconds, for upstream calls; a timeout answers 504.
        max_body_bytes: larger request bodies answer 413.
        cache_tool_results: cache conversations that contain tool results (bypassed by default: a
            tool's output is live data).
        replay_chunk_chars: about how many characters each replayed stream piece carries.
        prices: model-name prefix -> (input, output) dollars per million tokens, over `DEFAULT_PRICES`.
        dashboard: serve ``/dashboard`` and its JSON (they show cached prompts of every tenant).
        request_log: a JSONL file to append one line per request to (prompt, model, hit/miss, tenant
            hash; never a key): off when None. See `bsc.serve.request_log`; `bsc.workloads` replays it.
        log_level: uvicorn's log level.

    Raises:
        ValueError, TypeError: a setting of the wrong value or type (the message names it).

    Example:
        >>> ServeConfig(upstream="http://127.0.0.1:11434/v1", port=9000).upstream_base
        'http://127.0.0.1:11434/v1'
    """

    upstream: str = "https://api.openai.com/v1"
    host: str = "127.0.0.1"
    port: int = 8080
    prefix: str = "/v1"
    workers: int = 1
    threshold: float | None = None
    max_entries: int = 100_000
    eviction: str = "lru"
    ttl: float | None = None
    path: str | None = None
    snapshot_interval: float = 300.0
    redis_url: str | None = None
    redis_name: str = "default"
    shared_cache: bool = False
    namespace_header: str | None = None
    secret: str = ""
    upstream_api_key: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    max_body_bytes: int = 4 * 1024 * 1024
    cache_tool_results: bool = False
    replay_chunk_chars: int = 24
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    dashboard: bool = True
    request_log: str | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not isinstance(self.upstream, str) or not self.upstream.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http:// or https:// URL, got {self.upstream!r}")
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"prefix must start with '/' and not end with one, got {self.prefix!r}")
        for name in ("port", "workers", "max_entries", "max_body_bytes", "replay_chunk_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value <= 0 and not (name == "port" and value == 0):
                raise ValueError(f"{name} must be positive, got {value}")
        if not isinstance(self.eviction, str):
            raise TypeError(f"eviction must be a str, got {type(self.eviction).__name__}")
        if self.eviction not in EVICTION_POLICIES:
            raise ValueError(f"eviction must be one of {', '.join(EVICTION_POLICIES)}, got {self.eviction!r}")
        for name in ("snapshot_interval", "connect_timeout", "read_timeout", "ttl"):
            value = getattr(self, name)
            if value is None and name == "ttl":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if self.workers > 1 and self.path is not None:
            raise ValueError(
                "path with workers > 1: each worker holds its own cache and they would overwrite one "
                "snapshot; run one worker per snapshot, or share a cache with redis_url"
            )
        hashes_keys = self.namespace_header is not None or not self.shared_cache
        if self.redis_url is not None and not self.secret and hashes_keys:
            # Each replica would draw its own random tenant secret: a key would be another tenant on
            # every replica and nothing would be shared.
            raise ValueError(
                "redis_url needs a secret shared by every replica (set BSC_SERVE_SECRET to the same "
                "random value on each), so an API key is the same tenant whichever replica answers"
            )
        for model, price in self.prices.items():
            if not (isinstance(model, str) and len(price) == 2 and all(_is_price(p) for p in price)):
                raise ValueError(
                    f"prices must map a model prefix to [input, output] dollars per million tokens, "
                    f"got {model!r}: {price!r}"
                )

    @property
    def upstream_base(self) -> str:
        """``upstream`` without a trailing slash."""
        return self.upstream.rstrip("/")

    def price_of(self, model: str) -> tuple[float, float] | None:
        """(input, output) dollars per million tokens for ``model``: the longest matching prefix of the
        user's table, then of `DEFAULT_PRICES`; None if none matches.

        Example:
            >>> ServeConfig().price_of("gpt-4o-mini-2024-07-18")
            (0.15, 0.6)
        """
        for table in (self.prices, DEFAULT_PRICES):
            matches = [p for p in table if model.startswith(p)]
            if matches:
                return tuple(table[max(matches, key=len)])  # type: ignore[return-value]
        return None

    # ---------------------------------------------------------------- sources
    @classmethod
    def from_sources(
        cls,
        overrides: Mapping[str, Any],
        *,
        config_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ServeConfig:
        """Defaults, then the TOML ``config_file`` (a ``[serve]`` table or top-level keys), then
        ``BSC_SERVE_*`` environment variables, then ``overrides`` (flags; None values are skipped).

        Raises:
            ValueError: an unknown key, a value of the wrong form, or an unreadable config file.
            TypeError: a value of the wrong type.

        Example:
            >>> ServeConfig.from_sources({"port": 9000}, environ={"BSC_SERVE_SHARED_CACHE": "1"}).shared_cache
            True
        """
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_read_toml(Path(config_file)))
        env = os.environ if environ is None else environ
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and f.name != "prices":
                values[f.name] = _parse_env(f.name, raw)
            elif raw is not None:
                values[f.name] = json.loads(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown bsc serve setting(s) {unknown}; expected some of {sorted(known)}")
        if "prices" in values:
            values["prices"] = {str(k): tuple(v) for k, v in dict(values["prices"]).items()}
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that hands this config to uvicorn worker processes (see `from_env`)."""
        return {_WORKER_ENV: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls) -> ServeConfig:
        """The config a worker process was started with (set by `to_env`).

        Raises:
            RuntimeError: the process was not started by ``bsc serve``.
        """
        raw = os.environ.get(_WORKER_ENV)
        if raw is None:
            raise RuntimeError(f"{_WORKER_ENV} is not set: start workers with `bsc serve`")
        values = json.loads(raw)
        values["prices"] = {k: tuple(v) for k, v in values["prices"].items()}
        return cls(**values)


def _is_price(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the bsc serve config file {os.fspath(path)!r}: {exc}") from exc
    table = data.get("serve", data)
    if not isinstance(table, dict):
        raise ValueError(f"{os.fspath(path)!r}: [serve] must be a table")
    return {k.replace("-", "_"): v for k, v in table.items()}


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False}


def _parse_env(name: str, raw: str) -> Any:
    """An environment variable's text as the type of field ``name``."""
    default = ServeConfig.__dataclass_fields__[name].default
    if isinstance(default, bool):
        if raw.lower() not in _BOOL_WORDS:
            raise ValueError(f"{ENV_PREFIX}{name.upper()} must be true or false, got {raw!r}")
        return _BOOL_WORDS[raw.lower()]
    if name in ("threshold", "ttl") or isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a number, got {raw!r}") from None
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{name.upper()} must be an integer, got {raw!r}") from None
    return raw

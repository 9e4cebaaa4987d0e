"""The ASGI app of `bsc serve`: OpenAI-compatible routes in front of an upstream, answered from a
`bsc.SemanticCache` when they can be.

Per request: read the body (413 over the limit), parse it (400 when malformed), key it
(`bsc.serve.keys`), look it up, and either answer from the cache (JSON, or a replayed stream) or forward
it upstream with `httpx` and store the answer once it is complete. The cache is never a reason for a
request to fail: a cache error is logged, counted, and the request goes upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bsc import SemanticCache, TextHit
from bsc.embedders import Embedder
from bsc.serve.config import ServeConfig
from bsc.serve.keys import BadRequest, CacheKey, Endpoint, cache_key, parse_body, tenant_of
from bsc.serve.metrics import ProxyMetrics, RecordingGuard
from bsc.serve.request_log import RequestLog
from bsc.serve.streaming import SSEDecoder, StreamRecorder, recorder_for, replay

__all__ = ["create_app", "create_app_from_env"]

logger = logging.getLogger(__name__)

# Not forwarded in either direction: they describe one hop, and bodies are re-framed (and decoded) here.
_HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"}
    | {"proxy-authorization", "proxy-connection", "accept-encoding", "content-encoding"}
)
_OWN_HEADERS = frozenset({"x-bsc-cache", "x-bsc-ttl", "x-bsc-similarity"})
_RESPONSE_DROP = _HOP_HEADERS | {"date", "server"}
_SUFFIXES: tuple[tuple[str, Endpoint], ...] = (
    ("/chat/completions", "chat"),
    ("/completions", "completions"),
    ("/responses", "responses"),
)
_JSON = "application/json"
#: How soon after sending a request a failed read means a stale pooled connection (the upstream had
#: closed it as idle; that failure comes within a round trip, at most a few hundred ms across the
#: world) rather than a call the upstream dropped while working on it, which must not be resent.
_STALE_CONNECTION_SECONDS = 0.5


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Control:
    """What the client's headers ask of the cache."""

    read: bool = True
    write: bool = True
    ttl: float | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> _Control:
        if headers.get("x-bsc-cache", "").strip().lower() == "bypass":
            return cls(read=False, write=False)
        directives = {d.strip().lower() for d in headers.get("cache-control", "").split(",")}
        ttl: float | None = None
        raw = headers.get("x-bsc-ttl")
        if raw is not None:
            try:
                ttl = float(raw)
            except ValueError:
                raise BadRequest(f"x-bsc-ttl must be a number of seconds, got {raw!r}", "x-bsc-ttl") from None
            if not (0 < ttl < float("inf")):
                raise BadRequest(f"x-bsc-ttl must be a positive number of seconds, got {raw!r}", "x-bsc-ttl")
        return cls(read="no-cache" not in directives, write="no-store" not in directives, ttl=ttl)


def error_response(status: int, message: str, kind: str, code: str, param: str | None = None) -> Response:
    """An OpenAI-style error body (``{"error": {"message", "type", "param", "code"}}``)."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(json.dumps(body), status, media_type=_JSON, headers={"x-bsc-cache": "bypass"})


class _Proxy:
    """The state of one app: its config, cache, upstream client and metrics (one owner for each)."""

    def __init__(self, config: ServeConfig, cache: SemanticCache | None, embedder: Embedder | None) -> None:
        self.config = config
        self.secret = _tenant_secret(config)
        self.metrics = ProxyMetrics()
        self.owns_cache = cache is None
        self.cache = cache if cache is not None else self._build_cache(embedder)
        self.metrics.watch(self.cache)
        self.client: httpx.AsyncClient | None = None
        self.ready = False
        self.request_log = RequestLog(config.request_log) if config.request_log is not None else None

    def _build_cache(self, embedder: Embedder | None) -> SemanticCache:
        c = self.config
        options: dict[str, Any] = {"max_entries": c.max_entries, "eviction": c.eviction}
        if c.threshold is not None:
            options["threshold"] = c.threshold
        if c.ttl is not None:
            options["ttl"] = c.ttl
        if c.redis_url is not None:
            from bsc.store import RedisStore

            # Fail open: with Redis down the replica keeps answering from what it holds and stores
            # locally (counted in bsc_shared_store_lost_writes_total); requests never wait on Redis.
            options["store"] = RedisStore(c.redis_url, name=c.redis_name, fail_open=True)
        return SemanticCache(embedder, guard=RecordingGuard(self.metrics.rejected), path=c.path, **options)

    # ---------------------------------------------------------------- lifecycle
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        c = self.config
        timeout = httpx.Timeout(c.read_timeout, connect=c.connect_timeout)
        # Idle connections are dropped before common servers' keep-alive timeouts (uvicorn's is 5 s).
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=3.0)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            self.client = client
            # One embedding at start so the first request does not pay for loading the model; an
            # embedder that fails here (a remote one that is down) only costs hits, as in requests.
            try:
                await self.cache.embedder.aembed(["warm up"])
            except Exception:
                logger.exception("the embedder failed at start; requests go upstream until it works")
            snapshots = asyncio.create_task(self._snapshot_loop()) if c.path is not None else None
            self.ready = True
            try:
                yield
            finally:
                self.ready = False
                if snapshots is not None:
                    snapshots.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await snapshots
                    await self._snapshot()
                # A shared cache's replica follows Redis on a thread: stop it with the app.
                close = getattr(self.cache.cache, "close", None)
                if self.owns_cache and close is not None:
                    await asyncio.to_thread(close)
                if self.request_log is not None:
                    self.request_log.close()
                self.client = None

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshot_interval)
            await self._snapshot()

    async def _snapshot(self) -> None:
        try:
            await asyncio.to_thread(self.cache.save)
            logger.info("cache snapshot written to %s (%d entries)", self.config.path, len(self.cache))
        except Exception:
            logger.exception("cache snapshot to %s failed", self.config.path)

    # ---------------------------------------------------------------- own endpoints
    async def health(self, request: Request) -> Response:
        return Response(json.dumps({"status": "ok"}), media_type=_JSON)

    async def ready_check(self, request: Request) -> Response:
        if not self.ready:
            return Response(json.dumps({"status": "starting"}), 503, media_type=_JSON)
        return Response(json.dumps({"status": "ready", "entries": len(self.cache)}), media_type=_JSON)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def dashboard_page(self, request: Request) -> Response:
        page = importlib.resources.files("bsc.serve").joinpath("dashboard.html").read_bytes()
        return Response(page, media_type="text/html; charset=utf-8")

    async def dashboard_data(self, request: Request) -> Response:
        return Response(json.dumps(self.metrics.dashboard()), media_type=_JSON)

    # ---------------------------------------------------------------- proxying
    async def proxy(self, request: Request) -> Response:
        path = request.url.path
        prefix = self.config.prefix
        if not (path == prefix or path.startswith(prefix + "/")):
            return error_response(
                404,
                f"{path} is not an API path of this proxy (they start with {prefix}/)",
                "invalid_request_error",
                "unknown_url",
            )
        route = path[len(prefix) :] + (f"?{request.url.query}" if request.url.query else "")
        endpoint = next((kind for suffix, kind in _SUFFIXES if path.endswith(suffix)), None)
        if request.method != "POST" or endpoint is None:
            return await self._pass_through(request, route)
        return await self._cacheable(request, route, endpoint)

    async def _cacheable(self, request: Request, route: str, endpoint: Endpoint) -> Response:
        started = time.perf_counter()
        try:
            raw = await _read_body(request, self.config.max_body_bytes)
        except _TooLarge:
            self.metrics.count(endpoint, "error")
            return self._too_large()
        try:
            body = parse_body(raw)
            control = _Control.of(request.headers)
            tenant = tenant_of(
                request.headers,
                self.secret,
                shared=self.config.shared_cache,
                namespace_header=self.config.namespace_header,
            )
            key = self._key(endpoint, body, route, tenant)
        except BadRequest as exc:
            self.metrics.count(endpoint, "error")
            return error_response(400, str(exc), "invalid_request_error", "invalid_request", exc.param)
        stream = bool(body.get("stream"))
        log = self.request_log
        if isinstance(key, str) or not (control.read or control.write):
            reason = key if isinstance(key, str) else "client"
            if log is not None:
                log.write(endpoint, body, None, "bypass", tenant=tenant, reason=reason)
            return await self._forward(request, route, endpoint, raw, body, stream, None, control, reason)
        if control.read:
            found = await self._lookup(key)
            if found is not None:
                if log is not None:
                    hit, answer = found
                    usage = answer.get("usage") or {}
                    tokens = _int(usage.get("completion_tokens", usage.get("output_tokens")))
                    log.write(
                        endpoint,
                        body,
                        key,
                        "hit",
                        tenant=tenant,
                        similarity=hit.similarity,
                        output_tokens=tokens,
                    )
                return self._answer_hit(endpoint, found, body, stream, started)
        if log is not None:
            log.write(endpoint, body, key, "miss", tenant=tenant)
        return await self._forward(request, route, endpoint, raw, body, stream, key, control, None)

    def _key(self, endpoint: Endpoint, body: dict[str, Any], route: str, tenant: str) -> CacheKey | str:
        """`cache_key`, failing open: a request it cannot key for a reason other than a bad field (a
        shape it does not expect) is forwarded uncached, not refused."""
        try:
            return cache_key(
                endpoint, body, route=route, tenant=tenant, cache_tool_results=self.config.cache_tool_results
            )
        except BadRequest:
            raise
        except Exception as exc:  # a cache failure never fails the user's call
            logger.warning("cannot derive a cache key (%s: %s); forwarding uncached", type(exc).__name__, exc)
            return "unkeyable"

    def _too_large(self) -> Response:
        limit = self.config.max_body_bytes
        return error_response(
            413,
            f"the request body is larger than the proxy's limit of {limit} bytes",
            "invalid_request_error",
            "request_too_large",
        )

    async def _lookup(self, key: CacheKey) -> tuple[TextHit, dict[str, Any]] | None:
        """The hit and its stored answer, or None (a miss, an expired entry, or a cache that failed)."""
        try:
            hit = await self.cache.alookup(key.text, namespace=key.namespace)
            if hit is None:
                return None
            expires = (hit.metadata or {}).get("expires_at")
            if isinstance(expires, int | float) and expires <= time.time():
                self.cache.cache.delete(hit.id)  # its per-request TTL ran out
                return None
            answer = json.loads(hit.response)["body"]
            if not isinstance(answer, dict):
                raise TypeError(f"a cached answer must be a JSON object, got {type(answer).__name__}")
        except Exception:
            logger.exception("cache lookup failed; forwarding upstream")
            self.metrics.cache_errors.labels("lookup").inc()
            return None
        return hit, answer

    def _answer_hit(
        self,
        endpoint: Endpoint,
        found: tuple[TextHit, dict[str, Any]],
        request_body: dict[str, Any],
        stream: bool,
        started: float,
    ) -> Response:
        hit, answer = found
        self._count_savings(hit.prompt, answer)
        headers = {"x-bsc-cache": "hit", "x-bsc-similarity": f"{min(hit.similarity, 1.0):.4f}"}
        elapsed = time.perf_counter() - started
        headers["server-timing"] = f'bsc;desc="cache hit";dur={elapsed * 1000:.3f}'
        self.metrics.hit_latency.labels(endpoint).observe(elapsed)
        self.metrics.count(endpoint, "hit")
        if not stream:
            # backslashreplace: a lone surrogate the answer carried (valid JSON) goes out as its JSON escape.
            body = json.dumps(answer, ensure_ascii=False).encode("utf-8", "backslashreplace")
            return Response(body, media_type=_JSON, headers=headers)
        options = request_body.get("stream_options") or {}
        events = replay(
            endpoint,
            answer,
            include_usage=bool(options.get("include_usage")),
            size=self.config.replay_chunk_chars,
        )
        return StreamingResponse(_iterate(events), media_type="text/event-stream", headers=headers)

    def _count_savings(self, prompt: str | None, answer: dict[str, Any]) -> None:
        usage = answer.get("usage") or {}
        prompt_tokens = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion_tokens = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        model = answer.get("model")
        price = self.config.price_of(model) if isinstance(model, str) else None
        dollars = None if price is None else (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
        self.metrics.saved(prompt, prompt_tokens, completion_tokens, dollars)

    async def _store(
        self, key: CacheKey, endpoint: Endpoint, answer: dict[str, Any], control: _Control
    ) -> None:
        metadata = None if control.ttl is None else {"expires_at": time.time() + control.ttl}
        try:
            await self.cache.aupdate(
                key.text,
                json.dumps({"endpoint": endpoint, "body": answer}),
                namespace=key.namespace,
                metadata=metadata,
            )
        except Exception:
            logger.exception("storing an answer in the cache failed; it was served anyway")
            self.metrics.cache_errors.labels("store").inc()

    def _upstream_headers(self, request: Request) -> dict[str, str]:
        headers = {
            k: v for k, v in request.headers.items() if k not in _HOP_HEADERS and k not in _OWN_HEADERS
        }
        if self.config.upstream_api_key is not None:
            headers.pop("api-key", None)
            headers["authorization"] = f"Bearer {self.config.upstream_api_key}"
        return headers

    async def _open(
        self, request: Request, route: str, endpoint: str, content: bytes
    ) -> httpx.Response | Response:
        """Upstream's response (headers read, body not yet), or the 502/504 to send instead."""
        assert self.client is not None
        url = self.config.upstream_base + route
        started = time.perf_counter()
        build = self.client.build_request
        try:
            try:
                upstream = await self.client.send(
                    build(request.method, url, headers=self._upstream_headers(request), content=content),
                    stream=True,
                )
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A pooled connection the upstream closed as idle just as it was reused fails at once: the
                # request never reached it, so it is sent once more on a fresh connection. A call dropped
                # later may have run (and been billed): it is not sent twice.
                if time.perf_counter() - started > _STALE_CONNECTION_SECONDS:
                    raise
                upstream = await self.client.send(
                    build(request.method, url, headers=self._upstream_headers(request), content=content),
                    stream=True,
                )
        except httpx.TimeoutException:
            self.metrics.count(endpoint, "error")
            return error_response(
                504,
                f"the upstream API did not answer within the proxy's timeout ({url})",
                "upstream_error",
                "upstream_timeout",
            )
        except httpx.HTTPError as exc:
            self.metrics.count(endpoint, "error")
            return error_response(
                502,
                f"cannot reach the upstream API at {url}: {type(exc).__name__}",
                "upstream_error",
                "upstream_unreachable",
            )
        self.metrics.upstream_latency.labels(endpoint).observe(time.perf_counter() - started)
        return upstream

    async def _forward(
        self,
        request: Request,
        route: str,
        endpoint: Endpoint,
        raw: bytes,
        body: dict[str, Any],
        stream: bool,
        key: CacheKey | None,
        control: _Control,
        bypass_reason: str | None,
    ) -> Response:
        record = key is not None and control.write
        content = raw
        asked_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if record and stream and endpoint != "responses" and not asked_usage:
            # Ask for usage so a hit can count the tokens it saved; the extra chunk is not forwarded.
            options = {**(body.get("stream_options") or {}), "include_usage": True}
            content = json.dumps({**body, "stream_options": options}).encode()
        upstream = await self._open(request, route, endpoint, content)
        if isinstance(upstream, Response):
            return upstream
        outcome = "bypass" if bypass_reason is not None else "miss"
        headers = _response_headers(upstream, outcome)
        is_sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
        if upstream.status_code >= 400 or not is_sse:
            try:
                data = await upstream.aread()
            except httpx.HTTPError:
                self.metrics.count(endpoint, "error")
                self.metrics.stream_interruptions.inc()
                return error_response(
                    502,
                    "the upstream API closed the connection mid-response",
                    "upstream_error",
                    "upstream_dropped",
                )
            finally:
                await upstream.aclose()
            if upstream.status_code >= 400:
                self.metrics.count(endpoint, "error")
                return Response(data, upstream.status_code, headers=headers)
            self.metrics.count(endpoint, outcome, reason=bypass_reason)
            if record and key is not None:
                answer = _json_object(data)
                if answer is not None:
                    await self._store(key, endpoint, answer, control)
            return Response(data, upstream.status_code, headers=headers)
        self.metrics.count(endpoint, outcome, reason=bypass_reason)
        recorder = recorder_for(endpoint) if record else None
        events = self._relay(upstream, endpoint, key, control, recorder, drop_usage=not asked_usage)
        return StreamingResponse(events, upstream.status_code, headers=headers)

    async def _relay(
        self,
        upstream: httpx.Response,
        endpoint: Endpoint,
        key: CacheKey | None,
        control: _Control,
        recorder: StreamRecorder | None,
        *,
        drop_usage: bool,
    ) -> AsyncIterator[bytes]:
        """Upstream's events as they arrive. A stream that finished normally is stored before its closing
        event is forwarded, so a client that has seen the end of a miss finds it cached."""
        decoder = SSEDecoder()
        stored = False
        recording = recorder is not None
        try:
            async for chunk in upstream.aiter_bytes():
                if recorder is None:
                    yield chunk
                    continue
                for event in decoder.feed(chunk):
                    if event.data is None:  # a comment (a keep-alive) or a data-less event: no answer in it
                        yield event.raw
                        continue
                    data = _event_data(event.data)
                    recording = recording and self._record(recorder, data)
                    if drop_usage and recorder.is_usage_only(data):
                        continue
                    if recording and recorder.finished and not stored and key is not None:
                        stored = True
                        await self._store_recorded(recorder, key, endpoint, control)
                    yield event.raw
        except httpx.HTTPError as exc:
            self.metrics.stream_interruptions.inc()
            logger.warning("upstream stream ended early (%s); nothing stored", type(exc).__name__)
            message = "the upstream API stream was interrupted before it finished"
            code = "upstream_timeout" if isinstance(exc, httpx.TimeoutException) else "upstream_dropped"
            error = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
            yield f"data: {json.dumps(error)}\n\n".encode()
            return
        finally:
            await upstream.aclose()
        if recorder is not None and recording and not stored and key is not None:
            if decoder.pending.strip():  # a last event without its blank line
                last = decoder.feed(b"\n\n")[0].data
                if last is not None and not self._record(recorder, _event_data(last)):
                    return
            await self._store_recorded(recorder, key, endpoint, control)

    @staticmethod
    def _record(recorder: StreamRecorder, data: Any) -> bool:
        """Feeds one event to the recorder; False, after a warning, when the recorder fails on it (an
        answer shape it does not know): the stream is still relayed, and nothing of it is stored."""
        try:
            recorder.add(data)
        except Exception as exc:  # a cache failure never fails the user's call
            logger.warning(
                "cannot record an upstream stream event (%s: %s); nothing stored", type(exc).__name__, exc
            )
            return False
        return True

    async def _store_recorded(
        self, recorder: StreamRecorder, key: CacheKey, endpoint: Endpoint, control: _Control
    ) -> None:
        answer = recorder.result()
        if answer is None:
            self.metrics.stream_interruptions.inc()
            logger.info("upstream stream did not finish normally; nothing stored")
        else:
            await self._store(key, endpoint, answer, control)

    async def _pass_through(self, request: Request, route: str) -> Response:
        try:
            raw = await _read_body(request, self.config.max_body_bytes)
        except _TooLarge:
            self.metrics.count("other", "error")
            return self._too_large()
        upstream = await self._open(request, route, "other", raw)
        if isinstance(upstream, Response):
            return upstream
        self.metrics.count("other", "bypass" if upstream.status_code < 400 else "error")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_bytes():
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(body(), upstream.status_code, headers=_response_headers(upstream, "bypass"))


async def _iterate(chunks: Any) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _response_headers(upstream: httpx.Response, outcome: str) -> dict[str, str]:
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROP}
    headers["x-bsc-cache"] = outcome
    return headers


def _event_data(data: str | None) -> Any:
    if data is None or data == "[DONE]":
        return data
    try:
        return json.loads(data)
    except ValueError:
        return None


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    # A Responses API object always has "error" (null when it succeeded) and a status; a chat or
    # completions object has neither.
    if not isinstance(value, dict) or value.get("error") is not None:
        return None
    return value if value.get("status", "completed") == "completed" else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        parts.append(chunk)
    return b"".join(parts)


def _tenant_secret(config: ServeConfig) -> bytes:
    """The key of the tenant hash. Without a configured secret, a snapshot keeps its own beside it
    (``<path>.secret``, mode 0600) so tenants find their entries after a restart; with neither, a random
    one per start."""
    if config.secret:
        return hashlib.blake2b(config.secret.encode()).digest()
    if config.path is None:
        return secrets.token_bytes(32)
    secret_path = config.path + ".secret"
    try:
        with open(secret_path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        value = secrets.token_bytes(32)
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(value)
        return value


def create_app(
    config: ServeConfig, *, cache: SemanticCache | None = None, embedder: Embedder | None = None
) -> Starlette:
    """The proxy as an ASGI app.

    Args:
        config: the settings.
        cache: use this cache instead of building one from ``config`` (tests, embedding in an app).
        embedder: the embedder of the cache built from ``config``; None is bsc's default local model.

    Raises:
        ValueError: ``redis_url`` without the shared store, or a snapshot that does not match.

    Example:
        >>> import uvicorn  # doctest: +SKIP
        >>> uvicorn.run(create_app(ServeConfig(upstream="http://127.0.0.1:11434/v1")))  # doctest: +SKIP
    """
    proxy = _Proxy(config, cache, embedder)
    routes = [
        Route("/health", proxy.health, methods=["GET"]),
        Route("/ready", proxy.ready_check, methods=["GET"]),
        Route("/metrics", proxy.metrics_endpoint, methods=["GET"]),
    ]
    if config.dashboard:
        routes += [
            Route("/dashboard", proxy.dashboard_page, methods=["GET"]),
            Route("/dashboard/data", proxy.dashboard_data, methods=["GET"]),
        ]
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    routes.append(Route("/{path:path}", proxy.proxy, methods=methods))
    app = Starlette(routes=routes, lifespan=proxy.lifespan)
    app.state.proxy = proxy
    return app


def create_app_from_env() -> Starlette:
    """The app of a uvicorn worker process started by ``bsc serve --workers N``."""
    return create_app(ServeConfig.from_env())

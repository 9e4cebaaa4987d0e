"""`RequestLog`: the proxy's opt-in request log, one JSON object a line (``request_log`` / ``--request-log``).

Every request that reaches the cache's decision (a chat, completions or responses call whose body parsed)
appends one line::

    {"timestamp": 1764630000.25, "endpoint": "chat", "model": "gpt-4o-mini",
     "messages": [{"role": "user", "content": "What is the capital of France?"}],
     "cache": "hit", "similarity": 0.9731, "tenant": "key-3f0c...", "partition": "serve:key-3f0c...:9a1e...",
     "text": "What is the capital of France?", "output_tokens": 12}

- ``cache``: ``hit``, ``miss`` (sent upstream and stored when it succeeds) or ``bypass`` (not cacheable,
  with ``reason``; also a client's ``Cache-Control: no-cache, no-store``);
- the request as the client sent it: ``messages`` (chat), ``prompt`` (completions), ``input`` and
  ``instructions`` (responses); ``model`` when given;
- ``tenant``: the keyed hash the cache partitions by (`bsc.serve.keys.tenant_of`), never the API key;
  ``partition`` and ``text``: the cache key (the exact-match namespace and the text compared by meaning),
  which `bsc.workloads.read_proxy_log` turns into a replayable stream;
- ``similarity`` and ``output_tokens`` (from the cached answer's usage) on a hit.

No header is written: not the API key, not the upstream key, not cookies. The prompts are the users'
data: the file is created readable by its owner only (0600). A malformed request (answered 400) and a body
over the size limit (413) are not logged. Workers of ``bsc serve --workers N`` append to one file; each
line is one ``write`` on a file opened with ``O_APPEND``, so on a local file system (Linux) lines do not
interleave.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from bsc.serve.keys import CacheKey, Endpoint

__all__ = ["RequestLog"]

logger = logging.getLogger(__name__)

# What of each endpoint's body is the request itself (the rest are parameters, hashed into ``partition``).
_REQUEST_FIELDS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "completions": ("prompt",),
    "responses": ("input", "instructions"),
}


class RequestLog:
    """Appends a line per request to a JSONL file; a failing write is logged once and never fails a request.

    Args:
        path: the file (created 0600 if missing, appended to otherwise).

    Raises:
        OSError: the file cannot be opened (at start, so a wrong path is seen at once).

    Example:
        >>> log = RequestLog("requests.jsonl")  # doctest: +SKIP
        >>> log.write("chat", body, key, "miss", tenant="key-...")  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()
        self._failed = False

    def write(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        key: CacheKey | None,
        outcome: str,
        *,
        tenant: str,
        reason: str | None = None,
        similarity: float | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Appends one request: its body's request fields, the cache's decision and the cache key."""
        row: dict[str, Any] = {"timestamp": time.time(), "endpoint": endpoint}
        if isinstance(body.get("model"), str):
            row["model"] = body["model"]
        row.update({f: body[f] for f in _REQUEST_FIELDS[endpoint] if f in body})
        row["cache"] = outcome
        if reason is not None:
            row["reason"] = reason
        if similarity is not None:
            row["similarity"] = round(min(similarity, 1.0), 4)
        row["tenant"] = tenant
        if key is not None:
            row["partition"], row["text"] = key.namespace, key.text
        if output_tokens:
            row["output_tokens"] = output_tokens
        # backslashreplace: a lone surrogate (valid in JSON, not in UTF-8) is written as its JSON escape.
        text = json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"
        line = text.encode("utf-8", "backslashreplace")
        try:
            with self._lock:
                os.write(self._fd, line)
        except OSError as exc:
            if not self._failed:  # once, not once per request
                self._failed = True
                logger.warning(
                    "cannot append to the request log %s: %s; requests are served anyway", self.path, exc
                )

    def close(self) -> None:
        """Closes the file."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

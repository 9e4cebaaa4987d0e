"""``bsc serve``: run the caching proxy under uvicorn.

Settings come from defaults, then ``--config FILE`` (TOML), then ``BSC_SERVE_*`` environment variables,
then flags. Secrets (``BSC_SERVE_SECRET``, ``BSC_SERVE_UPSTREAM_API_KEY``) have no flag, so they never
show in a process list.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import sys
from typing import Any

import uvicorn

from bsc.serve.app import create_app
from bsc.serve.config import ServeConfig
from bsc.snapshot import EVICTION_POLICIES

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bsc serve``."""
    add = parser.add_argument
    add("--config", metavar="FILE", help="TOML file with the settings below (a [serve] table)")
    add("--upstream", metavar="URL", help="base URL of the OpenAI-compatible API (default: OpenAI's /v1)")
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, help="port to listen on (default 8080)")
    add("--prefix", help="path clients call under, mapped onto the upstream URL (default /v1)")
    add("--workers", type=int, help="uvicorn worker processes, each with its own cache (default 1)")
    add("--threshold", type=float, help="minimum cosine similarity of two questions for a hit")
    add("--max-entries", type=int, help="cache capacity (default 100000; beyond it --eviction chooses)")
    add(
        "--eviction",
        choices=EVICTION_POLICIES,
        help="which entry a full cache drops (default lru; see the README, 'Workloads and eviction')",
    )
    add("--ttl", type=float, help="seconds an entry lives (default: no expiry)")
    add("--path", metavar="FILE", help="snapshot file: loaded at start, written periodically and at shutdown")
    add("--snapshot-interval", type=float, metavar="SECONDS", help="seconds between snapshots (default 300)")
    add("--redis", dest="redis_url", metavar="URL", help="share one cache between replicas (needs bsc.store)")
    add("--redis-name", metavar="NAME", help="the shared cache's name in Redis (default 'default')")
    add("--shared-cache", action="store_const", const=True, help="all API keys share one cache namespace")
    add("--namespace-header", metavar="NAME", help="header naming a namespace to share across keys")
    add("--connect-timeout", type=float, metavar="SECONDS", help="upstream connect timeout (default 10)")
    add("--read-timeout", type=float, metavar="SECONDS", help="upstream read timeout (default 600)")
    add("--max-body-bytes", type=int, help="larger request bodies answer 413 (default 4 MiB)")
    add(
        "--cache-tool-results", action="store_const", const=True, help="cache conversations with tool results"
    )
    add("--prices", metavar="FILE", help='JSON {"model-prefix": [input, output] $ per 1M tokens}')
    add("--request-log", metavar="FILE", help="append one JSON line per request here (prompts; never keys)")
    add("--no-dashboard", dest="dashboard", action="store_const", const=False, help="disable /dashboard")
    add("--log-level", choices=["critical", "error", "warning", "info", "debug"], help="default info")


def run(args: argparse.Namespace) -> int:
    """Starts the proxy; returns the exit status (2 for a bad setting)."""
    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k not in ("command", "config", "prices") and v is not None
    }
    try:
        if args.prices is not None:
            with open(args.prices, encoding="utf-8") as f:
                overrides["prices"] = {k: tuple(v) for k, v in json.load(f).items()}
        config = ServeConfig.from_sources(overrides, config_file=args.config)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        return _fail(exc)
    logging.basicConfig(level=config.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if config.workers == 1:
        try:
            app = create_app(config)
        except (OSError, ValueError, TypeError) as exc:
            return _fail(exc)
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)
        return 0
    # Workers are separate processes that import the app: they get the config (and one tenant secret,
    # so a key is the same tenant whichever worker answers) through the environment.
    if not config.secret:
        config = dataclasses.replace(config, secret=secrets.token_hex(32))
    os.environ.update(config.to_env())
    uvicorn.run(
        "bsc.serve.app:create_app_from_env",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        log_level=config.log_level,
    )
    return 0


def _fail(exc: Exception) -> int:
    sys.stderr.write(f"bsc serve: {exc}\n")
    return 2

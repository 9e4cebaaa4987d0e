"""The ``bsc`` command line.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int`` and is
imported only when chosen, so ``bsc --help`` stays fast and a subcommand's optional dependencies are
needed only by that subcommand. Add one by adding a line to ``_SUBCOMMANDS``.

A user's mistake (a bad option value, a missing or malformed file, a missing optional package) ends in
one line on stderr, ``bsc <command>: error: <what was wrong>``, and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

__all__ = ["main"]

# name -> (module, one-line help, what to install if the module's imports fail)
_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    # The demo ships with the LangChain integration (bsc itself imports no framework).
    "demo": (
        "langchain_bsc.demo",
        "replay a prompt stream through a simulated LangChain chat model, without and with the cache",
        'pip install "./integrations/langchain_bsc[demo]" (from a bsc checkout)',
    ),
    "replay": (
        "bsc.workloads.cli",
        "replay a request log or a generated workload through the cache and report what it saves",
        'pip install "bsc-cache[replay]"',
    ),
    "calibrate": (
        "bsc.calibrate.cli",
        "measure on your own prompts and embedder what binary codes cost and which threshold to use",
        'pip install "bsc-cache[calibrate]"',
    ),
    "serve": (
        "bsc.serve.cli",
        "run an OpenAI-compatible caching proxy in front of an LLM API",
        'pip install ".[serve]" (from a bsc checkout)',
    ),
    "info": ("bsc.snapshot_info", "show what a cache snapshot holds and check its checksums", ""),
}

#: Exit status of a command the user got wrong (argparse's own).
USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    try:
        return version("bsc-cache")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _missing_package(exc: ImportError, install: str) -> str:
    hint = f": {install}" if install else ""
    missing = exc.name.split(".")[0] if exc.name else str(exc)
    return f"needs {missing}, which is not installed{hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bsc`` command; returns the exit status (2 for a usage or input error).

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        bsc 0.1.0
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="bsc", description="bsc: a semantic cache for LLM calls.")
    parser.add_argument("--version", action="version", version=f"bsc {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subparsers = {
        name: commands.add_parser(name, help=help_text, description=help_text)
        for name, (_, help_text, _) in _SUBCOMMANDS.items()
    }
    # Only the chosen subcommand's module is imported (for its options, then to run it).
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    module = None
    if chosen in _SUBCOMMANDS:
        module_name, _, install = _SUBCOMMANDS[chosen]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            message = _missing_package(exc, install)
            if {"-h", "--help"} & set(args_list):
                # Help still answers: what the command does, and what it needs.
                print(f"{subparsers[chosen].format_usage().strip()}\n\n{_SUBCOMMANDS[chosen][1]}.")
                print(f"It {message}.")
                return 0
            return _fail(subparsers[chosen].prog, message)
        module.add_arguments(subparsers[chosen])
    args = parser.parse_args(args_list)
    assert module is not None  # parse_args exits on a missing or unknown command
    prog = subparsers[args.command].prog
    try:
        status: int = module.run(args)
    except BrokenPipeError:  # `bsc info FILE | head`: the reader left, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ImportError as exc:  # an optional package the command imports only when it runs
        return _fail(prog, _missing_package(exc, _SUBCOMMANDS[args.command][2]))
    except (OSError, ValueError) as exc:  # a missing or unreadable file, bad content (CacheFormatError)
        return _fail(prog, _describe(exc))
    return status


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def _describe(exc: BaseException) -> str:
    """One line for an error the user can fix: the message, with the file name an OSError carries."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())

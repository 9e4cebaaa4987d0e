"""The ``bsc`` command line.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int`` and is
imported only when chosen, so ``bsc --help`` stays fast and a subcommand's optional dependencies are
needed only by that subcommand. Add one by adding a line to ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# name -> (module, one-line help, what to install if the module's imports fail)
_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    # The demo ships with the LangChain integration (bsc itself imports no framework).
    "demo": (
        "langchain_bsc.demo",
        "replay a prompt stream through a simulated LangChain chat model, without and with the cache",
        'pip install "./integrations/langchain_bsc[demo]" (from a bsc checkout)',
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
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bsc`` command; returns the exit status.

    Example:
        >>> main(["--help"])  # doctest: +SKIP
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="bsc", description="bsc: a semantic cache for LLM calls.")
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
            # One line, no traceback and no usage text: the only thing to do is install something.
            missing = exc.name or str(exc)
            print(f"bsc {chosen}: needs {missing}, which is not installed: {install}", file=sys.stderr)
            return 2
        module.add_arguments(subparsers[chosen])
    args = parser.parse_args(args_list)
    assert module is not None  # parse_args exits on a missing or unknown command
    status: int = module.run(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())

"""`bsc serve`: an OpenAI-compatible caching proxy in front of any OpenAI-compatible API.

Point any OpenAI client at it (``OpenAI(base_url="http://127.0.0.1:8080/v1")``): repeated and
paraphrased requests are answered from a `bsc.SemanticCache`, everything else goes upstream. Needs the
``serve`` extra (``pip install ".[serve]"`` from a checkout); ``import bsc`` does not import this package.

Example:
    >>> from bsc.serve import ServeConfig, create_app
    >>> app = create_app(ServeConfig(upstream="http://127.0.0.1:11434/v1"))  # doctest: +SKIP
"""

from bsc.serve.app import create_app
from bsc.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]

"""Embedders: turn prompts into unit-length float32 vectors for the binary cache.

Importing this package is cheap: onnxruntime, torch, sentence-transformers, openai, httpx
and the frameworks are imported only when the embedder that needs them is constructed. The default,
`NativeEmbedder` on the packaged all-MiniLM-L6-v2 (bsc's own Rust encoder), imports none of them.

Example:
    >>> from bsc.embedders import default_embedder
    >>> default_embedder().embed(["What is the capital of France?"]).shape
    (1, 384)
"""

from bsc.embedders.default import default_embedder
from bsc.embedders.framework_adapters import LangChainEmbedder, LlamaIndexEmbedder
from bsc.embedders.local import SentenceTransformerEmbedder, packaged_minilm_path
from bsc.embedders.native_bert import NativeEmbedder
from bsc.embedders.ollama_api import OllamaEmbedder, OllamaError
from bsc.embedders.onnx_runtime import OnnxEmbedder
from bsc.embedders.openai_api import OpenAIEmbedder
from bsc.embedders.protocol import Embedder, OverflowAwareEmbedder

__all__ = [
    "Embedder",
    "LangChainEmbedder",
    "LlamaIndexEmbedder",
    "NativeEmbedder",
    "OllamaEmbedder",
    "OllamaError",
    "OnnxEmbedder",
    "OpenAIEmbedder",
    "OverflowAwareEmbedder",
    "SentenceTransformerEmbedder",
    "default_embedder",
    "packaged_minilm_path",
]

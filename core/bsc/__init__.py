"""bsc: a semantic cache for LLM calls built on 256-bit binary codes and Hamming search."""

from bsc._native import BinaryEncoder

__all__ = ["BinaryEncoder"]

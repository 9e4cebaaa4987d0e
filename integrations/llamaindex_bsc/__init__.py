"""LlamaIndex integration of bsc (filled in by the LlamaIndex issue)."""

__all__: list[str] = []

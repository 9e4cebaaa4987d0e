"""LangChain integration of bsc (filled in by the LangChain issue)."""

__all__: list[str] = []

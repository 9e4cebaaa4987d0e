"""How a cached answer says so: a marker on the message and an event callbacks can count.

Every answer served from a bsc cache carries ``response_metadata["bsc_cache"] = {"hit": True,
"similarity": ..., "exact": ...}`` (``exact`` is True when the question matched verbatim, without an
embedding), and the cache dispatches a LangChain custom event named `HIT_EVENT` with the same dict, so a
callback handler's ``on_custom_event`` (or ``astream_events``) can count hits without parsing messages.

Example:
    >>> from langchain_core.messages import AIMessage
    >>> marked(AIMessage("Paris", id="run-1"), {"hit": True, "similarity": 0.97, "exact": False}).id is None
    True
"""

from __future__ import annotations

import logging
from typing import Any

from bsc import TextHit
from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForChainRun,
    CallbackManagerForLLMRun,
)
from langchain_core.callbacks.manager import (
    AsyncCallbackManager,
    CallbackManager,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.messages import BaseMessage

__all__ = ["HIT_EVENT", "MARKER_KEY", "areport_hit", "marked", "marker", "report_hit"]

logger = logging.getLogger("langchain_bsc")

#: Name of the custom event dispatched for every answer served from the cache.
HIT_EVENT = "bsc_cache_hit"
#: Key of the marker in a served message's ``response_metadata``.
MARKER_KEY = "bsc_cache"


def marker(hit: TextHit) -> dict[str, Any]:
    """The marker of a hit: ``{"hit": True, "similarity": float, "exact": bool}``."""
    return {"hit": True, "similarity": round(float(hit.similarity), 6), "exact": bool(hit.exact)}


def marked(message: BaseMessage, mark: dict[str, Any]) -> Any:
    """A copy of a cached message carrying ``mark``, without its id.

    The id is dropped because the cached one belongs to the call that produced it: LangGraph's
    ``add_messages`` replaces a message with the same id instead of appending, so a replayed id would
    overwrite the earlier answer in a conversation. LangChain gives the copy a fresh id.
    """
    metadata = {**getattr(message, "response_metadata", {}), MARKER_KEY: dict(mark)}
    return message.model_copy(update={"id": None, "response_metadata": metadata})


def report_hit(
    mark: dict[str, Any], run_manager: CallbackManagerForLLMRun | CallbackManagerForChainRun | None = None
) -> None:
    """Dispatches `HIT_EVENT` to the callbacks of the current run (a no-op outside any run)."""
    try:
        if run_manager is not None:
            CallbackManager(**_handlers_of(run_manager)).on_custom_event(
                HIT_EVENT, mark, run_id=run_manager.run_id
            )
        else:
            dispatch_custom_event(HIT_EVENT, mark)
    except RuntimeError:  # called outside any LangChain run: nobody to tell
        logger.debug("cache hit outside a LangChain run: no %s event", HIT_EVENT)


async def areport_hit(
    mark: dict[str, Any],
    run_manager: AsyncCallbackManagerForLLMRun | AsyncCallbackManagerForChainRun | None = None,
) -> None:
    """`report_hit` for async code (async callback handlers are awaited)."""
    try:
        if run_manager is not None:
            manager = AsyncCallbackManager(**_handlers_of(run_manager))
            await manager.on_custom_event(HIT_EVENT, mark, run_id=run_manager.run_id)
        else:
            await adispatch_custom_event(HIT_EVENT, mark)
    except RuntimeError:
        logger.debug("cache hit outside a LangChain run: no %s event", HIT_EVENT)


def _handlers_of(run_manager: Any) -> dict[str, Any]:
    """The handlers, tags and metadata of a run, to dispatch an event attached to that run (an LLM
    run's manager has no ``get_child``)."""
    return {
        "handlers": run_manager.handlers,
        "inheritable_handlers": run_manager.inheritable_handlers,
        "parent_run_id": run_manager.parent_run_id,
        "tags": run_manager.tags,
        "inheritable_tags": run_manager.inheritable_tags,
        "metadata": run_manager.metadata,
        "inheritable_metadata": run_manager.inheritable_metadata,
    }

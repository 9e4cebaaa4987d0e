"""Workloads for measuring a cache: request logs, seeded generators, and a replay harness.

Example:
    >>> from bsc.workloads import WORKLOADS, builtin_pool, generate
    >>> len(generate(builtin_pool(), WORKLOADS["skewed-paraphrase"]))
    10000
"""

from bsc.workloads.generators import WORKLOADS, WorkloadSpec, generate, scaled
from bsc.workloads.pools import Group, Pool, builtin_pool, load_pool, merge_pools
from bsc.workloads.replay import (
    CostModel,
    PlanRow,
    PrecomputedEmbedder,
    ReplayResult,
    format_report,
    plan_table,
    replay,
)
from bsc.workloads.requests import (
    LogFormatError,
    Request,
    distinct_prompts,
    iter_log,
    read_log,
    read_proxy_log,
    write_log,
)

__all__ = [
    "WORKLOADS",
    "CostModel",
    "Group",
    "LogFormatError",
    "PlanRow",
    "Pool",
    "PrecomputedEmbedder",
    "ReplayResult",
    "Request",
    "WorkloadSpec",
    "builtin_pool",
    "distinct_prompts",
    "format_report",
    "generate",
    "iter_log",
    "load_pool",
    "merge_pools",
    "plan_table",
    "read_log",
    "read_proxy_log",
    "replay",
    "scaled",
    "write_log",
]

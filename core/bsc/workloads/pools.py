"""Labelled prompt pools: groups of prompts that share an answer, and the near-misses of each group.

A workload generator draws its topics from a pool. Two sources:

- a *pairs* file, tab-separated with a header ``q1<TAB>q2<TAB>label[<TAB>...]`` (label 1 = same meaning,
  0 = different): ``benchmarks/data/prompt_pairs.tsv``, and the MSRP and PAWS files of ``../shared/data``.
  Paraphrase pairs are joined into groups (connected components); a label-0 pair makes each side a
  near-miss of the other's group;
- a *groups* file, JSON lines with ``prompt`` and ``group``.

`builtin_pool` reads the copy of the repository's prompt pairs that bsc ships for ``bsc calibrate``, so
`bsc replay` works offline from an installed wheel.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path

__all__ = ["Group", "Pool", "builtin_pool", "load_pool", "merge_pools"]


@dataclass(frozen=True, slots=True)
class Group:
    """Prompts that share one answer (``prompts[0]`` is the canonical one), and prompts of other groups
    that look alike but need another answer (``near_misses``)."""

    label: str
    prompts: tuple[str, ...]
    near_misses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pool:
    """Groups in a fixed order, and the label of every prompt."""

    name: str
    groups: tuple[Group, ...]

    def label_of(self) -> dict[str, str]:
        """Prompt -> label of its group."""
        return {p: g.label for g in self.groups for p in g.prompts}

    def __len__(self) -> int:
        return len(self.groups)


def load_pool(path: str | os.PathLike[str], name: str | None = None) -> Pool:
    """A pool from a pairs TSV (``.tsv``) or a groups JSONL file (``.jsonl``); ``name`` prefixes labels.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unknown extension, a missing column, or a label that is not 0 or 1.

    Example:
        >>> pool = load_pool("benchmarks/data/prompt_pairs.tsv", "prompts")  # doctest: +SKIP
        >>> pool.groups[0].prompts[:2]  # doctest: +SKIP
        ('What is the capital of France?', 'Which city is the capital of France?')
    """
    p = Path(path)
    prefix = name if name is not None else p.stem
    if p.suffix == ".tsv":
        return _from_pairs(_read_pairs(p), prefix)
    if p.suffix == ".jsonl":
        return _from_groups(p.read_text(encoding="utf-8"), prefix, str(p))
    raise ValueError(f"a pool is a pairs .tsv or a groups .jsonl file, got {os.fspath(path)!r}")


def builtin_pool() -> Pool:
    """The 378 hand-written LLM-style prompt pairs (paraphrases and hard negatives) shipped with bsc,
    as a pool named "prompts" (the same groups as ``load_pool("benchmarks/data/prompt_pairs.tsv")``).

    Example:
        >>> len(builtin_pool()) > 100
        True
    """
    with as_file(files("bsc.calibrate").joinpath("demo_pairs.tsv")) as path:
        return _from_pairs(_read_pairs(path), "prompts")


def merge_pools(pools: Sequence[Pool]) -> Pool:
    """One pool holding every group of ``pools`` (labels are already prefixed by pool name).

    Example:
        >>> len(merge_pools([builtin_pool(), builtin_pool()])) == 2 * len(builtin_pool())
        True
    """
    return Pool("+".join(p.name for p in pools), tuple(g for p in pools for g in p.groups))


def _read_pairs(path: Path) -> list[tuple[str, str, int]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or header[:3] != ["q1", "q2", "label"]:
            raise ValueError(f"{path}: expected a header starting q1<TAB>q2<TAB>label, got {header!r}")
        rows = []
        for number, row in enumerate(reader, start=2):
            if len(row) < 3 or row[2] not in ("0", "1"):
                raise ValueError(f"{path}, line {number}: expected q1, q2 and a label 0 or 1, got {row!r}")
            rows.append((row[0].replace('\\"', '"'), row[1].replace('\\"', '"'), int(row[2])))
    return rows


def _from_pairs(rows: Iterable[tuple[str, str, int]], prefix: str) -> Pool:
    rows = list(rows)
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for q1, q2, _ in rows:
        parent.setdefault(q1, q1)
        parent.setdefault(q2, q2)
    for q1, q2, label in rows:
        if label == 1:
            parent[root(q1)] = root(q2)
    members: dict[str, list[str]] = {}
    for prompt in parent:  # insertion order: the file's order, so groups are reproducible
        members.setdefault(root(prompt), []).append(prompt)
    near: dict[str, list[str]] = {r: [] for r in members}
    for q1, q2, label in rows:
        a, b = root(q1), root(q2)
        if label == 0 and a != b:  # a 0 inside one group contradicts the paraphrase links: ignore it
            near[a].append(q2)
            near[b].append(q1)
    groups = tuple(
        Group(f"{prefix}:{i}", tuple(ms), tuple(dict.fromkeys(near[r])))
        for i, (r, ms) in enumerate(members.items())
    )
    return Pool(prefix, groups)


def _from_groups(text: str, prefix: str, where: str) -> Pool:
    members: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        prompt, group = row.get("prompt"), row.get("group")
        if not isinstance(prompt, str) or not isinstance(group, str | int):
            raise ValueError(f"{where}, line {number}: expected 'prompt' (str) and 'group' (str or int)")
        bucket = members.setdefault(str(group), [])
        if prompt not in bucket:
            bucket.append(prompt)
    groups = tuple(Group(f"{prefix}:{g}", tuple(ps)) for g, ps in members.items())
    return Pool(prefix, groups)

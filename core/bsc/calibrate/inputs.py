"""Reading the calibration inputs: the user's prompts and, optionally, labelled prompt pairs.

Every problem is reported as a `CalibrationInputError` (a ``ValueError``) naming the file, the line and
what was expected, so the command line can print one clear line instead of a traceback.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "p.txt").write_text("What is 2+2?\\nHow tall is Everest?\\n")
    >>> load_prompts(d / "p.txt")
    ['What is 2+2?', 'How tall is Everest?']
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

__all__ = ["CalibrationInputError", "LabelledPair", "demo_pairs", "load_pairs", "load_prompts"]


class CalibrationInputError(ValueError):
    """An input file of ``bsc calibrate`` is missing, empty or malformed; the message says where and why."""


@dataclass(frozen=True, slots=True)
class LabelledPair:
    """Two prompts and whether one's cached answer is right for the other (label 1) or a false hit (0)."""

    q1: str
    q2: str
    label: int


def _read(path: str | os.PathLike[str], what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationInputError(f"{what} file {os.fspath(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise CalibrationInputError(
            f"{what} file {os.fspath(path)!r} is not UTF-8 text (byte {exc.start}): "
            "expected one prompt a line"
        ) from None
    except OSError as exc:
        raise CalibrationInputError(f"cannot read {what} file {os.fspath(path)!r}: {exc.strerror}") from None


def _message_text(messages: Any, where: str) -> str:
    """The prompt of a chat request: the content of its last user message (what a cache keys on)."""
    if not isinstance(messages, list) or not messages:
        raise CalibrationInputError(
            f"{where}: 'messages' must be a non-empty list of {{role, content}} objects"
        )
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # OpenAI content parts: keep the text parts
                return "\n".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
                )
    raise CalibrationInputError(f"{where}: 'messages' has no user message with text content")


def load_prompts(path: str | os.PathLike[str]) -> list[str]:
    """The prompts of ``path``: plain text (one prompt a line) or JSON lines with a ``prompt`` string or
    an OpenAI-style ``messages`` list (the last user message is the prompt). Blank lines are skipped.
    The format is decided by the first non-blank line: JSON lines if it starts with ``{``.

    Raises:
        CalibrationInputError: the file is missing, not UTF-8, holds no prompt, or a JSON line is
            malformed or has neither field.

    Example:
        >>> load_prompts("prompts.jsonl")  # doctest: +SKIP
        ['How do I reset my password?', ...]
    """
    text = _read(path, "prompts")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise CalibrationInputError(
            f"prompts file {os.fspath(path)!r} is empty: expected one prompt a line, or JSON lines "
            "with a 'prompt' or 'messages' field"
        )
    if not lines[0][1].lstrip().startswith("{"):
        return [line.strip() for _, line in lines]
    prompts: list[str] = []
    for n, line in lines:
        where = f"{os.fspath(path)}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CalibrationInputError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise CalibrationInputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if isinstance(row.get("prompt"), str):
            prompt = row["prompt"]
        elif "messages" in row:
            prompt = _message_text(row["messages"], where)
        else:
            raise CalibrationInputError(f"{where}: expected a 'prompt' string or a 'messages' list")
        if prompt.strip():
            prompts.append(prompt.strip())
    if not prompts:
        raise CalibrationInputError(f"prompts file {os.fspath(path)!r} holds only empty prompts")
    return prompts


def _parse_pairs(text: str, source: str) -> list[LabelledPair]:
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if numbered and [c.strip().lower() for c in numbered[0][1][:3]] == ["q1", "q2", "label"]:
        numbered = numbered[1:]  # the header
    if not numbered:
        raise CalibrationInputError(
            f"pairs file {source!r} holds no pairs: expected q1<TAB>q2<TAB>label lines"
        )
    pairs = []
    for n, row in numbered:
        where = f"{source}:{n}"
        if len(row) < 3:
            raise CalibrationInputError(
                f"{where}: expected q1<TAB>q2<TAB>label (label 1 = same answer, 0 = a hit would be wrong), "
                f"got {len(row)} tab-separated field{'s' if len(row) != 1 else ''}"
            )
        q1, q2, label = row[0].strip(), row[1].strip(), row[2].strip()
        if label not in ("0", "1"):
            raise CalibrationInputError(f"{where}: label must be 0 or 1, got {label!r}")
        if not q1 or not q2:
            raise CalibrationInputError(f"{where}: both prompts must be non-empty")
        pairs.append(LabelledPair(q1, q2, int(label)))
    if len({p.label for p in pairs}) < 2:
        raise CalibrationInputError(
            f"pairs file {source!r} has only label {pairs[0].label} pairs: precision and false hits need "
            "both same-answer (1) and different-answer (0) pairs"
        )
    return pairs


def load_pairs(path: str | os.PathLike[str]) -> list[LabelledPair]:
    """Labelled pairs from a tab-separated file ``q1<TAB>q2<TAB>label`` (an optional header row and extra
    columns are allowed). Label 1: q2's cached answer is right for q1; 0: it would be a false hit.

    Raises:
        CalibrationInputError: the file is missing or empty, a row has fewer than three fields, a label is
            not 0 or 1, a prompt is empty, or only one label occurs.

    Example:
        >>> load_pairs("pairs.tsv")[0]  # doctest: +SKIP
        LabelledPair(q1='What is the capital of France?', q2='Which city is the capital of France?', label=1)
    """
    return _parse_pairs(_read(path, "pairs"), os.fspath(path))


def demo_pairs() -> list[LabelledPair]:
    """The labelled sample shipped with bsc: short LLM-style prompts, paraphrases and hard negatives
    (a changed number, entity, direction, negation or intent). Used by ``bsc calibrate --demo``."""
    resource = files("bsc.calibrate").joinpath("demo_pairs.tsv")
    return _parse_pairs(resource.read_text(encoding="utf-8"), "demo_pairs.tsv")

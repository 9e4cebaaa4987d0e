"""Every ```python block of README.md and of the integration READMEs runs as written.

A block runs in a fresh namespace, in a temporary working directory, with the real local MiniLM model and
the real LangChain / LlamaIndex objects. What a reader is assumed to have already (their LLM, their index)
is set up here, never edited into the block: LlamaIndex's ``Settings.llm`` is its ``MockLLM`` (a user's
would be OpenAI(...) or Ollama(...)), and a block that uses ``index`` without defining it gets a small
``VectorStoreIndex``. Any other name a block uses without defining it fails the test: that is a block a
reader cannot run. A line ``expression  # value`` whose comment is a Python literal is checked: the
expression must equal it (``cache.lookup(...).response   # 'Paris'``).
"""

from __future__ import annotations

import ast
import builtins
import io
import re
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# An integration's README sits at its distribution's root or beside its package's code.
READMES = list(
    dict.fromkeys(
        p.resolve()
        for p in [
            ROOT / "README.md",
            *sorted(ROOT.glob("integrations/*/README.md")),
            *sorted(ROOT.glob("integrations/*/*/README.md")),
        ]
    )
)
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
_HEADING = re.compile(r"^#+ (.+)$", re.M)


@dataclass(frozen=True)
class Block:
    """One fenced python block: where it is and its code."""

    file: Path
    line: int
    heading: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line} ({self.heading})"


def _blocks() -> list[Block]:
    found = []
    for path in READMES:
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            headings = _HEADING.findall(text, 0, match.start())
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(path, line, headings[-1] if headings else "", match.group(1)))
    return found


BLOCKS = _blocks()


def _free_names(code: str) -> set[str]:
    """Names the block reads but neither assigns, imports nor gets from builtins."""
    tree = ast.parse(code)
    bound: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
            bound.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return used - bound - set(dir(builtins))


def _with_checked_results(code: str, name: str) -> ast.Module:
    """The block's code with each ``expression  # literal`` statement turned into an assert."""
    comments = {
        tok.start[0]: tok.string[1:].strip()
        for tok in tokenize.generate_tokens(io.StringIO(code).readline)
        if tok.type == tokenize.COMMENT
    }
    tree = ast.parse(code, name)
    for i, node in enumerate(tree.body):
        if not isinstance(node, ast.Expr) or node.end_lineno not in comments:
            continue
        try:
            expected = ast.literal_eval(comments[node.end_lineno])
        except (ValueError, SyntaxError):
            continue  # a prose comment, not a claimed result
        claim = f"{ast.get_source_segment(code, node)}  # {comments[node.end_lineno]}"
        check = ast.Assert(
            test=ast.Compare(left=node.value, ops=[ast.Eq()], comparators=[ast.Constant(expected)]),
            msg=ast.Constant(f"the README says {claim}"),
        )
        tree.body[i] = ast.copy_location(check, node)
    return ast.fix_missing_locations(tree)


def _llamaindex_index() -> Any:
    """A reader's index: two documents, embedded with LlamaIndex's MockEmbedding (offline)."""
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    docs = [
        Document(text="The warranty lasts two years from the date of purchase."),
        Document(text="Our head office is in Lyon, France."),
    ]
    return VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))


def _chat_model() -> Any:
    """A reader's chat model, with tools: it looks the question up with the first tool bound (when it
    has one and no result yet), then answers. Offline; stands in for ChatOpenAI(...) and the like."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.utils.function_calling import convert_to_openai_tool

    class ReaderChatModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "readme-fake"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            question = next(m.text for m in reversed(messages) if isinstance(m, HumanMessage))
            tools = kwargs.get("tools") or []
            if isinstance(messages[-1], ToolMessage):
                reply = AIMessage(f"From the handbook: {messages[-1].text}")
            elif tools:
                name = tools[0]["function"]["name"]
                reply = AIMessage(
                    "", tool_calls=[{"name": name, "args": {"query": question}, "id": "call-1"}]
                )
            else:
                reply = AIMessage(f"An answer to: {question}")
            return ChatResult(generations=[ChatGeneration(message=reply)])

    return ReaderChatModel()


def _search_docs() -> Any:
    """A reader's tool."""
    from langchain_core.tools import tool

    @tool
    def search_docs(query: str) -> str:
        """Searches the employee handbook."""
        return "Full-time employees get 25 vacation days a year."

    return search_docs


#: Names a block may use without defining them: what its reader already has, built on demand.
GIVEN: dict[str, Callable[[], Any]] = {
    "index": _llamaindex_index,
    "model": _chat_model,
    "search_docs": _search_docs,
}


@pytest.fixture
def reader_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A temp working directory, the global LangChain cache unset and LlamaIndex Settings offline
    (MockLLM as the reader's LLM), each restored afterwards."""
    monkeypatch.chdir(tmp_path)
    restore: list[Callable[[], None]] = []
    try:
        from langchain_core.globals import get_llm_cache, set_llm_cache
    except ImportError:
        pass
    else:
        previous_cache = get_llm_cache()
        restore.append(lambda: set_llm_cache(previous_cache))
    try:
        from llama_index.core import Settings
        from llama_index.core.llms import MockLLM
    except ImportError:
        pass
    else:
        saved = (Settings._llm, Settings._embed_model, Settings._tokenizer)
        Settings.llm = MockLLM()
        Settings.tokenizer = str.split  # the default downloads tiktoken's vocabulary

        def settings_back() -> None:
            Settings._llm, Settings._embed_model, Settings._tokenizer = saved

        restore.append(settings_back)
    yield
    for undo in reversed(restore):
        undo()


def test_the_readmes_have_python_blocks() -> None:
    assert len([b for b in BLOCKS if b.file.name == "README.md" and b.file.parent == ROOT]) >= 4
    assert any("llamaindex" in str(b.file) for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs_as_written(
    block: Block, reader_environment: None, single_thread_default_embedder: object
) -> None:
    undefined = _free_names(block.code) - set(GIVEN)
    assert not undefined, f"{block.id} uses names it never defines: {sorted(undefined)}"
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    namespace.update({name: make() for name, make in GIVEN.items() if name in _free_names(block.code)})
    exec(compile(_with_checked_results(block.code, block.id), block.id, "exec"), namespace)


def test_free_names_finds_what_a_block_never_defines() -> None:
    code = "from bsc import SemanticCache\ncache.save('x')\ntext = SemanticCache(embedder)\n"
    assert _free_names(code) == {"cache", "embedder"}


def test_a_wrong_claimed_result_fails() -> None:
    tree = _with_checked_results("x = 2\nx + 1   # 4\nx  # a note\n", "claims")
    with pytest.raises(AssertionError, match=r"x \+ 1  # 4"):
        exec(compile(tree, "claims", "exec"), {})

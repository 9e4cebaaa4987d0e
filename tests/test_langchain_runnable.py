"""`langchain_bsc.SemanticCacheRunnable`: a question-level cache in front of a RAG-style chain, checked
before retrieval, with the real local embedder."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_bsc import SemanticCacheRunnable
from langchain_core._api.deprecation import LangChainDeprecationWarning
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableField, RunnableConfig, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

pytestmark = pytest.mark.filterwarnings("error")

CONTEXT = "Acme ships to Canada and Mexico. Standard shipping takes 5 days; express takes 2 days. " * 20
QUESTION = "How long does standard shipping take?"
PARAPHRASE = "How long does standard shipping usually take?"
OTHER = "Do you ship to Canada?"


class Rag:
    """A retrieve-then-generate chain whose retriever and model calls are counted."""

    def __init__(self) -> None:
        self.retrievals = 0
        self.generations = 0

    def retrieve(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.retrievals += 1
        return {**inputs, "context": CONTEXT}

    def generate(self, inputs: dict[str, Any]) -> AIMessage:
        self.generations += 1
        return AIMessage(f"answer {self.generations}: {inputs['question']}")

    def chain(self) -> Any:
        return RunnableLambda(self.retrieve) | RunnableLambda(self.generate)


@pytest.fixture
def rag(single_thread_default_embedder: object) -> Rag:
    return Rag()


def test_paraphrased_question_skips_retrieval_and_generation(rag: Rag) -> None:
    cached = SemanticCacheRunnable(rag.chain(), key="question")
    first = cached.invoke({"question": QUESTION})
    again = cached.invoke({"question": PARAPHRASE})
    assert isinstance(again, AIMessage) and again.content == first.content
    assert again.response_metadata["bsc_cache"]["exact"] is False
    assert "bsc_cache" not in first.response_metadata
    assert (rag.retrievals, rag.generations) == (1, 1)
    assert cached.stats().semantic_hits == 1


def test_different_question_over_the_same_documents_is_a_miss(rag: Rag) -> None:
    cached = SemanticCacheRunnable(rag.chain(), key="question")
    first = cached.invoke({"question": QUESTION})
    other = cached.invoke({"question": OTHER})
    assert other != first
    assert rag.generations == 2


def test_other_input_fields_partition_exactly(rag: Rag) -> None:
    cached = SemanticCacheRunnable(rag.chain(), key="question")
    cached.invoke({"question": QUESTION, "tenant": "a"})
    cached.invoke({"question": QUESTION, "tenant": "b"})
    assert rag.generations == 2
    cached.invoke({"question": PARAPHRASE, "tenant": "a"})
    assert rag.generations == 2


def test_callable_key_and_partition(rag: Rag) -> None:
    cached = SemanticCacheRunnable(
        rag.chain(), key=lambda inputs: inputs["question"], partition=lambda inputs: inputs["lang"]
    )
    cached.invoke({"question": QUESTION, "lang": "en", "request_id": 1})
    cached.invoke({"question": QUESTION, "lang": "en", "request_id": 2})
    cached.invoke({"question": QUESTION, "lang": "fr", "request_id": 3})
    assert rag.generations == 2


def test_string_inputs_need_no_key(single_thread_default_embedder: object) -> None:
    calls: list[str] = []

    def answer(question: str) -> list[Document]:
        calls.append(question)
        return [Document(page_content="Paris", metadata={"source": "atlas"})]

    cached = SemanticCacheRunnable(RunnableLambda(answer))
    assert cached.invoke("What is the capital of France?") == cached.invoke(
        "Which city is the capital of France?"
    )
    assert len(calls) == 1


def test_batch_sends_only_misses_through_the_chain(rag: Rag) -> None:
    cached = SemanticCacheRunnable(rag.chain(), key="question")
    cached.invoke({"question": QUESTION})
    outputs = cached.batch([{"question": PARAPHRASE}, {"question": OTHER}, {"question": QUESTION}])
    assert len(outputs) == 3
    assert outputs[0].content == outputs[2].content
    assert (rag.retrievals, rag.generations) == (2, 2)


async def test_ainvoke_and_abatch_use_the_cache(rag: Rag) -> None:
    cached = SemanticCacheRunnable(rag.chain(), key="question")
    first = await cached.ainvoke({"question": QUESTION})
    assert (await cached.ainvoke({"question": PARAPHRASE})).content == first.content
    outputs = await cached.abatch([{"question": QUESTION}, {"question": OTHER}])
    assert outputs[0].content == first.content
    assert outputs[0].response_metadata["bsc_cache"]["exact"] is True
    assert rag.generations == 2


def test_batch_return_exceptions_keeps_hits_and_keeps_failures_out_of_the_cache(
    single_thread_default_embedder: object,
) -> None:
    attempts: list[str] = []
    down = [False]

    def flaky(question: str) -> str:
        attempts.append(question)
        if down[0]:
            raise RuntimeError("upstream down")
        return f"answer to {question}"

    cached = SemanticCacheRunnable(RunnableLambda(flaky))
    cached.invoke("What is the capital of France?")
    down[0] = True
    outputs = cached.batch(["Which city is the capital of France?", "What is 2 + 2?"], return_exceptions=True)
    assert outputs[0] == "answer to What is the capital of France?"
    assert isinstance(outputs[1], RuntimeError)
    with pytest.raises(RuntimeError):
        cached.batch(["What is 2 + 2?"])
    down[0] = False
    assert cached.invoke("What is 2 + 2?") == "answer to What is 2 + 2?"
    assert len(attempts) == 4


def test_unserializable_output_is_returned_but_not_cached(single_thread_default_embedder: object) -> None:
    calls: list[str] = []
    marker = object()

    def answer(question: str) -> object:
        calls.append(question)
        return marker

    cached = SemanticCacheRunnable(RunnableLambda(answer))
    assert cached.invoke("What is the capital of France?") is marker
    assert cached.invoke("What is the capital of France?") is marker
    assert len(calls) == 2


def test_a_field_key_needs_a_mapping_input(rag: Rag) -> None:
    cached = SemanticCacheRunnable(rag.chain(), key="question")
    with pytest.raises(TypeError, match="mapping"):
        cached.invoke("just a string")
    with pytest.raises(TypeError, match="str"):
        SemanticCacheRunnable(rag.chain()).invoke({"question": QUESTION})


# ------------------------------------------------------------------ the call's config
def _alternatives_chain() -> Any:
    small = FakeListChatModel(responses=["small model answer"] * 5)
    big = FakeListChatModel(responses=["big model answer"] * 5)
    model = small.configurable_alternatives(ConfigurableField(id="llm"), default_key="small", big=big)
    return ChatPromptTemplate.from_messages([("human", "{question}")]) | model | StrOutputParser()


def test_configurable_alternatives_partition_exactly(single_thread_default_embedder: object) -> None:
    cached = SemanticCacheRunnable(_alternatives_chain(), key="question")
    small = cached.invoke({"question": QUESTION}, {"configurable": {"llm": "small"}})
    big = cached.invoke({"question": QUESTION}, {"configurable": {"llm": "big"}})
    assert (small, big) == ("small model answer", "big model answer")
    assert cached.invoke({"question": PARAPHRASE}, {"configurable": {"llm": "big"}}) == big
    assert cached.stats().semantic_hits == 1


async def test_message_history_sessions_never_share_answers(single_thread_default_embedder: object) -> None:
    # Both classes are deprecated for LangGraph persistence but still what many chains key sessions
    # with. The module's "error" filter outranks a filterwarnings mark on the test, hence the block.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangChainDeprecationWarning)
        histories: dict[str, InMemoryChatMessageHistory] = {}

        def history(session_id: str) -> InMemoryChatMessageHistory:
            return histories.setdefault(session_id, InMemoryChatMessageHistory())

        model = FakeListChatModel(responses=["Your name is Alice.", "I don't know your name."])
        prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
        chain = RunnableWithMessageHistory(
            prompt | model | StrOutputParser(),
            history,  # type: ignore[arg-type]
            input_messages_key="question",
            history_messages_key="history",
        )
        history("alice").add_user_message("Hi, I'm Alice.")
        history("alice").add_ai_message("Hello Alice!")
        cached = SemanticCacheRunnable(chain, key="question")
        alice = cached.invoke({"question": "What is my name?"}, {"configurable": {"session_id": "alice"}})
        bob = await cached.ainvoke({"question": "What is my name?"}, {"configurable": {"session_id": "bob"}})
    assert (alice, bob) == ("Your name is Alice.", "I don't know your name.")
    assert [m.content for m in histories["bob"].messages] == ["What is my name?", "I don't know your name."]


def test_configurable_that_is_not_json_bypasses_the_cache(rag: Rag) -> None:
    cached = SemanticCacheRunnable(rag.chain(), key="question")
    config: RunnableConfig = {"configurable": {"client": object()}}
    cached.invoke({"question": QUESTION}, config)
    cached.batch([{"question": QUESTION}], config)
    assert rag.generations == 2
    assert cached.stats().cache.entries == 0


def test_private_configurable_keys_do_not_partition(rag: Rag) -> None:
    cached = SemanticCacheRunnable(rag.chain(), key="question")
    cached.invoke({"question": QUESTION}, {"configurable": {"__runtime": object(), "thread_id": "1"}})
    cached.invoke({"question": QUESTION}, {"configurable": {"__runtime": object(), "thread_id": "1"}})
    assert rag.generations == 1


def test_a_partition_taking_config_decides_what_of_the_config_counts(rag: Rag) -> None:
    def by_tenant(inputs: dict[str, Any], config: RunnableConfig) -> str:
        return str(config.get("configurable", {}).get("tenant"))

    cached = SemanticCacheRunnable(rag.chain(), key="question", partition=by_tenant)
    cached.invoke({"question": QUESTION}, {"configurable": {"tenant": "a", "request_id": 1}})
    cached.invoke({"question": QUESTION}, {"configurable": {"tenant": "a", "request_id": 2}})
    cached.invoke({"question": QUESTION}, {"configurable": {"tenant": "b", "request_id": 3}})
    assert rag.generations == 2


# ------------------------------------------------------------------ batch errors
async def test_batch_and_abatch_fail_only_the_input_that_cannot_be_keyed(rag: Rag) -> None:
    cached = SemanticCacheRunnable(rag.chain(), key="question")
    inputs = [{"question": QUESTION}, {"q": "typo in the key"}, {"question": OTHER}]
    outputs = cached.batch(inputs, return_exceptions=True)
    assert isinstance(outputs[1], KeyError)
    assert [outputs[0].content, outputs[2].content] == [f"answer 1: {QUESTION}", f"answer 2: {OTHER}"]
    again = await cached.abatch(inputs, return_exceptions=True)
    assert isinstance(again[1], KeyError)
    assert [again[0].content, again[2].content] == [outputs[0].content, outputs[2].content]
    assert rag.generations == 2
    with pytest.raises(KeyError):
        cached.batch(inputs)
    with pytest.raises(KeyError):
        await cached.abatch(inputs)
    assert rag.generations == 2

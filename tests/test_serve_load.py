"""Bounded concurrent load through the proxy: 64 concurrent `openai` clients, hits and misses mixed,
streaming and not, four tenants. Nothing may fail and every answer must be one its own tenant's
question could get (the fake upstream's answers name the question and the key)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from bsc.serve import ServeConfig, create_app  # noqa: E402
from bsc.serve.testing import FakeUpstream, running  # noqa: E402

CLIENTS = 64
REQUESTS_PER_CLIENT = 16
TENANTS = 4
MODEL = "gpt-4o-mini"
# Each group: phrasings of one question (a paraphrase may hit the group's stored answer, never another's).
GROUPS = [
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How do I bake sourdough bread at home?", "How can I bake sourdough bread at home?"),
    ("Who wrote the novel Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("How does photosynthesis work in plants?", "How do plants perform photosynthesis?"),
    ("What causes the tides in the ocean?", "What makes ocean tides happen?"),
    ("How do I reverse a list in Python?", "How can I reverse a Python list?"),
    ("What is the boiling point of water at sea level?", "At what temperature does water boil at sea level?"),
    ("Why is the sky blue?", "What makes the sky look blue?"),
    ("How do vaccines train the immune system?", "How do vaccines teach the immune system?"),
    ("What is the tallest mountain on Earth?", "Which mountain is the highest on Earth?"),
]


@pytest.mark.slow
def test_64_concurrent_clients_get_only_their_own_answers(single_thread_default_embedder: Any) -> None:
    fake = FakeUpstream()
    with running(fake.app()) as upstream:
        app = create_app(ServeConfig(upstream=upstream + "/v1"), embedder=single_thread_default_embedder)
        with running(app) as url:
            wrong, outcomes = asyncio.run(_load(url, fake))
            errors = [
                line
                for line in httpx.get(url + "/metrics").text.splitlines()
                if line.startswith("bsc_requests_total") and 'outcome="error"' in line
            ]
    assert wrong == []
    assert sum(outcomes.values()) == CLIENTS * REQUESTS_PER_CLIENT
    assert outcomes["hit"] > outcomes["miss"] > 0  # the load really mixed hits and misses
    assert errors == []
    assert sum(fake.calls.values()) == outcomes["miss"]


async def _load(url: str, fake: FakeUpstream) -> tuple[list[str], dict[str, int]]:
    clients = [
        openai.AsyncOpenAI(base_url=url + "/v1", api_key=f"sk-tenant{t}", max_retries=0, timeout=120)
        for t in range(TENANTS)
    ]
    wrong: list[str] = []
    outcomes = {"hit": 0, "miss": 0}

    async def one_client(i: int) -> None:
        rng = random.Random(i)
        tenant = i % TENANTS
        client = clients[tenant]
        for r in range(REQUESTS_PER_CLIENT):
            if rng.random() < 0.05:  # a question nobody asked before
                group: tuple[str, ...] = (f"Name one interesting fact about the number {i * 1000 + r}.",)
            else:
                group = GROUPS[rng.randrange(len(GROUPS))]
            question = rng.choice(group)
            messages = [{"role": "user", "content": question}]
            if rng.random() < 0.3:
                async with client.chat.completions.with_streaming_response.create(
                    model=MODEL, messages=messages, stream=True
                ) as response:
                    outcome = response.headers["x-bsc-cache"]
                    text = "".join(
                        [c.choices[0].delta.content or "" async for c in await response.parse() if c.choices]
                    )
            else:
                raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
                outcome = raw.headers["x-bsc-cache"]
                text = raw.parse().choices[0].message.content or ""
            outcomes[outcome] += 1
            allowed = {fake.answer(q, MODEL, f"sk-tenant{tenant}") for q in group}
            if text not in allowed:
                wrong.append(f"tenant {tenant} asked {question!r}, got {text!r}")

    try:
        await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    finally:
        for c in clients:
            await c.close()
    return wrong, outcomes

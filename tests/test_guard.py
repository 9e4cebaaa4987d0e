"""Behaviour of the false-hit guard, rule by rule, and its bar on the prompt-style pair set."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from bsc.guard import ALL_RULES, DEFAULT_RULES, FalseHitGuard

PROMPT_PAIRS = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "prompt_pairs.tsv"


@pytest.fixture(scope="module")
def guard() -> FalseHitGuard:
    return FalseHitGuard()


def only(rule: str) -> FalseHitGuard:
    return FalseHitGuard(rules=[rule])


# --- numbers -------------------------------------------------------------------------------------------


def test_numbers_refuses_a_changed_percentage(guard: FalseHitGuard) -> None:
    assert guard.check("What is 15% of 80?", "What is 25% of 80?") == "numbers"


def test_numbers_allows_percent_spelled_out_and_contraction(guard: FalseHitGuard) -> None:
    assert guard.check("What is 15% of 80?", "what's 15 percent of 80") is None


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("What is 1,000 divided by 8?", "What is 1000 divided by 8?"),
        ("What is 3.0 squared?", "What is 3 squared?"),
        ("List three tips for public speaking.", "List 3 tips for public speaking."),
        ("What is the 10th Fibonacci number?", "What is the tenth Fibonacci number?"),
        ("What's the 3rd planet from the Sun?", "Which is the third planet from the Sun?"),
        ("When did World War 2 start?", "When did WWII begin?"),
        ("What is the derivative of x^2?", "What is the derivative of x squared?"),
        ("I was charged twice for my order.", "I was charged two times for my order."),
        ("Give me twenty-five ideas.", "Give me 25 ideas."),
    ],
)
def test_numbers_normalises_equal_values(query: str, cached: str) -> None:
    assert only("numbers").check(query, cached) is None


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("What is 1,000 divided by 8?", "What is 100 divided by 8?"),
        ("What is 2 + 2?", "What is 2 + 3?"),
        ("Who won the World Cup in 2018?", "Who won the World Cup in 2014?"),
        ("Book a table for March 3rd.", "Book a table for March 13th."),
        ("What is 3 squared?", "What is 3 cubed?"),
        ("Refund my order #1234.", "Refund my order #1243."),
        ("What is 2.5 times 4?", "What is 2.75 times 4?"),
    ],
)
def test_numbers_refuses_changed_values(query: str, cached: str) -> None:
    assert only("numbers").check(query, cached) == "numbers"


def test_numbers_ignores_a_number_present_on_one_side_only() -> None:
    # Off by default because one-sided figures are usually added detail; extra_numbers catches them.
    pair = ("What should I pack for a week in Iceland?", "What should I pack for two weeks in Iceland?")
    assert only("numbers").check(*pair) is None
    assert only("extra_numbers").check(*pair) == "extra_numbers"


# --- units and direction ---------------------------------------------------------------------------------


def test_direction_refuses_fahrenheit_to_celsius_vs_celsius_to_fahrenheit(guard: FalseHitGuard) -> None:
    assert guard.check("Convert 100 °F to Celsius", "Convert 100 °C to Fahrenheit") == "direction"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("Convert 10 miles to kilometers.", "Convert 10 kilometers to miles."),
        ("How many ounces are in a pound?", "How many pounds are in an ounce?"),
        ("Translate this from English to Spanish.", "Translate this from Spanish to English."),
        (
            "How do I convert a string to an integer in Java?",
            "How do I convert an integer to a string in Java?",
        ),
        ("Fastest way from Paris to London?", "Fastest way from London to Paris?"),
        (
            "How many hours ahead is London compared to New York?",
            "How many hours ahead is New York compared to London?",
        ),
    ],
)
def test_direction_refuses_swapped_ends(query: str, cached: str) -> None:
    assert only("direction").check(query, cached) == "direction"


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("Convert 100 °F to Celsius", "What is 100 degrees Fahrenheit in Celsius?"),
        ("How many kilometers is 10 miles?", "Convert 10 miles to kilometers."),
        ("How many ounces are in a pound?", "How many oz are there in a pound?"),
        ("How do I convert a string to an integer in Java?", "In Java, how do I turn a string into an int?"),
    ],
)
def test_direction_allows_the_same_conversion_phrased_differently(query: str, cached: str) -> None:
    assert FalseHitGuard().check(query, cached) is None


def test_units_refuses_a_swapped_unit() -> None:
    assert only("units").check("Convert 3 cups to milliliters.", "Convert 3 cups to liters.") == "units"
    assert only("units").check("What does Pro cost per month?", "What does Pro cost per year?") == "units"


def test_units_ignores_a_unit_word_that_is_not_a_quantity() -> None:
    assert only("units").check("How do I make a cup of green tea?", "How should I brew green tea?") is None
    assert only("units").check("How much water per day?", "How much water each day?") is None


# --- negation, antonyms, entities, code language, intent ------------------------------------------------


def test_negation_refuses_a_negated_question(guard: FalseHitGuard) -> None:
    assert guard.check("Can I return an item with the receipt?", "Can I return an item without the receipt?")
    assert only("negation").check("Which foods contain gluten?", "Which foods don't contain gluten?")


def test_negation_treats_contractions_like_their_long_form() -> None:
    assert only("negation").check("I can't log in to my account.", "I cannot log into my account.") is None


def test_antonyms_refuses_start_vs_end(guard: FalseHitGuard) -> None:
    assert guard.check("When did World War II end?", "When did World War II start?") == "antonyms"
    assert guard.check("Is coffee good for you?", "Is coffee bad for you?") == "antonyms"


def test_antonyms_allows_a_synonym(guard: FalseHitGuard) -> None:
    assert guard.check("When did World War 2 start?", "When did WWII begin?") is None


def test_entities_refuses_a_substituted_name(guard: FalseHitGuard) -> None:
    assert guard.check("What is the capital of France?", "What is the capital of Spain?") == "entities"
    assert (
        guard.check("Do I need a visa to visit Thailand?", "Do I need a visa to visit Vietnam?") == "entities"
    )


def test_entities_accepts_acronyms_and_casing() -> None:
    assert (
        only("entities").check("Is the US in the UN?", "Is the United States in the United Nations?") is None
    )
    assert (
        only("entities").check(
            "is canberra the capital of australia", "Is Canberra the capital of Australia?"
        )
        is None
    )
    assert only("entities").check("capital of Australia", "capital of Austria") == "entities"


def test_code_language_refuses_a_different_language(guard: FalseHitGuard) -> None:
    pair = ("How do I reverse a list in python?", "How do I reverse a list in javascript?")
    assert only("code_language").check(*pair) == "code_language"
    assert (
        only("code_language").check("Concatenate strings in C++", "Concatenate strings in C")
        == "code_language"
    )
    assert guard.check(*pair) is not None


def test_intent_refuses_a_different_task() -> None:
    assert only("intent").check("Summarize this article.", "Translate this article.") == "intent"
    assert only("intent").check("Write a haiku about autumn.", "Compose a haiku about autumn.") is None


# --- the guard as a whole ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("What is the capital of France?", "Which city is the capital of France?"),
        ("How do I cancel my subscription?", "I want to cancel my subscription, how do I do that?"),
        (
            "Whats the diffrence between a list and a tuple in Python?",
            "What's the difference between a list and a tuple in Python?",
        ),
        ("WHAT TIME ZONE IS TOKYO IN?", "What time zone is Tokyo in?"),
    ],
)
def test_paraphrases_without_conflicts_pass(guard: FalseHitGuard, query: str, cached: str) -> None:
    assert guard.check(query, cached) is None


def test_identical_prompts_are_always_compatible(guard: FalseHitGuard) -> None:
    assert guard.check("What is 15% of 80?", "  what is 15%   OF 80? ") is None


def test_guard_with_no_rules_is_off() -> None:
    off = FalseHitGuard(rules=[])
    assert off.rules == ()
    assert off.check("What is 15% of 80?", "What is 25% of 80?") is None


def test_default_and_all_rules() -> None:
    assert FalseHitGuard().rules == DEFAULT_RULES
    assert FalseHitGuard(rules=ALL_RULES).rules == ALL_RULES
    assert set(DEFAULT_RULES) < set(ALL_RULES)
    assert "extra_numbers" not in DEFAULT_RULES


def test_unknown_rule_is_a_value_error_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="numbers"):
        FalseHitGuard(rules=["numbers", "vibes"])


def _load_prompt_pairs() -> list[tuple[str, str, int, str]]:
    with PROMPT_PAIRS.open(newline="", encoding="utf-8") as f:
        return [
            (r["q1"], r["q2"], int(r["label"]), r["kind"])
            for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]


def test_prompt_pair_set_is_large_and_labelled() -> None:
    rows = _load_prompt_pairs()
    assert len(rows) >= 300
    assert {label for _, _, label, _ in rows} == {0, 1}
    assert all(q1 != q2 and kind for q1, q2, _, kind in rows)


def test_guard_bar_on_prompt_pairs(guard: FalseHitGuard) -> None:
    rows = _load_prompt_pairs()
    positives = [r for r in rows if r[2] == 1]
    hard = [r for r in rows if r[2] == 0 and r[3] in {"number", "direction", "unit", "date"}]
    negatives = [r for r in rows if r[2] == 0]
    refused_pos = [r for r in positives if guard.check(r[0], r[1]) is not None]
    refused_hard = [r for r in hard if guard.check(r[0], r[1]) is not None]
    refused_neg = [r for r in negatives if guard.check(r[0], r[1]) is not None]
    assert len(refused_hard) >= 0.95 * len(hard), [r for r in hard if r not in refused_hard]
    assert len(refused_neg) >= 0.85 * len(negatives)
    assert len(refused_pos) <= 0.02 * len(positives), refused_pos

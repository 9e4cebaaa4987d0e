"""False-hit guard: cheap lexical checks that veto a semantic cache hit.

Sentence embeddings place "What is 15% of 80?" and "What is 25% of 80?" next to each other (cosine 0.9+),
so a semantic cache that trusts the embedding alone answers the second prompt with the first prompt's
answer. The guard looks at the two prompt texts and refuses a hit when they differ in something an
embedding barely sees but that changes the answer: a number, a unit, the direction of a conversion, a
negation, an antonym, or the programming language of a code question.

The guard is pure Python (regular expressions and small curated word lists, no model), so a check costs
a small fraction of embedding one prompt and can run on every candidate hit (``benchmarks/guard_eval.py``
prints the cost per check next to its quality figures). It is meant for semantic hits only: two prompts
that are identical after whitespace and case normalisation are always compatible.

Each rule is named and can be switched on or off. A rule is on by default only if, in
``benchmarks/guard_eval.py`` (figures in its output and the README), it removes false hits on LLM-style
prompt pairs while refusing almost no true ones; on news paraphrases (MSRP) the defaults trade a little
recall for precision, mostly by refusing "paraphrases" that report different figures (12% vs 16%), which
a cache should not treat as the same question anyway. ``extra_numbers`` (a number on one side only) is
off by default: it adds almost nothing on prompts and refuses as many true MSRP hits as false ones.

Example:
    >>> guard = FalseHitGuard()
    >>> guard.check("What is 15% of 80?", "What is 25% of 80?")
    'numbers'
    >>> guard.check("What is 15% of 80?", "what's 15 percent of 80") is None
    True
    >>> guard.check("Convert 100 °F to Celsius", "Convert 100 °C to Fahrenheit")
    'direction'
"""

from __future__ import annotations

import itertools
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar, overload

_T = TypeVar("_T")

__all__ = ["ALL_RULES", "DEFAULT_RULES", "FalseHitGuard", "PreparedPrompt", "prepare"]

# --------------------------------------------------------------------------------------------------------
# Word lists. Kept small on purpose: every entry is a chance to refuse a true paraphrase. Written as
# split strings because a list literal of hundreds of quoted words is harder to read and edit.
# --------------------------------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_UNITS: dict[str, str] = {}
for _canon, _forms in {
    "mg": "mg milligram milligrams",
    "g": "g gram grams gr",
    "kg": "kg kgs kilogram kilograms kilo kilos",
    "lb": "lb lbs pound pounds",
    "oz": "oz ounce ounces",
    "ton": "ton tons tonne tonnes",
    "mm": "mm millimeter millimeters millimetre millimetres",
    "cm": "cm centimeter centimeters centimetre centimetres",
    "m": "meter meters metre metres",
    "km": "km kms kilometer kilometers kilometre kilometres",
    "inch": "inch inches",
    "ft": "ft foot feet",
    "yd": "yd yard yards",
    "mi": "mi mile miles",
    "ml": "ml milliliter milliliters millilitre millilitres",
    "l": "liter liters litre litres",
    "cup": "cup cups",
    "tbsp": "tbsp tablespoon tablespoons",
    "tsp": "tsp teaspoon teaspoons",
    "gal": "gal gallon gallons",
    "qt": "qt quart quarts",
    "pt": "pint pints",
    "C": "celsius centigrade °c",
    "F": "fahrenheit °f",
    "K": "kelvin",
    "mph": "mph",
    "kmh": "km/h kph kmh",
    "B": "byte bytes",
    "KB": "kb kilobyte kilobytes",
    "MB": "mb megabyte megabytes",
    "GB": "gb gigabyte gigabytes",
    "TB": "tb terabyte terabytes",
    "usd": "usd $ dollar dollars",
    "eur": "eur € euro euros",
    "gbp": "gbp £",
    "jpy": "jpy ¥ yen",
    "%": "% percent percentage",
}.items():
    for _form in _forms.split():
        _UNITS[_form] = _canon

# Time words are everywhere in ordinary text ("last year", "a day"), so they count as units only right
# after a number ("90 minutes").
_TIME_UNITS: dict[str, str] = {}
for _canon, _forms in {
    "s": "second seconds sec secs",
    "min": "minute minutes min mins",
    "h": "hour hours hr hrs",
    "day": "day days",
    "week": "week weeks",
    "month": "month months",
    "year": "year years",
}.items():
    for _form in _forms.split():
        _TIME_UNITS[_form] = _canon

_LANGUAGES = _words(
    "english spanish french german italian portuguese dutch russian chinese mandarin cantonese japanese "
    "korean arabic hindi turkish polish swedish norwegian danish finnish greek hebrew vietnamese thai "
    "indonesian ukrainian czech"
)

_CODE_LANGUAGES: dict[str, str] = {
    "python": "python",
    "javascript": "javascript",
    "js": "javascript",
    "typescript": "typescript",
    "ts": "typescript",
    "node": "node",
    "node.js": "node",
    "nodejs": "node",
    "java": "java",
    "kotlin": "kotlin",
    "scala": "scala",
    "c++": "c++",
    "cpp": "c++",
    "c#": "c#",
    "csharp": "c#",
    "rust": "rust",
    "golang": "go",
    "ruby": "ruby",
    "php": "php",
    "swift": "swift",
    "bash": "bash",
    "powershell": "powershell",
    "perl": "perl",
    "haskell": "haskell",
    "lua": "lua",
    "matlab": "matlab",
    "sql": "sql",
    "mysql": "mysql",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "sqlite": "sqlite",
    "mongodb": "mongodb",
    "html": "html",
    "css": "css",
    "tailwind": "tailwind",
    "react": "react",
    "vue": "vue",
    "angular": "angular",
    "django": "django",
    "flask": "flask",
    "pandas": "pandas",
    "excel": "excel",
}
# Ambiguous as lowercase English words, so only counted when written capitalised ("in Go", "in C").
_CODE_LANGUAGES_CASED = {"Go": "go", "C": "c", "R": "r", "Dart": "dart", "Elixir": "elixir"}

# Types and formats: the two ends of "convert a string to an int", "JSON to YAML".
_FORMATS = _words(
    "string str integer int float double list tuple dict dictionary array set bytes json yaml xml csv pdf "
    "docx markdown html timestamp datetime date"
)
_FORMAT_ALIASES = {"str": "string", "int": "integer", "dict": "dictionary"}

_NUMBER_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12,
}  # fmt: skip
# "one" and "first" are left out: "a pound" / "one pound" and "first" as "at first" are ordinary
# paraphrases far more often than they are a changed quantity.
_ORDINAL_WORDS = {
    "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
    "twentieth": 20,
}  # fmt: skip
# "x^2" and "x squared" are the same question; "3 squared" and "3 cubed" are not. "twice" is "two times".
_POWER_WORDS = {"squared": 2, "cubed": 3, "twice": 2, "thrice": 3}
_UNIT_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
_COMPOUND_RE = re.compile(
    r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)[- ]"
    r"(one|two|three|four|five|six|seven|eight|nine)\b"
)
_ROMAN = {"II": 2, "III": 3, "IV": 4, "VI": 6, "VII": 7, "VIII": 8, "IX": 9, "XI": 11, "XII": 12}

_NEGATIONS = frozenset({"not", "never", "without", "cannot", "no", "nor", "none", "nothing", "neither"})

# Pairs of word groups with opposite meaning. A hit is refused when one prompt uses only the left group
# and the other only the right one.
_ANTONYM_PAIRS: tuple[tuple[frozenset[str], frozenset[str]], ...] = tuple(
    (frozenset(a.split()), frozenset(b.split()))
    for a, b in (
        (
            "start starts started starting begin begins began beginning",
            "end ends ended ending finish finished",
        ),
        ("open opens opened opening", "close closes closed closing"),
        ("before", "after"),
        (
            "increase increases increased raise raised improve boost higher",
            "decrease decreases decreased lower lowers reduce reduced",
        ),
        ("good healthy", "bad unhealthy harmful"),
        ("enable enabled activate", "disable disabled deactivate"),
        ("on", "off"),
        ("add added", "remove removed"),
        ("import imported", "export exported"),
        ("encrypt encrypted", "decrypt decrypted"),
        ("lock locked", "unlock unlocked"),
        ("upgrade", "downgrade"),
        ("gain gained", "lose lost"),
        ("maximum max", "minimum min"),
        ("largest biggest", "smallest"),
        ("hottest warmest", "coldest"),
        ("longest", "shortest"),
        ("advantages advantage", "disadvantages disadvantage"),
        ("pros", "cons"),
        ("ascending", "descending"),
        ("buy buying", "sell selling"),
        ("active", "passive"),
        ("safe", "unsafe"),
        ("in", "out"),
        ("upload", "download"),
        ("above", "below"),
        ("north", "south"),
        ("east", "west"),
        ("left", "right"),
        ("cheap cheapest", "expensive"),
        ("fast fastest faster", "slow slowest slower"),
        ("professional formal", "casual informal"),
        ("shorten", "expand lengthen"),
        ("create", "delete"),
        ("include", "exclude"),
    )
)  # fmt: skip

# word -> the (pair number, 0 for its left group or 1 for its right) it belongs to, so a prompt finds its
# sides in one pass over its words.
_ANTONYM_SIDES: dict[str, tuple[tuple[int, int], ...]] = {}
for _pair, _groups in enumerate(_ANTONYM_PAIRS):
    for _side, _group in enumerate(_groups):
        for _word in _group:
            _ANTONYM_SIDES[_word] = (*_ANTONYM_SIDES.get(_word, ()), (_pair, _side))

_ANTONYM_WORDS = frozenset(_ANTONYM_SIDES)

# Words whose "un"/"dis" form is not their opposite.
_NOT_PREFIXABLE = _words("cover play count card miss patch ease close charge solve pose tract till less")

# Task verbs of instructions, grouped by intent; synonyms share a group.
_INTENTS: dict[str, str] = {}
for _canon, _forms in {
    "summarize": "summarize summarise summary tldr condense",
    "translate": "translate",
    "proofread": "proofread check correct",
    "explain": "explain describe define",
    "optimize": "optimize optimise speed",
    "write": "write compose draft generate",
    "fix": "fix debug repair",
    "document": "document",
    "rewrite": "rewrite rephrase paraphrase reword",
    "review": "review critique evaluate",
    "analyze": "analyze analyse",
    "reply": "reply respond answer",
    "cancel": "cancel",
    "pause": "pause suspend",
    "change": "change modify update edit",
    "test": "test tests",
}.items():
    for _form in _forms.split():
        _INTENTS[_form] = _canon

_DETERMINERS = _words("the a an its his her their our this that these those")
_STOPWORDS = _words(
    "a an the of in on at to for from and or is are was were be by with what which who how why when where "
    "do does did can could should would will i you my your me it this that there"
)

# --------------------------------------------------------------------------------------------------------
# Text analysis
# --------------------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"c\+\+|c#|f#|node\.js|km/h|°\s?[cf]\b|[$€£¥%]|[a-z0-9]+(?:['\u2019][a-z]+)?")
_NUMBER_RE = re.compile(r"(?<![a-z0-9.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?!\d)")
_NUMBER_UNIT_RE = re.compile(
    r"(?<![a-z0-9.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\s*(°\s?[cf]\b|[a-z]+(?:/h)?|%)"
)
_CURRENCY_NUMBER_RE = re.compile(r"([$€£¥])\s*\d")
# A rate is a quantity too: "cost per month" and "cost per year" are different questions.
_RATE_RE = re.compile(r"\b(?:per|each|every)\s+(second|minute|hour|day|week|month|year)\b")
_RATE_WORDS = {"hourly": "h", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}
_RATE_WORDS["annually"] = _RATE_WORDS["annual"] = "year"
_ROMAN_RE = re.compile(r"\b(I{2,3}|IV|VI{0,3}|IX|XI{1,2})\b")
# Spelled-out forms first, so that "WWII" and "World War 2" share numbers and entity words.
_ALIASES = (
    (re.compile(r"\bWW\s?(?:II|2)\b"), "World War II"),
    (re.compile(r"\bWW\s?(?:I|1)\b"), "World War I"),
)
_CAPITALISED_RE = re.compile(r"[A-Z][A-Za-z0-9'.+#-]*")
# A capitalised word right after one of these starts a sentence (or a quote), so it is not a name.
_SENTENCE_END = '.!?:;"\u201c('
_LETTERS_RE = re.compile(r"[a-z]+")
_ALNUM_RE = re.compile(r"[a-z0-9]+")
_NON_SPACE_RE = re.compile(r"\S+")
_SPACE_HYPHEN_RE = re.compile(r"[\s-]+")
_CASED_CODE_RE = re.compile(r"(?<=\s)(Go|C|R|Dart|Elixir)\b(?![+#])")
_POSSESSIVE_RE = re.compile(r"'s$|'s(?=\s)|'")
_EDGE_PUNCTUATION = ",.!?;:\"'()\u201c\u201d\u2018\u2019"
_HOW_MANY = ("how", "many")
# Words between two terms that make their order meaningful: "miles to km", "London compared to Paris",
# "Tokyo ahead of Los Angeles", "bigger than".
_FORWARD = frozenset({"to", "into", "in", "as", "of", "than"})
_CONNECTORS = _FORWARD | {"from", "is", "are", "does", "how", "many", "have"}


# Number words, ordinals and powers in one table: word -> the canonical values it counts as.
_NUMBER_VALUES: dict[str, tuple[str, ...]] = {}
for _table in (_NUMBER_WORDS, _ORDINAL_WORDS, _POWER_WORDS):
    for _word, _value in _table.items():
        _NUMBER_VALUES[_word] = (*_NUMBER_VALUES.get(_word, ()), str(_value))


def _canonical_number(integer: str, fraction: str | None) -> str:
    """Return one spelling per value: "1,000" and "1000" -> "1000", "3.0" and "3" -> "3"."""
    value = float(integer.replace(",", "") + (fraction or ""))
    return str(int(value)) if value.is_integer() else repr(value)


class _feature(Generic[_T]):
    """`functools.cached_property` without its lock (Python 3.11 takes one on every first read; a
    query reads a dozen features once each). Two threads may both compute a feature; both get equal
    values, and the prompt's text never changes."""

    def __init__(self, compute: Callable[[Any], _T]) -> None:
        self._compute = compute
        self._name = compute.__name__
        self.__doc__ = compute.__doc__

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _feature[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> _T | _feature[_T]:
        if instance is None:
            return self
        # A non-data descriptor: once the value is in the instance's __dict__, reads never come here.
        value = instance.__dict__[self._name] = self._compute(instance)
        return value


@lru_cache(maxsize=4096)
def _word_pattern(word: str) -> re.Pattern[str]:
    """The compiled pattern of a non-alphanumeric word ("u.s", "o'brien") as a whole word."""
    return re.compile(r"(?<![a-z0-9])" + re.escape(word) + r"(?![a-z0-9])")


# Every feature a rule reads, computed by `PreparedPrompt.complete`; and the intermediate steps that
# only feed them, dropped once the features are built (a stored prompt keeps only what rules read).
_FEATURES = (
    "lower",
    "words",
    "negated",
    "prefixed",
    "antonym_sides",
    "intents",
    "numbers",
    "units",
    "directions",
    "entity_slots",
    "named_slots",
    "acronyms",
    "alnum_words",
    "code_languages",
)
# "lower" only serves the rare word with punctuation in `knows`, which recomputes it.
_INTERMEDIATE = ("tokens", "terms", "entities", "entity_slots", "lower")
_EMPTY: frozenset[Any] = frozenset()
_NO_SIDES: tuple[frozenset[int], frozenset[int]] = (_EMPTY, _EMPTY)
_NO_NUMBERS: Counter[str] = Counter()  # shared by the prompts without numbers: never changed


@dataclass(frozen=True)
class PreparedPrompt:
    """One prompt analysed for the guard (built by `FalseHitGuard.prepare`).

    Features are computed on first use, so a rule that refuses early spares the query the rest; a
    prompt kept for many checks (a cached one) computes them all once with `complete`. Read-only once
    built, so one prepared prompt can be checked from several threads.

    Attributes:
        text: the prompt with its aliases spelled out ("WWII" -> "World War II").
        normalised: the original prompt lowercased with its whitespace collapsed; equal ones are
            always compatible.
        source: the prompt as given (the same object as ``text`` unless an alias was spelled out).
    """

    text: str
    normalised: str
    source: str

    def complete(self) -> PreparedPrompt:
        """Computes every feature the rules read and drops the steps in between; returns itself.

        A cache keeps one of these per entry, so what can be shared is: words are interned (one copy of
        "what" for all prompts), an equal set of alphanumeric words is the words set itself, and empty
        features are one shared empty value. A feature dropped here is recomputed if ever read.
        """
        for name in _FEATURES:
            getattr(self, name)
        found = self.__dict__
        for name in _INTERMEDIATE:
            found.pop(name, None)
        words = found["words"] = frozenset(map(sys.intern, found["words"]))
        alnum = frozenset(map(sys.intern, found["alnum_words"]))
        found["alnum_words"] = words if alnum == words else alnum
        for name, value in found.items():
            if isinstance(value, frozenset) and not value:
                found[name] = _EMPTY
        if not found["numbers"]:
            found["numbers"] = _NO_NUMBERS
        if not any(found["antonym_sides"]):
            found["antonym_sides"] = _NO_SIDES
        return self

    @_feature
    def lower(self) -> str:
        return self.text.lower().replace("\u2019", "'")

    @_feature
    def tokens(self) -> list[str]:
        # Only "° c" / "°c" can hold a space.
        found: list[str] = _TOKEN_RE.findall(self.lower)
        return [t.replace(" ", "") for t in found] if "°" in self.lower else found

    @_feature
    def words(self) -> frozenset[str]:
        # "don't" also counts as "do" + "n't" so that negation and lookups see both parts.
        out = set(self.tokens)
        if "'" in self.lower:
            for token in self.tokens:
                if token.endswith("n't"):
                    out.add("n't")
                elif "'" in token:
                    out.add(token.split("'")[0])
        return frozenset(out)

    @_feature
    def numbers(self) -> Counter[str]:
        """Every number, canonicalised, with its count ("2 + 2" has two 2s)."""
        # Compounds first, so "twenty-five" is 25 and not 20 and 5.
        text = _COMPOUND_RE.sub(lambda m: f" {_NUMBER_WORDS[m[1]] + _UNIT_WORDS[m[2]]} ", self.lower)
        found: Counter[str] = Counter(_canonical_number(m[1], m[2]) for m in _NUMBER_RE.finditer(text))
        for word in _LETTERS_RE.findall(text):
            for value in _NUMBER_VALUES.get(word, ()):
                found[value] += 1
        for m in _ROMAN_RE.finditer(self.text):
            if m[1] in _ROMAN:
                found[str(_ROMAN[m[1]])] += 1
        return found

    @_feature
    def units(self) -> frozenset[str]:
        """Units used as quantities: after a number ("5 kg", "15%"), before one ("$45"), after
        "how many", or at either end of a conversion. A bare "cup of tea" is not a quantity."""
        found: set[str] = set()
        for m in _NUMBER_UNIT_RE.finditer(self.lower):
            unit = m[1].replace(" ", "")
            if unit in _UNITS:
                found.add(_UNITS[unit])
            elif unit in _TIME_UNITS:
                found.add(_TIME_UNITS[unit])
            elif unit in ("c", "f"):
                found.add(unit.upper())
        found.update(_UNITS[m[1]] for m in _CURRENCY_NUMBER_RE.finditer(self.lower))
        found.update(_TIME_UNITS[m[1]] for m in _RATE_RE.finditer(self.lower))
        found.update(_RATE_WORDS[t] for t in self.tokens if t in _RATE_WORDS)
        tokens = self.tokens
        found.update(
            _UNITS[t]
            for i, t in enumerate(tokens)
            if t in _UNITS and tuple(tokens[max(0, i - 2) : i]) == _HOW_MANY
        )
        found.update(tag[2:] for pair in self.directions for tag in pair if tag.startswith("u:"))
        return frozenset(found)

    @_feature
    def entities(self) -> list[str]:
        return [e for _, e in self.entity_slots]

    @_feature
    def entity_slots(self) -> list[tuple[str, str]]:
        """Runs of capitalised words that do not start a sentence, lowercased, with the word before them:
        "fly to New York" -> ("to", "new york")."""
        runs: list[tuple[str, str]] = []
        current: list[str] = []
        before = ""
        previous = ""
        previous_raw = ""
        for m in _NON_SPACE_RE.finditer(self.text):
            word = m[0].strip(_EDGE_PUNCTUATION)
            starts_sentence = previous_raw == "" or previous_raw[-1] in _SENTENCE_END
            capitalised = word and "A" <= word[0] <= "Z" and _CAPITALISED_RE.fullmatch(word)
            if capitalised and not starts_sentence and word != "I":
                if not current:
                    before = previous
                current.append(word.lower())
                if m[0][-1] in ",.!?;:":
                    runs.append((before, " ".join(current)))
                    current = []
            elif current:
                runs.append((before, " ".join(current)))
                current = []
            previous = word.lower()
            previous_raw = m[0]
        if current:
            runs.append((before, " ".join(current)))
        return runs

    @_feature
    def code_languages(self) -> frozenset[str]:
        found = {_CODE_LANGUAGES[t] for t in self.tokens if t in _CODE_LANGUAGES}
        for m in _CASED_CODE_RE.finditer(self.text):
            found.add(_CODE_LANGUAGES_CASED[m[1]])
        return frozenset(found)

    @_feature
    def terms(self) -> list[str | None]:
        """Token sequence where units, languages, formats and named entities become one tag each.

        Everything else maps to None except connector words, which are kept verbatim for the
        direction patterns.
        """
        entity_words = {w for e in self.entities for w in e.split()}
        out: list[str | None] = []
        for token in self.tokens:
            if token in _UNITS:
                out.append("u:" + _UNITS[token])
            elif token in _CODE_LANGUAGES:
                out.append("c:" + _CODE_LANGUAGES[token])
            elif token in _LANGUAGES:
                out.append("l:" + token)
            elif token in _FORMATS:
                out.append("f:" + _FORMAT_ALIASES.get(token, token))
            elif token in entity_words:
                # One tag per multi-word name, so "New York" is one end of a direction, not two.
                if out and out[-1] is not None and out[-1].startswith("e:"):
                    out[-1] += " " + token
                    out.append(None)
                else:
                    out.append("e:" + token)
            elif token in _CONNECTORS:
                out.append(token)
            else:
                out.append(None)
        return out

    @_feature
    def directions(self) -> frozenset[tuple[str, str]]:
        """Ordered (source, target) pairs: "miles to km" -> (mi, km); "how many oz in a lb" -> (lb, oz)."""
        terms = self.terms
        tagged = [i for i, t in enumerate(terms) if t is not None and ":" in t]
        pairs: set[tuple[str, str]] = set()
        for a, b in itertools.pairwise(tagged):
            x, y = terms[a], terms[b]
            assert x is not None and y is not None
            if x == y or b - a > 6:
                continue
            between = set(t for t in terms[a + 1 : b] if t is not None)
            how_many = tuple(terms[max(0, a - 2) : a]) == _HOW_MANY
            if how_many and between & {"in", "is", "are", "does"}:
                pairs.add((y, x))
            elif between & _FORWARD:
                pairs.add((x, y))
        return frozenset(pairs)

    @_feature
    def acronyms(self) -> frozenset[str]:
        """Initials of multi-word names ("united states" -> "us") and dotless forms ("u.s" -> "us")."""
        out = {e.replace(".", "") for e in self.entities}
        out.update("".join(w[0] for w in e.split()) for e in self.entities if " " in e)
        return frozenset(out)

    @_feature
    def alnum_words(self) -> frozenset[str]:
        return frozenset(_ALNUM_RE.findall(self.lower))

    @_feature
    def antonym_sides(self) -> tuple[frozenset[int], frozenset[int]]:
        """The antonym pairs (by number) of which this prompt uses only the left group, and those of
        which it uses only the right one."""
        left: set[int] = set()
        right: set[int] = set()
        for word in self.words & _ANTONYM_WORDS:
            for pair, side in _ANTONYM_SIDES[word]:
                (right if side else left).add(pair)
        return frozenset(left - right), frozenset(right - left)

    @_feature
    def negated(self) -> bool:
        """A negation word, or a contraction ending in "n't"."""
        return bool(self.words & _NEGATIONS) or "n't" in self.words

    @_feature
    def prefixed(self) -> tuple[tuple[str, str], ...]:
        """Words made of "un"/"dis" and another word of at least 4 letters, with that word:
        ("disconnect", "connect"). Stems whose prefixed form is not their opposite are left out."""
        out = []
        for word in self.words:
            if word.startswith(("un", "dis")):
                stem = word[2:] if word.startswith("un") else word[3:]
                if len(stem) >= 4 and stem not in _NOT_PREFIXABLE:
                    out.append((word, stem))
        return tuple(out)

    @_feature
    def named_slots(self) -> tuple[tuple[str, str], ...]:
        """The entity slots whose word before is not a determiner ("of France", not "the France")."""
        return tuple((before, e) for before, e in self.entity_slots if before not in _DETERMINERS)

    @_feature
    def intents(self) -> frozenset[str]:
        """The task verbs' intent groups ("summarise" and "tldr" are both "summarize")."""
        return frozenset(_INTENTS[w] for w in self.words if w in _INTENTS)

    def _has_word(self, word: str) -> bool:
        if word.isalnum():
            return word in self.alnum_words
        # Rare ("u.s", "o'brien"): a pattern is cheaper than keeping a set of every span.
        return _word_pattern(word).search(self.lower) is not None

    def knows(self, entity: str) -> bool:
        """True if this prompt mentions ``entity`` by any content word, or by its acronym or expansion."""
        content = [
            w for w in _SPACE_HYPHEN_RE.split(_POSSESSIVE_RE.sub("", entity)) if w and w not in _STOPWORDS
        ]
        if any(self._has_word(w) for w in content):
            return True
        # Abbreviations and spelling variants: "oct"/"october", "falluja"/"fallujah". A shared prefix is
        # not enough ("austria"/"australia"); one word must be the start of the other.
        plain = {_POSSESSIVE_RE.sub("", w) for w in self.words}
        if any(
            len(short_w) >= 3 and long_w.startswith(short_w)
            for w in content
            for other in plain
            for short_w, long_w in ((w, other), (other, w))
        ):
            return True
        short = entity.replace(".", "")
        initials = "".join(w[0] for w in entity.split()) if " " in entity else ""
        return short in self.acronyms or initials in self.acronyms or short in self.words


# --------------------------------------------------------------------------------------------------------
# Rules: each returns True when the two prompts must not share an answer.
# --------------------------------------------------------------------------------------------------------


def _numbers(a: PreparedPrompt, b: PreparedPrompt) -> bool:
    # Both sides must have a number the other lacks ("15% of 80" / "25% of 80"). A number on one side
    # only is usually an added detail in longer text ("fell 5%" / "fell 5%, to $32.75"); the
    # "extra_numbers" rule refuses those too.
    # Each rule reads the cached side (b, analysed when it was stored) first, so a query pays only for
    # the features the cached prompt makes relevant: most prompts have no number, unit or direction.
    return bool(b.numbers) and bool(a.numbers - b.numbers) and bool(b.numbers - a.numbers)


def _extra_numbers(a: PreparedPrompt, b: PreparedPrompt) -> bool:
    return a.numbers != b.numbers


def _units(a: PreparedPrompt, b: PreparedPrompt) -> bool:
    # Same reasoning as numbers: a unit swap ("3 cups to liters" / "3 cups to milliliters"), not a unit
    # that only one side spells out.
    return bool(b.units) and bool(a.units - b.units) and bool(b.units - a.units)


def _direction(a: PreparedPrompt, b: PreparedPrompt) -> bool:
    db = b.directions
    if not db:  # then no pair of the query's can be reversed in it, and there is none of its own
        return False
    da = a.directions
    return any((y, x) in db and (x, y) not in db for x, y in da if (x, y) not in db) or any(
        (y, x) in da and (x, y) not in da for x, y in db
    )


def _negation(a: PreparedPrompt, b: PreparedPrompt) -> bool:
    return a.negated != b.negated


def _antonyms(a: PreparedPrompt, b: PreparedPrompt) -> bool:
    # One side uses only the left group of a pair and the other only its right group.
    (a_left, a_right), (b_left, b_right) = a.antonym_sides, b.antonym_sides
    if a_left & b_right or a_right & b_left:
        return True
    # Morphological opposites without a list entry: "connect"/"disconnect", "install"/"uninstall".
    return _prefixed_opposite(a, b) or _prefixed_opposite(b, a)


def _prefixed_opposite(mine: PreparedPrompt, other: PreparedPrompt) -> bool:
    """True if ``other`` alone uses "un"/"dis" + a word that ``mine`` alone uses."""
    return any(
        stem in mine.words and stem not in other.words and full not in mine.words
        for full, stem in other.prefixed
    )


def _entities(a: PreparedPrompt, b: PreparedPrompt) -> bool:
    # A substitution in the same slot ("capital of France" / "capital of Spain"): each side has a name the
    # other never mentions, right after the same word. Long texts that merely name different people
    # ("said Smith" / "the minister told") do not count, nor do "the U.S." / "the United States".
    only_b = {before for before, e in b.named_slots if not a.knows(e)}
    if not only_b:
        return False
    only_a = {before for before, e in a.named_slots if not b.knows(e)}
    return bool(only_a & only_b)


def _code_language(a: PreparedPrompt, b: PreparedPrompt) -> bool:
    lb = b.code_languages
    if not lb:
        return False
    la = a.code_languages
    return bool(la) and la != lb


def _intent(a: PreparedPrompt, b: PreparedPrompt) -> bool:
    ib = b.intents
    if not ib:
        return False
    ia = a.intents
    return bool(ia) and not (ia & ib)


_RULES: dict[str, Callable[[PreparedPrompt, PreparedPrompt], bool]] = {
    "numbers": _numbers,
    "extra_numbers": _extra_numbers,
    "units": _units,
    "direction": _direction,
    "negation": _negation,
    "antonyms": _antonyms,
    "entities": _entities,
    "code_language": _code_language,
    "intent": _intent,
}

#: Every rule the guard knows, in the order they are tried.
ALL_RULES: tuple[str, ...] = tuple(_RULES)
#: The rules on by default: everything except ``extra_numbers``, which catches "a week" / "two weeks" but
#: also refuses many true paraphrases where one side merely adds a figure (benchmarks/guard_eval.py).
DEFAULT_RULES: tuple[str, ...] = tuple(n for n in ALL_RULES if n != "extra_numbers")


def _expand(text: str) -> str:
    if "WW" not in text:  # every alias starts so
        return text
    for pattern, spelled in _ALIASES:
        text = pattern.sub(spelled, text)
    return text


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def prepare(text: str) -> PreparedPrompt:
    """``text`` analysed for `FalseHitGuard.check_prepared`; features are computed as rules read them
    (call `PreparedPrompt.complete` to compute them all now). The analysis does not depend on which
    rules a guard applies, so one prepared prompt serves every guard.

    Example:
        >>> prepare("Convert WWII dates").text
        'Convert World War II dates'
    """
    return PreparedPrompt(_expand(text), _normalise(text), text)


class FalseHitGuard:
    """Refuses semantic cache hits whose prompts differ in a way that changes the answer.

    Args:
        rules: names of the rules to apply, from ``ALL_RULES``. ``None`` (the default) applies
            ``DEFAULT_RULES``; an empty sequence switches the guard off.

    Raises:
        ValueError: if a rule name is unknown.

    Example:
        >>> guard = FalseHitGuard(rules=["numbers", "direction"])
        >>> guard.check("When did World War II end?", "When did World War II start?") is None
        True
        >>> FalseHitGuard().check("When did World War II end?", "When did World War II start?")
        'antonyms'
    """

    __slots__ = ("_checks", "_rules")

    def __init__(self, rules: Iterable[str] | None = None) -> None:
        names = DEFAULT_RULES if rules is None else tuple(dict.fromkeys(rules))
        unknown = [n for n in names if n not in _RULES]
        if unknown:
            raise ValueError(f"unknown guard rule(s) {unknown}; expected names from {list(ALL_RULES)}")
        self._rules: tuple[str, ...] = names
        self._checks = tuple((n, _RULES[n]) for n in names)

    @property
    def rules(self) -> tuple[str, ...]:
        """The names of the rules this guard applies, in order."""
        return self._rules

    def check(self, query: str, cached: str) -> str | None:
        """Return the name of the first rule that refuses the hit, or ``None`` if the hit may be served.

        Args:
            query: the incoming prompt.
            cached: the stored prompt whose answer the cache would return.

        Example:
            >>> FalseHitGuard().check("Is coffee good for you?", "Is coffee bad for you?")
            'antonyms'
        """
        if not self._checks:
            return None
        return self._decide(prepare(query), prepare(cached))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that refines `check` alone keeps being asked through it by `check_prepared`
        (which a cache calls), from the prompts as given; one that overrides `check_prepared` (and
        `check`, for direct calls) keeps the prepared path."""
        super().__init_subclass__(**kwargs)
        if "check" in vars(cls) and "check_prepared" not in vars(cls):

            def check_prepared(
                self: FalseHitGuard, query: PreparedPrompt, cached: PreparedPrompt
            ) -> str | None:
                return self.check(query.source, cached.source)

            cls.check_prepared = check_prepared  # type: ignore[method-assign]

    def check_prepared(self, query: PreparedPrompt, cached: PreparedPrompt) -> str | None:
        """`check` on prompts analysed beforehand with `prepare`: the same decision, without analysing
        a prompt again for every pair it is in (a cache prepares each stored prompt once and each
        query once for all its candidates).

        Example:
            >>> guard = FalseHitGuard()
            >>> stored = prepare("What is 15% of 80?").complete()
            >>> guard.check_prepared(prepare("What is 25% of 80?"), stored)
            'numbers'
        """
        return self._decide(query, cached)

    def _decide(self, query: PreparedPrompt, cached: PreparedPrompt) -> str | None:
        if not self._checks or query.normalised == cached.normalised:
            return None
        for name, refuses in self._checks:
            if refuses(query, cached):
                return name
        return None

    def __repr__(self) -> str:
        return f"FalseHitGuard(rules={list(self._rules)!r})"

"""Knowledge items (facts) from offline sources, and the phrasings that make questions and sentences of them.

Sources: the Debian ``bsdgames`` quiz files (capitals, US states, elements, collective nouns, …) and the PyPI
``countryinfo`` package, plus generated arithmetic. Every relation has several question and statement
templates, split into training and *held-out phrasings*: held-out ones are used only by held-out samples, never
in training text, so evaluation asks about a fact in wording the model never read (``Relation``).
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

QUIZ_DIR = Path("/usr/share/games/bsdgames/quiz")


# ---- quiz pattern syntax: `a|b` alternatives, `{opt}` optional parts, `[a|b]` groups, `\:` escapes ------
def _parse_alt(s: str, i: int, stop: str) -> tuple[list, int]:
    """Parse alternatives up to ``stop``; returns ([sequence, ...], index after the stop char)."""
    alts: list[list] = [[]]
    buf = ""
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            buf += s[i + 1]
            i += 2
            continue
        if c in stop:
            break
        if c == "|":
            if buf:
                alts[-1].append(buf)
            buf = ""
            alts.append([])
        elif c in "{[":
            if buf:
                alts[-1].append(buf)
            buf = ""
            inner, i = _parse_alt(s, i + 1, "}" if c == "{" else "]")
            alts[-1].append(("opt" if c == "{" else "grp", inner))
            continue
        else:
            buf += c
        i += 1
    if buf:
        alts[-1].append(buf)
    return alts, i + 1


def _canonical(alts: list) -> str:
    """The fullest reading: first alternative everywhere, optional parts included."""
    return "".join(item if isinstance(item, str) else _canonical(item[1]) for item in alts[0])


def _expand(alts: list, limit: int) -> list[str]:
    out: list[str] = []
    for seq in alts:
        parts = []
        for item in seq:
            if isinstance(item, str):
                parts.append([item])
            else:
                sub = _expand(item[1], limit)
                parts.append(sub + [""] if item[0] == "opt" else sub)
        for combo in itertools.product(*parts):
            out.append("".join(combo))
            if len(out) >= limit:
                return out
    return out


def parse_pattern(pattern: str, limit: int = 32) -> tuple[str, tuple[str, ...]]:
    """Parse one quiz category: returns (canonical reading, every accepted reading up to ``limit``).

    >>> parse_pattern("Cal{if{ornia}}|CA")[0]
    'California'
    """
    alts, _ = _parse_alt(pattern, 0, "")
    canonical = _clean(_canonical(alts))
    readings = dict.fromkeys(_clean(r) for r in _expand(alts, limit) if _clean(r))
    return canonical, tuple(readings)


def _clean(text: str) -> str:
    """ASCII-fold and squeeze spaces (espeak/flite and the word tokenizer all want plain ASCII)."""
    text = re.sub('[\\x27^~`"]\x08|\x08[\\x27^~`"]|\x08', "", text)  # overstruck accents: e'<BS> → e
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"(?<=[a-z])'(?=[aeiou]\w)", "", text)  # quiz files spell accents as Asunci'on
    return re.sub(r"\s+", " ", text).strip()


def read_quiz_file(path: Path) -> list[list[str]]:
    """Rows of raw category patterns; a trailing backslash continues a row on the next line."""
    rows, pending = [], ""
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        if not line.strip():
            continue
        fields, buf, depth, i = [], "", 0, 0
        while i < len(line):
            c = line[i]
            if c == "\\" and i + 1 < len(line):
                buf += line[i : i + 2]
                i += 2
                continue
            depth += c in "{[" and 1 or 0
            depth -= c in "}]" and 1 or 0
            if c == ":" and depth == 0:
                fields.append(buf)
                buf = ""
            else:
                buf += c
            i += 1
        fields.append(buf)
        rows.append(fields)
    return rows


# ---- relations and templates ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Relation:
    """Phrasings of one relation (``{s}`` subject, ``{a}`` answer), split into training and held-out ones.

    Held-out phrasings never occur in training text. The *first* held-out phrasing is the one every held-out
    spoken question and ASR/TTS sentence uses (:attr:`heldout_question`, :attr:`heldout_statement`); the others
    only multiply the held-out *text* benchmarks (typed QA rounds, perplexity sentences), so that a drop in text
    ability is measured on several wordings of each held-out fact. Those extra phrasings recombine words of the
    training phrasings only (``tests/data/test_facts.py`` checks it): a word the text LM never read has an
    untrained embedding and would measure the vocabulary, not the knowledge.
    """

    train_questions: tuple[str, ...]
    heldout_questions: tuple[str, ...]
    train_statements: tuple[str, ...]
    heldout_statements: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.train_questions) < 2 or len(self.train_statements) < 1:
            raise ValueError("a relation needs >= 2 training question templates and >= 1 training statement template")
        if not self.heldout_questions or not self.heldout_statements:
            raise ValueError("a relation needs >= 1 held-out question template and >= 1 held-out statement template")
        if set(self.heldout_questions) & set(self.train_questions) or set(self.heldout_statements) & set(
            self.train_statements
        ):
            raise ValueError("a held-out template is also a training template")

    @property
    def questions(self) -> tuple[str, ...]:
        """Every question phrasing, training then held-out."""
        return self.train_questions + self.heldout_questions

    @property
    def statements(self) -> tuple[str, ...]:
        return self.train_statements + self.heldout_statements

    @property
    def heldout_question(self) -> str:
        return self.heldout_questions[0]

    @property
    def heldout_statement(self) -> str:
        return self.heldout_statements[0]


RELATIONS: dict[str, Relation] = {
    "capital": Relation(
        ("What is the capital of {s}?", "Which city is the capital of {s}?", "Name the capital of {s}."),
        (
            "Tell me the capital city of {s}.",
            "What city is the capital of {s}?",
            "The capital of {s} is which city?",
            "In {s}, what is the capital city?",
        ),
        ("The capital of {s} is {a}.", "{a} is the capital of {s}."),
        (
            "The capital city of {s} is {a}.",
            "{a} is the capital city of {s}.",
            "In {s} the capital is {a}.",
            "The city of {a} is the capital of {s}.",
        ),
    ),
    "region": Relation(
        ("In which region is {s}?", "Which part of the world is {s} in?", "Where in the world is {s}?"),
        (
            "On which continent or region is {s} located?",
            "What region is {s} in?",
            "Which region of the world is {s} in?",
            "In which part of the world is {s}?",
        ),
        ("{s} is in {a}.", "{s} lies in {a}."),
        ("{s} is located in {a}.", "{s} is part of {a}.", "{s} is in the region of {a}.", "The region of {s} is {a}."),
    ),
    "state_abbrev": Relation(
        (
            "What is the postal abbreviation of {s}?",
            "How do you abbreviate {s}?",
            "What is the two letter code for {s}?",
        ),
        (
            "Which postal code stands for {s}?",
            "How is {s} abbreviated?",
            "What is the postal code for {s}?",
            "Which two letter code stands for {s}?",
        ),
        ("The postal abbreviation of {s} is {a}.", "{s} is abbreviated {a}."),
        (
            "The two letter code for {s} is {a}.",
            "{a} is the postal abbreviation of {s}.",
            "{a} stands for {s}.",
            "The postal code for {s} is {a}.",
        ),
    ),
    "state_flower": Relation(
        (
            "What is the state flower of {s}?",
            "Which flower is the symbol of {s}?",
            "Name the state flower of {s}.",
        ),
        (
            "Which flower represents the state of {s}?",
            "What flower is the symbol of {s}?",
            "Which flower is the state flower of {s}?",
            "What flower does {s} have as its state flower?",
        ),
        ("The state flower of {s} is the {a}.", "{s} has the {a} as its state flower."),
        (
            "The flower of the state of {s} is the {a}.",
            "The {a} is the state flower of {s}.",
            "The {a} is the flower of {s}.",
            "{s} has the {a} as its flower.",
        ),
    ),
    "element_symbol": Relation(
        (
            "What is the chemical symbol for {s}?",
            "Which symbol stands for {s}?",
            "How is {s} written in chemistry?",
        ),
        (
            "What symbol does the element {s} have?",
            "What symbol stands for {s}?",
            "Which chemical symbol does {s} have?",
            "In chemistry, how is {s} written?",
        ),
        ("The chemical symbol for {s} is {a}.", "{s} has the symbol {a}."),
        (
            "The element {s} is written {a}.",
            "{a} is the chemical symbol for {s}.",
            "{a} stands for {s}.",
            "In chemistry {s} is written {a}.",
        ),
    ),
    "element_number": Relation(
        (
            "What is the atomic number of {s}?",
            "Which atomic number does {s} have?",
            "How many protons does an atom of {s} have?",
        ),
        (
            "What number is {s} in the periodic table?",
            "What atomic number does {s} have?",
            "How many protons does {s} have?",
            "Which number is the atomic number of {s}?",
        ),
        ("The atomic number of {s} is {a}.", "{s} has atomic number {a}."),
        (
            "{s} is number {a} in the periodic table.",
            "{a} is the atomic number of {s}.",
            "An atom of {s} has {a} protons.",
            "The atomic number of the {s} atom is {a}.",
        ),
    ),
    "collective": Relation(
        ("What is a group of {s} called?", "What do you call a group of {s}?", "Name a group of {s}."),
        (
            "Which word describes a group of {s}?",
            "How do you call a group of {s}?",
            "Which word means a group of {s}?",
            "What is the word for many {s} together?",
        ),
        ("A group of {s} is called a {a}.", "Many {s} together make a {a}."),
        (
            "The word for a group of {s} is {a}.",
            "A {a} is a group of {s}.",
            "A group of {s} is a {a}.",
            "The word {a} means a group of {s}.",
        ),
    ),
    "baby": Relation(
        ("What is a baby {s} called?", "What do you call a young {s}?", "Name a baby {s}."),
        (
            "Which word means a young {s}?",
            "What do you call a baby {s}?",
            "How do you call a young {s}?",
            "What is the word for a baby {s}?",
        ),
        ("A baby {s} is called a {a}.", "A young {s} is a {a}."),
        (
            "The word for a young {s} is {a}.",
            "A baby {s} is a {a}.",
            "A young {s} is called a {a}.",
            "A {a} is a young {s}.",
        ),
    ),
    "female": Relation(
        ("What is the female of {s}?", "What is the female form of {s}?", "Name the female of {s}."),
        (
            "Which word is the female counterpart of {s}?",
            "What is a female {s} called?",
            "Which word is the female form of {s}?",
            "What do you call a female {s}?",
        ),
        ("The female of {s} is {a}.", "A female {s} is called {a}."),
        (
            "The female counterpart of {s} is {a}.",
            "The female form of {s} is {a}.",
            "{a} is the female of {s}.",
            "{a} is the female form of {s}.",
        ),
    ),
    "opposite": Relation(
        ("What is the opposite of {s}?", "Which word means the opposite of {s}?", "Name the opposite of {s}."),
        (
            "What is the antonym of {s}?",
            "What word means the opposite of {s}?",
            "Which word is the opposite of {s}?",
            "What is the word for the opposite of {s}?",
        ),
        ("The opposite of {s} is {a}.", "{a} is the opposite of {s}."),
        (
            "The antonym of {s} is {a}.",
            "The word {a} means the opposite of {s}.",
            "The opposite word of {s} is {a}.",
            "{a} means the opposite of {s}.",
        ),
    ),
    "zodiac_next": Relation(
        (
            "Which Chinese year follows the year of the {s}?",
            "What comes after the year of the {s}?",
            "Name the Chinese year after the {s}.",
        ),
        (
            "In the Chinese calendar, what follows the {s}?",
            "What year follows the year of the {s}?",
            "Which Chinese year comes after the {s}?",
            "What follows the year of the {s}?",
        ),
        ("The year of the {a} follows the year of the {s}.", "After the {s} comes the {a}."),
        (
            "In the Chinese calendar the {a} follows the {s}.",
            "The {a} follows the {s}.",
            "The year after the {s} is the year of the {a}.",
            "After the year of the {s} comes the year of the {a}.",
        ),
    ),
    "president_next": Relation(
        ("Who was president after {s}?", "Who succeeded {s} as president?", "Name the president who followed {s}."),
        (
            "Which president came right after {s}?",
            "Who followed {s} as president?",
            "Which president followed {s}?",
            "Who was the president after {s}?",
        ),
        ("{a} was president after {s}.", "{a} succeeded {s} as president."),
        (
            "The president after {s} was {a}.",
            "{a} followed {s} as president.",
            "After {s}, {a} was president.",
            "After {s} the president was {a}.",
        ),
    ),
    "monarch_next": Relation(
        ("Who reigned after {s}?", "Who succeeded {s} on the throne?", "Name the monarch who followed {s}."),
        (
            "Which English monarch came after {s}?",
            "Which monarch followed {s}?",
            "Who followed {s} on the throne?",
            "Who was the monarch after {s}?",
        ),
        ("{a} reigned after {s}.", "{a} succeeded {s} on the throne."),
        (
            "The monarch after {s} was {a}.",
            "{a} followed {s} on the throne.",
            "After {s}, {a} reigned.",
            "{a} was monarch after {s}.",
        ),
    ),
    "sum": Relation(
        ("What is {s}?", "How much is {s}?", "Compute {s}."),
        ("What do you get for {s}?", "What does {s} make?", "How much does {s} make?", "What number is {s}?"),
        ("{s} is {a}.", "{s} equals {a}."),
        ("{s} makes {a}.", "{a} is {s}.", "{a} equals {s}.", "{s} is the number {a}."),
    ),
    "product": Relation(
        ("What is {s}?", "How much is {s}?", "Compute {s}."),
        ("What do you get for {s}?", "What does {s} make?", "How much does {s} make?", "What number is {s}?"),
        ("{s} is {a}.", "{s} equals {a}."),
        ("{s} makes {a}.", "{a} is {s}.", "{a} equals {s}.", "{s} is the number {a}."),
    ),
}

# Held-out phrasings per fact that the held-out text benchmarks can draw (every relation has at least this many).
HELDOUT_PHRASINGS = min(min(len(r.heldout_questions), len(r.heldout_statements)) for r in RELATIONS.values())


@dataclass(frozen=True)
class Fact:
    """One knowledge item: ``relation(subject) = answer``; ``aliases`` are other accepted answers."""

    id: str
    relation: str
    subject: str
    answer: str
    aliases: tuple[str, ...] = ()
    source: str = ""

    def question(self, template: str) -> str:
        return _sentence(template.format(s=self.subject, a=self.answer))

    def statement(self, template: str) -> str:
        return _sentence(template.format(s=self.subject, a=self.answer))

    @property
    def short_answer(self) -> str:
        return _sentence(self.answer if self.answer.endswith(".") else self.answer + ".")


def _sentence(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text[0].upper() + text[1:] if text else text


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# ---- sources --------------------------------------------------------------------------------------------
# (file, relation, subject field, answer field, plural subject?) for the quiz files
_QUIZ_TABLES = (
    ("africa", "capital", 0, 1),
    ("america", "capital", 0, 1),
    ("asia", "capital", 0, 1),
    ("europe", "capital", 0, 1),
    ("province", "capital", 0, 1),
    ("state", "capital", 0, 1),
    ("state", "state_abbrev", 0, 2),
    ("state", "state_flower", 0, 3),
    ("elements", "element_symbol", 3, 0),
    ("elements", "element_number", 3, 1),
    ("collectives", "collective", 0, 1),
    ("babies", "baby", 1, 0),
    ("sexes", "female", 0, 1),
    ("posneg", "opposite", 0, 1),
    ("chinese", "zodiac_next", 0, 1),
    ("pres", "president_next", 0, 3),
    ("sov", "monarch_next", 0, 2),
)
_LOWER_SUBJECTS = {
    "collective",
    "baby",
    "female",
    "opposite",
    "zodiac_next",
    "element_symbol",
    "element_number",
}
_LOWER_ANSWERS = {"collective", "baby", "female", "opposite", "zodiac_next", "state_flower"}


def quiz_facts(quiz_dir: Path = QUIZ_DIR) -> list[Fact]:
    if not quiz_dir.is_dir():
        raise ValueError(f"bsdgames quiz files not found at {quiz_dir} (apt-get install bsdgames)")
    facts = []
    for name, relation, si, ai in _QUIZ_TABLES:
        for row in read_quiz_file(quiz_dir / name):
            if max(si, ai) >= len(row):
                continue
            subject, _ = parse_pattern(row[si])
            answer, aliases = parse_pattern(row[ai])
            subject = subject.lower() if relation in _LOWER_SUBJECTS else subject
            answer = answer.lower() if relation in _LOWER_ANSWERS else answer
            if not subject or not answer or answer.lower() in {"none", "gok"}:
                continue
            facts.append(
                Fact(f"{relation}:{_slug(subject)}", relation, subject, answer, aliases, f"quiz/{name}")
            )
    return facts


def countryinfo_facts() -> list[Fact]:
    from countryinfo import all_countries

    facts = []
    for country in all_countries():
        info = country.info()
        name = _clean(str(info.get("name") or ""))
        if not name:
            continue
        capital, region = info.get("capital") or "", info.get("region") or ""
        capital = _clean(capital[0] if isinstance(capital, list) and capital else str(capital))
        region = _clean(str(region))
        if capital:
            facts.append(Fact(f"capital:{_slug(name)}", "capital", name, capital, (capital,), "countryinfo"))
        if region:
            facts.append(Fact(f"region:{_slug(name)}", "region", name, region, (region,), "countryinfo"))
    return facts


def arithmetic_facts(seed: int, n_each: int = 60) -> list[Fact]:
    """Small sums and products ("7 plus 5"); voices read the digits as words, the tokenizer splits digits."""
    rng = random.Random(f"arith-{seed}")
    facts = []
    pairs = sorted({(a, b) for a in range(2, 13) for b in range(2, 13) if a <= b})
    for a, b in rng.sample(pairs, min(n_each, len(pairs))):
        facts.append(Fact(f"sum:{a}_{b}", "sum", f"{a} plus {b}", str(a + b), (), "arithmetic"))
    for a, b in rng.sample(pairs, min(n_each, len(pairs))):
        facts.append(Fact(f"product:{a}_{b}", "product", f"{a} times {b}", str(a * b), (), "arithmetic"))
    return facts


def load_facts(seed: int, max_facts: int, quiz_dir: Path = QUIZ_DIR) -> list[Fact]:
    """All facts, de-duplicated by id (quiz files win over countryinfo), then a stratified draw of
    ``max_facts`` (round-robin over relations so small relations survive), sorted by id."""
    by_id: dict[str, Fact] = {}
    for fact in [*quiz_facts(quiz_dir), *countryinfo_facts(), *arithmetic_facts(seed)]:
        by_id.setdefault(fact.id, fact)
    by_relation: dict[str, list[Fact]] = defaultdict(list)
    for fact in sorted(by_id.values(), key=lambda f: f.id):
        by_relation[fact.relation].append(fact)
    rng = random.Random(f"facts-{seed}")
    for relation in sorted(by_relation):
        rng.shuffle(by_relation[relation])
    chosen: list[Fact] = []
    queues = [by_relation[r] for r in sorted(by_relation)]
    while len(chosen) < max_facts and any(queues):
        for q in queues:
            if q and len(chosen) < max_facts:
                chosen.append(q.pop())
    log.info("facts: %d chosen of %d (%d relations)", len(chosen), len(by_id), len(by_relation))
    return sorted(chosen, key=lambda f: f.id)


def split_facts(
    facts: list[Fact], seed: int, validation_fraction: float, heldout_fraction: float
) -> dict[str, list[Fact]]:
    """Assign each fact to exactly one split, stratified by relation (every relation is in every split)."""
    rng = random.Random(f"split-{seed}")
    out: dict[str, list[Fact]] = {"train": [], "validation": [], "heldout": []}
    by_relation: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        by_relation[f.relation].append(f)
    for relation in sorted(by_relation):
        group = sorted(by_relation[relation], key=lambda f: f.id)
        rng.shuffle(group)
        n_held = max(1, round(len(group) * heldout_fraction)) if len(group) >= 3 else 0
        n_val = max(1, round(len(group) * validation_fraction)) if len(group) >= 3 else 0
        out["heldout"] += group[:n_held]
        out["validation"] += group[n_held : n_held + n_val]
        out["train"] += group[n_held + n_val :]
    return {k: sorted(v, key=lambda f: f.id) for k, v in out.items()}


def poetry_lines(quiz_dir: Path = QUIZ_DIR) -> list[str]:
    """Natural sentences (first two lines of each poem / Shakespeare quote) for ASR and TTS."""
    lines = []
    for name in ("poetry", "bard"):
        for row in read_quiz_file(quiz_dir / name):
            for pattern in row[:2]:
                text, _ = parse_pattern(pattern)
                text = text.strip(" ,;:")
                if len(text.split()) >= 4 and re.fullmatch(r"[A-Za-z0-9 ,.;:'!?-]+", text):
                    lines.append(_sentence(text if text[-1] in ".!?" else text + "."))
    return sorted(dict.fromkeys(lines))

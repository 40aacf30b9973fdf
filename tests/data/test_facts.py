import dataclasses
from collections import Counter

import pytest

from deeptalk.data.facts import (
    HELDOUT_PHRASINGS,
    RELATIONS,
    Relation,
    load_facts,
    parse_pattern,
    poetry_lines,
    read_quiz_file,
    split_facts,
)
from deeptalk.data.text_tokenizer import split_words


@pytest.mark.parametrize(
    "pattern, canonical, readings",
    [
        ("Vienna|Wien", "Vienna", {"Vienna", "Wien"}),
        ("Cal{if{ornia}}|CA", "California", {"California", "Calif", "Cal", "CA"}),
        ("Andorra la V[ell|iej]a", "Andorra la Vella", {"Andorra la Vella", "Andorra la Vieja"}),
        ("{the }Federation", "the Federation", {"the Federation", "Federation"}),
        (
            "To be{,} or not to be{\\:}",
            "To be, or not to be:",
            {"To be, or not to be:", "To be or not to be"},
        ),
    ],
)
def test_parse_pattern_alternatives_and_optionals(pattern, canonical, readings):
    got_canonical, got_readings = parse_pattern(pattern)
    assert got_canonical == canonical
    assert readings <= set(got_readings)


def test_parse_pattern_folds_quiz_accents_to_ascii():
    assert parse_pattern("Asunci'on")[0] == "Asuncion"
    assert parse_pattern("Bogot'\x08a")[0] == "Bogota"
    assert parse_pattern("St. John's")[0] == "St. John's"


def test_read_quiz_file_joins_continued_lines_and_respects_nesting(tmp_path):
    f = tmp_path / "quiz"
    f.write_text("a{:b}:c\\\n:d\nx:y\n\n")
    assert read_quiz_file(f) == [["a{:b}", "c", "d"], ["x", "y"]]


def test_load_facts_is_deterministic_stratified_and_clean():
    facts = load_facts(seed=3, max_facts=300)
    assert facts == load_facts(seed=3, max_facts=300)
    assert len(facts) == 300
    assert len({f.id for f in facts}) == 300
    per_relation = Counter(f.relation for f in facts)
    assert set(per_relation) == set(RELATIONS)  # round-robin keeps even the 12-item zodiac relation
    for f in facts:
        assert f.subject and f.answer
        assert (f.subject + f.answer).isascii() and (f.subject + f.answer).isprintable()
    known = {f.id: f for f in load_facts(seed=0, max_facts=100_000)}
    assert known["capital:france"].answer == "Paris"
    assert known["element_symbol:hydrogen"].answer == "H"
    assert known["capital:california"].answer == "Sacramento"


def test_split_facts_partitions_every_relation():
    facts = load_facts(seed=0, max_facts=400)
    splits = split_facts(facts, seed=0, validation_fraction=0.1, heldout_fraction=0.15)
    ids = {k: {f.id for f in v} for k, v in splits.items()}
    assert not ids["train"] & ids["heldout"] and not ids["train"] & ids["validation"]
    assert not ids["validation"] & ids["heldout"]
    assert set().union(*ids.values()) == {f.id for f in facts}
    assert {f.relation for f in splits["heldout"]} == {f.relation for f in facts}
    assert 0.1 < len(splits["heldout"]) / len(facts) < 0.25


def test_heldout_templates_are_distinct_from_training_templates():
    for name, rel in RELATIONS.items():
        assert not set(rel.heldout_questions) & set(rel.train_questions), name
        assert not set(rel.heldout_statements) & set(rel.train_statements), name
        assert len(rel.train_questions) >= 2
        assert rel.heldout_question == rel.heldout_questions[0]
        assert len(set(rel.heldout_questions)) == len(rel.heldout_questions) >= HELDOUT_PHRASINGS
        assert len(set(rel.heldout_statements)) == len(rel.heldout_statements) >= HELDOUT_PHRASINGS
    with pytest.raises(ValueError, match="templates"):
        Relation(("a",), ("b",), ("c",), ("d",))
    with pytest.raises(ValueError, match="also a training template"):
        Relation(("a", "b"), ("b",), ("c",), ("d",))


def _words(template: str) -> set[str]:
    return set(split_words(template.replace("{s}", " ").replace("{a}", " "))) - set(".,;:!?")


def test_extra_heldout_phrasings_use_only_words_of_the_training_phrasings():
    """The extra held-out phrasings (all but the first, which spoken questions use) recombine words the text LM
    read: a word it never read would measure an untrained embedding, not forgotten knowledge."""
    known = set().union(*(_words(t) for r in RELATIONS.values() for t in r.train_questions + r.train_statements))
    for name, rel in RELATIONS.items():
        for template in rel.heldout_questions[1:] + rel.heldout_statements[1:]:
            assert _words(template) <= known, (name, template, _words(template) - known)


def test_poetry_lines_are_short_plain_sentences():
    lines = poetry_lines()
    assert len(lines) > 100
    assert all(line[-1] in ".!?" and line.isascii() for line in lines)


@pytest.mark.parametrize("profile", ["tiny", "small"])
def test_presets_give_at_least_200_distinct_heldout_typed_questions(profile):
    """Issue 11: the held-out text benchmark is big enough for a ~3-point standard error, and no question is asked
    twice (round r asks every held-out fact once in held-out phrasing r). Issue 20: several phrasings per fact."""
    from deeptalk.config import load_config
    from deeptalk.data.corpus import plan_samples, sentence_pools
    from deeptalk.data.facts import load_facts, split_facts

    cfg = load_config("/nonexistent/params.yaml", profile=profile)
    data = cfg.data
    by_split = split_facts(load_facts(data.seed, data.max_facts), data.seed, data.validation_fraction,
                           data.heldout_fraction)
    samples, _ = plan_samples(data, by_split, sentence_pools(by_split, data.seed, data.max_words))
    held = [s for s in samples if s.task == "tqa" and s.split == "heldout"]
    questions = [s.turns[0].text for s in held]
    assert len(questions) >= 200 and len(set(questions)) == len(questions)
    n_facts = len(by_split["heldout"])
    first_round = sorted(held, key=lambda s: s.id)[:n_facts]
    assert len({s.fact_id for s in first_round}) == len(first_round)  # a cap of n_facts asks each fact once
    for s in first_round:  # the first round asks in the phrasing the spoken held-out questions use
        fact = next(f for f in by_split["heldout"] if f.id == s.fact_id)
        assert s.turns[0].text == fact.question(RELATIONS[fact.relation].heldout_question)
    assert 0 < cfg.evaluation.max_text_qa <= len(questions)
    too_many = dataclasses.replace(
        data, counts={**data.counts, "tqa": (10, 2, n_facts * HELDOUT_PHRASINGS + 1)})
    with pytest.raises(ValueError, match="held-out typed questions but there are only"):
        plan_samples(too_many, by_split, sentence_pools(by_split, data.seed, data.max_words))


def test_heldout_text_states_every_heldout_fact_in_every_heldout_phrasing():
    from deeptalk.data.corpus import _text_samples

    by_split = split_facts(load_facts(seed=0, max_facts=200), seed=0, validation_fraction=0.1, heldout_fraction=0.2)
    samples = _text_samples(by_split)
    held = sorted((s for s in samples if s.split == "heldout"), key=lambda s: s.id)
    assert len(held) == len(by_split["heldout"]) * HELDOUT_PHRASINGS == len({s.turns[0].text for s in held})
    assert {s.fact_id for s in held[: len(by_split["heldout"])]} == {f.id for f in by_split["heldout"]}
    assert len({s.fact_id.split(":")[0] for s in held[:12]}) >= 5  # shuffled: a small cap spans the relations
    trained = {t.text for s in samples if s.split == "train" for t in s.turns}
    assert not trained & {s.turns[0].text for s in held}

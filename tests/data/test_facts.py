import dataclasses
from collections import Counter

import pytest

from deeptalk.data.facts import (
    RELATIONS,
    Relation,
    load_facts,
    parse_pattern,
    poetry_lines,
    read_quiz_file,
    split_facts,
)


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
        assert rel.heldout_question not in rel.train_questions, name
        assert rel.heldout_statement not in rel.train_statements, name
        assert len(rel.train_questions) >= 2
    with pytest.raises(ValueError, match="templates"):
        Relation(("a", "b"), ("c", "d"))


def test_poetry_lines_are_short_plain_sentences():
    lines = poetry_lines()
    assert len(lines) > 100
    assert all(line[-1] in ".!?" and line.isascii() for line in lines)


@pytest.mark.parametrize("profile", ["tiny", "small"])
def test_presets_give_at_least_200_distinct_heldout_typed_questions(profile):
    """Issue 11: the held-out text benchmark is big enough for a ~3-point standard error, and each question asks
    a different fact (held-out questions have one phrasing, so a repeated fact would repeat the question)."""
    from deeptalk.config import load_config
    from deeptalk.data.corpus import plan_samples, sentence_pools
    from deeptalk.data.facts import load_facts, split_facts

    cfg = load_config("/nonexistent/params.yaml", profile=profile)
    data = cfg.data
    by_split = split_facts(load_facts(data.seed, data.max_facts), data.seed, data.validation_fraction,
                           data.heldout_fraction)
    samples, _ = plan_samples(data, by_split, sentence_pools(by_split, data.seed, data.max_words))
    questions = [s.turns[0].text for s in samples if s.task == "tqa" and s.split == "heldout"]
    assert len(questions) >= 200 and len(set(questions)) == len(questions)
    assert cfg.evaluation.max_text_qa >= 200  # the evaluation reads all of them
    too_many = dataclasses.replace(data, counts={**data.counts, "tqa": (10, 2, len(by_split["heldout"]) + 1)})
    with pytest.raises(ValueError, match="held-out typed questions but there are only"):
        plan_samples(too_many, by_split, sentence_pools(by_split, data.seed, data.max_words))

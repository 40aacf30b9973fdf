import pytest

from deeptalk.evaluation.answers import accuracy, contains_reference, exact_match


def test_contains_whole_words_after_normalisation():
    assert contains_reference("The capital of France is Paris.", ["paris"])
    assert contains_reference("It is New York, I think", ["new york"])
    assert not contains_reference("Parisian food", ["paris"])  # not a whole word
    assert not contains_reference("york new", ["new york"])  # order matters
    assert contains_reference("four", ["4"])  # numbers are spelled out on both sides
    assert contains_reference("kitten", ["", "kitten"])  # empty references are ignored


def test_exact_and_accuracy():
    assert exact_match("Paris!", ["paris", "city of light"])
    assert not exact_match("in Paris", ["paris"])
    assert not exact_match("", [""])
    assert accuracy([True, False, True, True]) == 0.75
    with pytest.raises(ValueError, match="zero items"):
        accuracy([])
    with pytest.raises(ValueError, match="at least one reference"):
        contains_reference("x", [])

"""Answer matching for question answering: the containment rule used by every QA metric here.

An answer is **correct** when, after :func:`deeptalk.evaluation.asr_scorer.normalize_text` (lower case, numbers
spelled out, punctuation removed), the words of one reference (the fact's answer or one of its aliases) occur
as a contiguous word sequence in the answer. This is the usual spoken-QA metric (LLaMA-Omni, GLM-4-Voice;
paper.md §4.2) and tolerates full-sentence answers ("the capital of france is paris" contains "paris").
**Exact** means the normalised answer equals a normalised reference.
"""

from __future__ import annotations

from collections.abc import Sequence

from deeptalk.evaluation.asr_scorer import normalize_text


def _words(text: str) -> list[str]:
    return normalize_text(text).split()


def contains_reference(answer: str, references: Sequence[str]) -> bool:
    """True when some non-empty normalised reference is a contiguous word span of the normalised answer."""
    if not references:
        raise ValueError("contains_reference needs at least one reference answer")
    words = _words(answer)
    for ref in references:
        target = _words(ref)
        if not target:
            continue
        n = len(target)
        if any(words[i : i + n] == target for i in range(len(words) - n + 1)):
            return True
    return False


def exact_match(answer: str, references: Sequence[str]) -> bool:
    if not references:
        raise ValueError("exact_match needs at least one reference answer")
    got = normalize_text(answer)
    return any(got == normalize_text(ref) and got for ref in references)


def accuracy(flags: Sequence[bool]) -> float:
    """Fraction of true flags; an empty benchmark is an error rather than a silent 0 or 1."""
    if not flags:
        raise ValueError("accuracy over zero items is undefined")
    return sum(bool(f) for f in flags) / len(flags)

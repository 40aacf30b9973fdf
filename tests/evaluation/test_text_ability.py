import dataclasses
import json
import math
from dataclasses import dataclass, field

import pytest
import torch

from deeptalk.data.dataset import collate
from deeptalk.data.text_tokenizer import TextTokenizer
from deeptalk.evaluation.heldout import QAItem
from deeptalk.evaluation.text_ability import (
    GREEDY,
    TextAbility,
    TextOnlyLM,
    evaluate_text_ability,
    ItemScores,
    greedy_text_answer,
    relative_drop_pct,
    text_nll,
    text_qa,
    text_sequences,
)
from deeptalk.inference.generator import Generator
from deeptalk.tokens import TokenLayout
from tests.evaluation._pipeline import random_model

TOK = TextTokenizer.build(["what is the capital of france", "paris is the capital of france",
                           "two plus two is four", "how many legs does a cat have"])
LAYOUT = TokenLayout(TOK.vocab_size, n_audio_streams=3, codebook_size=16)


def _ability(qa, answer_ppl, ppl, bench="b"):
    return TextAbility(qa_acc=qa, qa_exact=qa, n_qa=10, answer_ppl=answer_ppl, n_answer_tokens=20, ppl=ppl,
                       n_tokens=100, benchmark=bench)


def test_relative_drop_exact_numbers():
    drops = relative_drop_pct(_ability(0.8, 2.0, 4.0), _ability(0.6, 2.5, 5.0))
    assert drops["drop_pct_qa_acc"] == pytest.approx(25.0)  # (0.8 - 0.6) / 0.8
    assert drops["drop_pct_inv_answer_ppl"] == pytest.approx(20.0)  # 1 - 2 / 2.5
    assert drops["drop_pct_inv_ppl"] == pytest.approx(20.0)  # (1/4 - 1/5) / (1/4) = 1 - 4/5
    assert drops["drop_pct"] == pytest.approx(65.0 / 3)
    better = relative_drop_pct(_ability(0.5, 2.0, 4.0), _ability(0.75, 2.0, 2.0))
    assert better["drop_pct"] == pytest.approx((-50.0 + 0.0 - 100.0) / 3)


def test_relative_drop_skips_zero_base_and_rejects_other_benchmarks():
    drops = relative_drop_pct(_ability(0.0, 2.0, 2.0), _ability(0.5, 2.0, 4.0))
    assert drops["drop_pct_qa_acc"] is None and drops["drop_pct"] == pytest.approx((0.0 + 50.0) / 2)
    with pytest.raises(ValueError, match="different benchmarks"):
        relative_drop_pct(_ability(0.5, 2.0, 2.0, "a"), _ability(0.5, 2.0, 2.0, "b"))


def test_qa_drop_needs_enough_base_answers():
    lucky = relative_drop_pct(_ability(0.2, 2.0, 4.0), _ability(0.0, 2.5, 4.0))  # base: 2 of 10 correct
    assert lucky["drop_pct_qa_acc"] is None and lucky["drop_pct"] == pytest.approx(10.0)  # (20 + 0) / 2
    counted = relative_drop_pct(_ability(0.2, 2.0, 4.0), _ability(0.0, 2.5, 4.0), min_base_qa_correct=2)
    assert counted["drop_pct_qa_acc"] == pytest.approx(100.0) and counted["drop_pct"] == pytest.approx(40.0)


@dataclass
class _Cache:
    def batch_select_indices(self, index):  # text-only decoding never drops an item
        raise AssertionError("unexpected")


@dataclass
class ScriptedLM:
    """Answers every question with ``script`` then EOT (stateless: after script[j] comes script[j+1], after any
    other token script[0]; the script's tokens are distinct); audio ids get even larger logits, so only a decoder
    restricted to the text vocabulary can produce the script."""

    layout: TokenLayout
    script: list[int]
    training: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __call__(self, batch, cache=None, use_cache=False, logits="all", text_only=False):
        assert text_only, "text ability is measured with the model reading the text stream alone"
        B, T, _ = batch.input_ids.shape
        out = torch.zeros(B, T, self.layout.vocab_size)
        out[..., self.layout.text_block_size:] = 50.0  # audio blocks win an unrestricted argmax
        out[..., self.layout.text_special("PAD_T")] = 40.0  # a text special that is not allowed either
        following = {a: b for a, b in zip(self.script, [*self.script[1:], self.layout.text_special("EOT")])}
        for b in range(B):
            for t in range(T):
                out[b, t, following.get(int(batch.input_ids[b, t, self.layout.text_stream]), self.script[0])] = 30.0
        return type("Out", (), {"logits": out[:, -1:] if logits == "last" else out, "cache": _Cache()})()

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def test_text_qa_scores_scripted_answers():
    model = ScriptedLM(LAYOUT, TOK.encode("paris is the capital"))
    items = [QAItem("a", "what is the capital of france", ("paris",)),
             QAItem("b", "two plus two", ("four", "4")),
             QAItem("c", "what is the capital of france", ("paris is the capital",))]
    contained, exact, answers = text_qa(model, TOK, items, max_tokens=8)
    assert answers == ["paris is the capital"] * 3
    assert contained == [True, False, True]
    assert exact == [False, False, True]
    short = greedy_text_answer(Generator(TextOnlyLM(model), GREEDY), LAYOUT, TOK.encode("two plus two"), max_tokens=2)
    assert short == TOK.encode("paris is")


def test_restricted_decoding_never_emits_audio_ids_on_a_real_model():
    torch.manual_seed(0)
    model = random_model(LAYOUT, seed=3)
    with torch.no_grad():  # make the audio rows of the tied head dominate every position's logits
        model.embed_tokens.weight[LAYOUT.text_block_size:] *= 200.0
    gen = Generator(model, GREEDY)
    q = TOK.encode("what is the capital of france")
    from deeptalk.evaluation.text_ability import text_prompt

    prompt = text_prompt(LAYOUT, q)
    from deeptalk.batch import SpeechBatch

    logits = model(SpeechBatch(prompt.input_ids[None], torch.ones(1, len(prompt.input_ids), dtype=torch.long))).logits
    assert int(logits[0, -1].argmax()) >= LAYOUT.text_block_size  # unrestricted decoding would pick audio
    ids = greedy_text_answer(gen, LAYOUT, q, max_tokens=12)
    assert ids and all(0 <= i < LAYOUT.text_vocab_size for i in ids)


def test_batched_greedy_answers_equal_one_by_one_answers():
    """Issue 20: the enlarged QA set is decoded in batches; each answer is the generator's greedy answer."""
    from deeptalk.evaluation.text_ability import greedy_text_answers

    model = random_model(LAYOUT, seed=6)
    questions = [TOK.encode(q) for q in ("what is the capital of france", "two plus two", "how many legs does a cat have",
                                         "cat", "what is the capital of france two plus two is four")]
    gen = Generator(TextOnlyLM(model), GREEDY)
    for max_tokens in (1, 5, 12):
        expected = [greedy_text_answer(gen, LAYOUT, q, max_tokens) for q in questions]
        assert greedy_text_answers(model, LAYOUT, questions, max_tokens, batch_size=2) == expected
        assert greedy_text_answers(model, LAYOUT, questions, max_tokens) == expected
    assert any(len(a) == 12 for a in expected)  # some answers run to the cap, so rows grow unevenly
    scripted = ScriptedLM(LAYOUT, TOK.encode("paris is the capital"))
    assert greedy_text_answers(scripted, LAYOUT, questions[:2], 3) == [TOK.encode("paris is the")] * 2


def test_text_nll_matches_the_training_loss():
    model = random_model(LAYOUT, seed=4)
    sentences = ["paris is the capital of france", "two plus two is four", "a cat"]
    packed = text_sequences(LAYOUT, TOK, sentences)
    total, count = text_nll(model, packed, batch_size=2)
    assert count == sum(len(TOK.encode(s)) + 1 for s in sentences)  # every word + EOT
    with torch.no_grad():
        out = model(collate(packed, LAYOUT), text_only=True)
    assert total / count == pytest.approx(float(out.stream_losses["text"]), rel=1e-5)


def test_evaluate_text_ability_on_a_random_tiny_speech_lm():
    model = random_model(LAYOUT, seed=5)
    items = [QAItem("a", "what is the capital of france", ("paris",), answer="paris is the capital."),
             QAItem("b", "two plus two", ("four",))]
    sentences = ["paris is the capital of france", "two plus two is four"]
    result = evaluate_text_ability(model, TOK, items, sentences, max_answer_tokens=4)
    again = evaluate_text_ability(model, TOK, items, sentences, max_answer_tokens=4)
    assert result == again  # greedy and teacher-forced: deterministic
    assert 0.0 <= result.qa_acc <= 1.0 and result.n_qa == 2
    assert math.isfinite(result.ppl) and result.ppl > 1.0
    assert result.n_tokens == (6 + 1) + (5 + 1)  # words + EOT per sentence
    assert result.n_answer_tokens == (5 + 1) + (1 + 1)  # "paris is the capital ." + EOT, "four" + EOT
    assert math.isfinite(result.answer_ppl) and result.answer_ppl > 1.0
    assert TextAbility.from_dict(result.to_dict()) == result
    assert TextAbility.from_dict(json.loads(json.dumps(result.to_dict()))) == result  # as stored on disk
    assert result.items.qa_clusters == ("", "") and len(result.items.text_nll) == 2
    assert sum(result.items.answer_tokens) == result.n_answer_tokens and sum(result.items.text_tokens) == result.n_tokens
    grouped = evaluate_text_ability(model, TOK, [dataclasses.replace(q, fact_id="f1") for q in items], sentences,
                                    max_answer_tokens=4, sentence_facts=("f1", "f2"))
    assert grouped.items.qa_clusters == ("f1", "f1") and grouped.items.text_clusters == ("f1", "f2")
    with pytest.raises(ValueError, match="sentence fact ids"):
        evaluate_text_ability(model, TOK, items, sentences, sentence_facts=("f1",))
    assert relative_drop_pct(result, again)["drop_pct_inv_answer_ppl"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="needs held-out"):
        evaluate_text_ability(model, TOK, [], sentences)
    no_sentences = evaluate_text_ability(model, TOK, items, [], max_answer_tokens=4)
    no_sentences = TextAbility.from_dict({**no_sentences.to_dict(), "benchmark": result.benchmark, "items": None})
    assert no_sentences.ppl is None and no_sentences.answer_ppl == pytest.approx(result.answer_ppl)
    drops = relative_drop_pct(result, no_sentences)
    assert drops["drop_pct_inv_ppl"] is None and drops["drop_pct"] == pytest.approx(0.0)


def _items(correct, answer_nll, text_nll, qa_clusters=None, text_clusters=None, tokens=2):
    return ItemScores(
        qa_correct=tuple(correct), answer_nll=tuple(answer_nll), answer_tokens=(tokens,) * len(correct),
        qa_clusters=tuple(qa_clusters or [f"q{i}" for i in range(len(correct))]),
        text_nll=tuple(text_nll), text_tokens=(tokens,) * len(text_nll),
        text_clusters=tuple(text_clusters or [f"s{i}" for i in range(len(text_nll))]))


def _scored(items: ItemScores, bench="b") -> TextAbility:
    """A TextAbility whose figures and own errors are those of ``items`` (as evaluate_text_ability makes them)."""
    from deeptalk.evaluation.text_ability import own_standard_errors

    n_answer, n_text = sum(items.answer_tokens), sum(items.text_tokens)
    errors = own_standard_errors(items)
    acc = sum(items.qa_correct) / len(items.qa_correct)
    return TextAbility(qa_acc=acc, qa_exact=acc, n_qa=len(items.qa_correct),
                       answer_ppl=math.exp(sum(items.answer_nll) / n_answer), n_answer_tokens=n_answer,
                       ppl=math.exp(sum(items.text_nll) / n_text), n_tokens=n_text, benchmark=bench,
                       qa_acc_se=errors["qa_acc"], answer_ppl_se=errors["answer_ppl"], ppl_se=errors["ppl"],
                       items=items)


def _spread_items(n=60, seed=0):
    """Items of very unequal difficulty: a wide per-item spread that base and model share."""
    import random

    rng = random.Random(seed)
    correct = [rng.random() < 0.6 for _ in range(n)]
    answer = [rng.uniform(0.2, 8.0) for _ in range(n)]
    text = [rng.uniform(0.5, 12.0) for _ in range(n)]
    return correct, answer, text


def test_paired_errors_cancel_what_base_and_model_share():
    """Issue 20: the model scores the same items, so a uniform shift has no item noise in its drop; two
    independent errors would report one anyway."""
    correct, answer, text = _spread_items()
    base = _scored(_items(correct, answer, text))
    shifted = _scored(_items(correct, [a + 0.2 for a in answer], [t + 0.4 for t in text]))  # +0.1 / +0.2 per token
    drops = relative_drop_pct(base, shifted)
    assert drops["drop_pct_inv_answer_ppl"] == pytest.approx(100 * (1 - math.exp(-0.1)))
    assert drops["drop_pct_inv_answer_ppl_se"] == pytest.approx(0.0, abs=1e-9)  # constant in every resample
    assert drops["drop_pct_inv_ppl_se"] == pytest.approx(0.0, abs=1e-9)
    assert drops["drop_pct_qa_acc_se"] == pytest.approx(0.0, abs=1e-9)  # same answers right: QA drop 0 always
    assert drops["drop_pct_se"] == pytest.approx(0.0, abs=1e-9)
    assert drops["drop_pct_inv_answer_ppl_se_unpaired"] > 5 and drops["drop_pct_se_unpaired"] > 2
    # a model that forgets some items and not others has a paired error, still below the unpaired one
    rng_flip = [c and i % 4 != 0 for i, c in enumerate(correct)]
    noisy = _scored(_items(rng_flip, [a + (1.5 if i % 3 else 0.0) for i, a in enumerate(answer)], text))
    noisy_drops = relative_drop_pct(base, noisy)
    for term in ("qa_acc", "inv_answer_ppl"):
        assert 0 < noisy_drops[f"drop_pct_{term}_se"] < noisy_drops[f"drop_pct_{term}_se_unpaired"]
    assert relative_drop_pct(base, noisy) == noisy_drops  # fixed bootstrap seed: bit-identical


def test_phrasings_of_one_fact_are_resampled_together():
    """Four phrasings of each fact are not four independent items: with the fact as the cluster the error is
    that of one item per fact (the same draws of facts), not half of it."""
    correct, answer, text = _spread_items(n=40)
    flip = [c and i % 3 != 0 for i, c in enumerate(correct)]
    worse = [a + (2.0 if i % 2 else 0.0) for i, a in enumerate(answer)]
    once = relative_drop_pct(_scored(_items(correct, answer, text)), _scored(_items(flip, worse, text)))

    def times4(xs):
        return [x for x in xs for _ in range(4)]

    facts = times4([f"q{i}" for i in range(40)])
    sentence_facts = times4([f"s{i}" for i in range(40)])
    clustered = relative_drop_pct(
        _scored(_items(times4(correct), times4(answer), times4(text), facts, sentence_facts)),
        _scored(_items(times4(flip), times4(worse), times4(text), facts, sentence_facts)))
    assert clustered["drop_pct_se"] == pytest.approx(once["drop_pct_se"])
    as_items = relative_drop_pct(
        _scored(_items(times4(correct), times4(answer), times4(text))),
        _scored(_items(times4(flip), times4(worse), times4(text))))
    assert as_items["drop_pct_se"] == pytest.approx(once["drop_pct_se"] / 2, rel=0.15)  # 4x items: overstated


def test_paired_errors_need_per_item_scores_of_the_same_items():
    correct, answer, text = _spread_items()
    base = _scored(_items(correct, answer, text))
    old = dataclasses.replace(base, items=None)  # a result stored before per-item scores
    drops = relative_drop_pct(old, base)
    assert drops["drop_pct_se"] is None and drops["drop_pct_se_unpaired"] is not None
    other = _scored(_items(correct, answer, text, qa_clusters=[f"x{i}" for i in range(len(correct))]))
    with pytest.raises(ValueError, match="not over the same items"):
        relative_drop_pct(base, other)
    with pytest.raises(ValueError, match="unequal lengths"):
        ItemScores((True,), (1.0, 2.0), (1,), ("a",), (), (), ())
    assert relative_drop_pct(_ability(0.8, 2.0, 4.0), _ability(0.6, 2.5, 5.0))["drop_pct_se"] is None


def test_own_errors_shrink_with_more_facts():
    correct, answer, text = _spread_items(n=40)
    few = _scored(_items(correct, answer, text))
    many = _scored(_items(correct * 9, answer * 9, text * 9))
    for name in ("qa_acc_se", "answer_ppl_se", "ppl_se"):
        assert getattr(few, name) / getattr(many, name) == pytest.approx(3.0, rel=0.15)  # SE ∝ 1/sqrt(facts)

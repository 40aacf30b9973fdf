import dataclasses
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
    greedy_text_answer,
    ppl_standard_error,
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
    """Answers every question with ``script`` then EOT; audio ids get even larger logits, so only a decoder
    restricted to the text vocabulary can produce the script."""

    layout: TokenLayout
    script: list[int]
    calls: int = 0
    training: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __call__(self, batch, cache=None, use_cache=False, logits="all", text_only=False):
        assert text_only, "text ability is measured with the model reading the text stream alone"
        B, T, _ = batch.input_ids.shape
        step = 0 if cache is None else self.calls
        self.calls = 1 if cache is None else self.calls + 1
        out = torch.zeros(B, T, self.layout.vocab_size)
        out[..., self.layout.text_block_size:] = 50.0  # audio blocks win an unrestricted argmax
        out[..., self.layout.text_special("PAD_T")] = 40.0  # a text special that is not allowed either
        tok = self.script[step] if step < len(self.script) else self.layout.text_special("EOT")
        out[:, -1, tok] = 30.0
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
    assert relative_drop_pct(result, again)["drop_pct_inv_answer_ppl"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="needs held-out"):
        evaluate_text_ability(model, TOK, [], sentences)
    no_sentences = evaluate_text_ability(model, TOK, items, [], max_answer_tokens=4)
    no_sentences = TextAbility.from_dict({**no_sentences.to_dict(), "benchmark": result.benchmark})
    assert no_sentences.ppl is None and no_sentences.answer_ppl == pytest.approx(result.answer_ppl)
    drops = relative_drop_pct(result, no_sentences)
    assert drops["drop_pct_inv_ppl"] is None and drops["drop_pct"] == pytest.approx(0.0)


def test_standard_errors_of_accuracy_perplexity_and_drop():
    """Issue 11: each figure carries its standard error; more items → smaller error; the drop's error follows."""
    assert ppl_standard_error([(2.0, 1)]) is None  # one item: no spread to estimate
    same = [(2.0, 1)] * 10
    assert ppl_standard_error(same) == pytest.approx(0.0)  # every item at the mean
    spread = [(1.0, 1), (3.0, 1)] * 5
    few, many = ppl_standard_error(spread), ppl_standard_error(spread * 10)
    assert few > many > 0 and few / many == pytest.approx(math.sqrt(10), rel=0.1)  # SE ∝ 1/sqrt(items)
    base = dataclasses.replace(_ability(0.8, 2.0, 4.0), qa_acc_se=0.04, answer_ppl_se=0.1, ppl_se=0.2)
    model = dataclasses.replace(_ability(0.6, 2.5, 5.0), qa_acc_se=0.05, answer_ppl_se=0.1, ppl_se=0.2)
    drops = relative_drop_pct(base, model)
    # QA term: 100 * hypot(0.05 / 0.8, 0.6 * 0.04 / 0.8²)
    assert drops["drop_pct_qa_acc_se"] == pytest.approx(100 * math.hypot(0.05 / 0.8, 0.6 * 0.04 / 0.64))
    terms = [drops[f"drop_pct_{b}_se"] for b in ("qa_acc", "inv_answer_ppl", "inv_ppl")]
    assert drops["drop_pct_se"] == pytest.approx(math.sqrt(sum(t * t for t in terms)) / 3)
    assert relative_drop_pct(_ability(0.8, 2.0, 4.0), model)["drop_pct_se"] is None  # unknown stays unknown

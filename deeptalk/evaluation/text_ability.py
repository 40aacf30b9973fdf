"""Text ability of a speech LM in text-only mode, and its relative drop against the original LLM.

**Text-only mode.** Prompts are packed exactly like a text-answer training sample
(:func:`deeptalk.data.packing.pack_prompt`), and the model reads only the text stream (``text_only=True``:
plain text embeddings, no mean with the ``PAD_A`` audio streams): the speech LM read as the text LLM it extends,
which is how the reference exports its model for text benchmarks (paper.md §4.2) and how the original LLM
(``text_pretrain``) is trained. No audio goes in and none comes out.

**Benchmarks** (held-out split, see :mod:`deeptalk.evaluation.heldout`):

1. *Text QA accuracy* — greedy decoding (top-1, no repetition penalty) **restricted to the text vocabulary plus
   EOT** (audio ids and the other text specials are masked to −inf; with the full vocabulary a speech-trained
   model's new audio ids can win the argmax), at most ``max_answer_tokens`` tokens; an answer is correct when a
   reference (fact answer or alias) is contained in it as whole words (:mod:`deeptalk.evaluation.answers`).
   Score = accuracy (higher is better).
2. *Answer perplexity* — the same held-out questions, teacher-forced: NLL of the corpus answer (and its ``EOT``)
   after the question. A continuous measure of the same knowledge, informative even when greedy accuracy is 0.
3. *Text perplexity* — teacher-forced NLL on held-out sentences stating known facts in the held-out phrasing
   (and their ``EOT``), packed like the pretraining ``text`` task.

Perplexities use a softmax over the **text block** (the text stream's slice of the tied head, the same softmax
as the training loss), so rows added for audio cannot count as forgetting; ``ppl = exp(total NLL / tokens)``.
Their score is ``1 / ppl`` (the geometric-mean probability of a held-out token; higher is better).

**Relative drop** (the paper's "5.5 % drop vs the original LLM", paper.md §4.1)::

    drop_pct = mean over benchmarks b of (score_base(b) − score_model(b)) / score_base(b) × 100

over the three scores (``qa_acc``, ``1/answer_ppl``, ``1/ppl``), where *base* is the original LLM
(``models/base``: the text_pretrain output in tiny/small) evaluated with the same code on the same items. For a
perplexity the term equals ``(1 − ppl_base / ppl_model) × 100``. QA accuracy enters the mean only when the base
answers at least ``min_base_qa_correct`` held-out questions correctly (``EvalConfig``; default 5): a relative
drop from one or two lucky answers is noise (1/40 → 0/40 would read as a 100 % drop). A benchmark left out is
reported as ``None`` and logged. Negative values mean the model got better than the base.

**Standard errors** (:mod:`deeptalk.evaluation.statistics`): bootstrap over held-out *facts* (a fact's
questions in several phrasings and its sentences are resampled together), from the per-item scores every
result keeps (:class:`ItemScores`). ``qa_acc_se``, ``answer_ppl_se``, ``ppl_se``: one model's figure.
``drop_pct_<score>_se`` and ``drop_pct_se``: **paired** — base and model are scored on the same resample, so
what both find hard cancels in the drop; ``*_se_unpaired`` propagates the two models' own errors as if they
were independent samples, for comparison (issue 20 measured it 16-18 points at tiny). They say how much a
figure would move with another draw of held-out facts of the same kind, not how much it moves with the
training seed.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from deeptalk.data.dataset import collate
from deeptalk.data.packing import TokenizedSample, TokenizedTurn, pack_prompt, pack_tokenized
from deeptalk.evaluation.answers import accuracy, contains_reference, exact_match
from deeptalk.evaluation.heldout import QAItem
from deeptalk.evaluation.statistics import cluster_weights, item_clusters, standard_error
from deeptalk.identity import json_digest
from deeptalk.inference.config import SamplingConfig
from deeptalk.batch import SpeechBatch
from deeptalk.inference.generator import Generator, Prompt
from deeptalk.inference.sampling import allowed_mask
from deeptalk.tokens import IGNORE_INDEX, TokenLayout

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)

# The text_pretrain step stores text_qa_score(cfg, base)'s dict under this key of this file in models/base.
BASELINE_FILE = "text_baseline.json"
BASELINE_KEY = "text_qa"

GREEDY = SamplingConfig(text_top_k=1, text_repetition_penalty=1.0, audio_top_k=1, seed=0)
BENCHMARKS = ("qa_acc", "inv_answer_ppl", "inv_ppl")  # the scores averaged by relative_drop_pct


@dataclass(frozen=True)
class ItemScores:
    """Per-item scores behind a :class:`TextAbility`, in item order: what paired standard errors resample.
    ``*_clusters`` are the fact ids the items ask about or state (an item without one is its own cluster)."""

    qa_correct: tuple[bool, ...]  # reference contained in the greedy answer, per question
    answer_nll: tuple[float, ...]  # summed NLL of each question's answer (+ EOT)
    answer_tokens: tuple[int, ...]
    qa_clusters: tuple[str, ...]
    text_nll: tuple[float, ...]  # summed NLL of each held-out sentence (+ EOT)
    text_tokens: tuple[int, ...]
    text_clusters: tuple[str, ...]

    def __post_init__(self) -> None:
        qa = {len(self.qa_correct), len(self.answer_nll), len(self.answer_tokens), len(self.qa_clusters)}
        text = {len(self.text_nll), len(self.text_tokens), len(self.text_clusters)}
        if len(qa) != 1 or len(text) != 1:
            raise ValueError(f"per-item scores of unequal lengths (QA {sorted(qa)}, sentences {sorted(text)})")

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray | None]:
        """:meth:`TextAbility.scores` under bootstrap ``weights`` [replicates, QA items + sentences]."""
        n_qa = len(self.qa_correct)
        w_qa, w_text = weights[:, :n_qa], weights[:, n_qa:]
        with np.errstate(divide="ignore", invalid="ignore"):  # an empty resample gives NaN, dropped by the SE
            return {
                "qa_acc": w_qa @ np.asarray(self.qa_correct, float) / w_qa.sum(1),
                "inv_answer_ppl": _inv_ppl(w_qa, self.answer_nll, self.answer_tokens),
                "inv_ppl": _inv_ppl(w_text, self.text_nll, self.text_tokens) if self.text_nll else None,
            }

    def weights(self, seed: int) -> np.ndarray:
        """Bootstrap weights over the facts (QA items and sentences of one fact drawn together)."""
        return cluster_weights(item_clusters([*self.qa_clusters, *self.text_clusters], "item:"), seed=seed)


def _inv_ppl(weights: np.ndarray, nll: Sequence[float], tokens: Sequence[int]) -> np.ndarray:
    """``1 / ppl = exp(−ΣNLL / Σtokens)`` per replicate (row of ``weights``)."""
    return np.exp(-(weights @ np.asarray(nll)) / (weights @ np.asarray(tokens, float)))


@dataclass(frozen=True)
class TextAbility:
    qa_acc: float  # reference contained in the greedy answer (restricted to text vocabulary + EOT)
    qa_exact: float  # normalised answer equals a reference
    n_qa: int
    answer_ppl: float  # exp(mean NLL per answer token) of the held-out answers after their questions
    n_answer_tokens: int
    ppl: float | None  # exp(mean NLL per text token) over held-out sentences (None: no such sentences)
    n_tokens: int
    benchmark: str = ""  # fingerprint of the items and settings (results are comparable only when equal)
    examples: tuple[dict, ...] = field(default_factory=tuple)  # a few (question, answer, correct) for reports
    qa_acc_se: float | None = None  # standard errors (module docstring); None in results stored before them
    answer_ppl_se: float | None = None
    ppl_se: float | None = None
    items: ItemScores | None = None  # per-item scores (paired errors); None in results stored before them

    def scores(self) -> dict[str, float | None]:
        return {"qa_acc": self.qa_acc, "inv_answer_ppl": 1.0 / self.answer_ppl,
                "inv_ppl": None if self.ppl is None else 1.0 / self.ppl}

    def score_errors(self) -> dict[str, float | None]:
        """Standard errors of :meth:`scores` (``SE(1/ppl) = SE(ppl) / ppl²``); None where unknown."""
        return {"qa_acc": self.qa_acc_se,
                "inv_answer_ppl": None if self.answer_ppl_se is None else self.answer_ppl_se / self.answer_ppl ** 2,
                "inv_ppl": None if self.ppl is None or self.ppl_se is None else self.ppl_se / self.ppl ** 2}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["examples"] = list(self.examples)
        data["items"] = None if self.items is None else {k: list(v) for k, v in asdict(self.items).items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextAbility:
        items = data.get("items")
        items = None if items is None else ItemScores(**{k: tuple(v) for k, v in items.items()})
        return cls(**{**data, "examples": tuple(data.get("examples", ())), "items": items})


def benchmark_fingerprint(qa: Sequence[QAItem], sentences: Sequence[str], max_answer_tokens: int) -> str:
    return json_digest([[q.id, q.question, q.answer, list(q.references)] for q in qa]
                       + [list(sentences), max_answer_tokens])[:16]


# ---- text QA ------------------------------------------------------------------------------------------------------
def text_prompt(layout: TokenLayout, question_ids: Sequence[int]) -> Prompt:
    """Text-only prompt for one text question, ending with the ASSISTANT row of a text answer."""
    packed = pack_prompt([TokenizedTurn("user", tuple(question_ids))], layout, {}, speak=False)
    return Prompt(input_ids=torch.from_numpy(packed.input_ids))


def greedy_text_answer(generator: Generator, layout: TokenLayout, question_ids: Sequence[int],
                       max_tokens: int) -> list[int]:
    """Greedy text-only answer ids (text vocabulary only; ``EOT`` ends it and is not returned)."""
    eot = layout.text_special("EOT")
    out: list[int] = []
    for step in generator.generate(text_prompt(layout, question_ids), speak=False, max_steps=max_tokens + 1):
        if step.text_token is None or step.text_token == eot:
            break
        out.append(step.text_token)
        if len(out) >= max_tokens:
            break
    return out


@torch.inference_mode()
def greedy_text_answers(model: Any, layout: TokenLayout, questions: Sequence[Sequence[int]], max_tokens: int,
                        batch_size: int = 64) -> list[list[int]]:
    """:func:`greedy_text_answer` for many questions at once: the same decoding, one forward per step for a
    whole batch instead of one per step and question (on the tiny CPU model about as costly as one by one,
    ``benchmarks/text_qa_decoding.py``: the saved calls are spent re-reading prefixes; larger models gain).

    Prompts are right-padded into one batch and every step re-reads the whole prefix (no KV cache); a row's
    logits at its own last position see only its earlier positions (causal attention), so the padding after
    it changes nothing, and each row grows at its own length.
    """
    eot, pad_t = layout.text_special("EOT"), layout.text_special("PAD_T")
    text = layout.text_stream
    pad_row = [layout.audio_special("PAD_A", s) for s in range(layout.n_audio_streams)] + [pad_t]
    allowed = allowed_mask(layout.stream_size(text), [range(layout.text_vocab_size), eot], model.device)
    answers: list[list[int]] = []
    for start in range(0, len(questions), batch_size):
        prompts = [text_prompt(layout, q).input_ids for q in questions[start : start + batch_size]]
        lengths = torch.tensor([len(p) for p in prompts])
        rows = torch.tensor(pad_row).repeat(len(prompts), int(lengths.max()) + max_tokens, 1)
        for i, p in enumerate(prompts):
            rows[i, : len(p)] = p
        out: list[list[int]] = [[] for _ in prompts]
        live = torch.ones(len(prompts), dtype=torch.bool)
        for _ in range(max_tokens):
            width = int(lengths[live].max())
            mask = (torch.arange(width) < lengths[:, None]).long()
            batch = SpeechBatch(input_ids=rows[:, :width], attention_mask=mask).to(model.device)
            logits = model(batch, text_only=True).logits[torch.arange(len(prompts)), (lengths - 1).clamp(max=width - 1)]
            tokens = (logits[:, layout.stream_slice(text)].float() + allowed).argmax(-1).cpu()
            for i in live.nonzero().flatten().tolist():
                tok = int(tokens[i])
                if tok == eot:
                    live[i] = False
                    continue
                out[i].append(tok)
                rows[i, lengths[i], text] = tok
                lengths[i] += 1
                live[i] = len(out[i]) < max_tokens
            if not live.any():
                break
        answers += out
    return answers


class TextOnlyLM:
    """A speech LM seen as a plain text LM: every forward reads the text stream alone (``text_only=True``)."""

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, batch: Any, **kwargs: Any) -> Any:
        return self.model(batch, text_only=True, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def text_qa(model: Any, tokenizer: Any, items: Sequence[QAItem], max_tokens: int
            ) -> tuple[list[bool], list[bool], list[str]]:
    """(contained flags, exact flags, answers) of greedy text-only answers to ``items``."""
    questions = [tokenizer.encode(item.question) for item in items]
    for item, q_ids in zip(items, questions):
        if not q_ids:
            raise ValueError(f"text QA item {item.id}: the question has no known words")
    contained, exact, answers = [], [], []
    for item, ids in zip(items, greedy_text_answers(model, model.layout, questions, max_tokens)):
        answer = tokenizer.decode(ids)
        answers.append(answer)
        contained.append(contains_reference(answer, item.references))
        exact.append(exact_match(answer, item.references))
    return contained, exact, answers


# ---- perplexity -------------------------------------------------------------------------------------------------
def text_sequences(layout: TokenLayout, tokenizer: Any, sentences: Sequence[str]) -> list:
    """Held-out sentences packed as the pretraining ``text`` task: one assistant text turn, labelled + EOT."""
    packed = []
    for i, sentence in enumerate(sentences):
        ids = tuple(tokenizer.encode(sentence))
        if not ids:
            continue
        sample = TokenizedSample(f"ppl-{i:05d}", "text", (TokenizedTurn("assistant", ids),))
        packed.append(pack_tokenized(sample, layout, {}, {}, random.Random(0), train=False))
    return packed


def answer_sequences(layout: TokenLayout, tokenizer: Any, items: Sequence[QAItem]) -> list:
    """Held-out questions with their answers packed as a text-answer sample (labels: answer + EOT)."""
    packed = []
    for item in items:
        q_ids = tuple(tokenizer.encode(item.question))
        a_ids = tuple(tokenizer.encode(item.answer or item.references[0]))
        if not q_ids or not a_ids:
            raise ValueError(f"text QA item {item.id}: question or answer has no known words")
        sample = TokenizedSample(item.id, "tqa", (TokenizedTurn("user", q_ids), TokenizedTurn("assistant", a_ids)))
        packed.append(pack_tokenized(sample, layout, {}, {}, random.Random(0), train=False))
    return packed


def text_nll(model: Any, packed: Sequence, batch_size: int = 16) -> tuple[float, int]:
    """Summed next-token NLL of the labelled text-stream positions and their count (softmax over the text
    block, teacher forcing)."""
    items = text_nll_items(model, packed, batch_size)
    return sum(n for n, _ in items), sum(c for _, c in items)


@torch.inference_mode()
def text_nll_items(model: Any, packed: Sequence, batch_size: int = 16) -> list[tuple[float, int]]:
    """``(summed NLL, labelled tokens)`` of every packed sequence (see :func:`text_nll`)."""
    layout: TokenLayout = model.layout
    text = layout.text_stream
    sl = layout.stream_slice(text)
    out: list[tuple[float, int]] = []
    for start in range(0, len(packed), batch_size):
        batch = collate(packed[start : start + batch_size], layout).to(model.device)
        logits = model(batch, text_only=True).logits[:, :-1, sl].float()
        target = batch.labels[:, 1:, text]
        valid = target != IGNORE_INDEX
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.where(valid, target, 0).reshape(-1),
                              reduction="none").view_as(target)
        per_row = torch.where(valid, nll, 0.0).sum(-1)
        out += [(float(n), int(c)) for n, c in zip(per_row, valid.sum(-1)) if int(c) > 0]
    if not out:
        raise ValueError("perplexity over zero labelled text tokens is undefined")
    return out


# ---- the benchmark ------------------------------------------------------------------------------------------------
def evaluate_text_ability(
    model: Any,
    tokenizer: Any,
    qa_items: Sequence[QAItem],
    sentences: Sequence[str],
    max_answer_tokens: int = 16,
    sentence_facts: Sequence[str] = (),
) -> TextAbility:
    """Text QA accuracy and perplexity of ``model`` (a ``SpeechLM``) in text-only mode, with per-item scores.

    ``sentence_facts`` (aligned with ``sentences``; empty: none known) and the items' ``fact_id`` group the items
    for the standard errors. The text_pretrain step calls this on the base model to store the baseline; the
    evaluate step calls it on the trained model (and on the base when no stored baseline matches the same items).
    """
    if sentence_facts and len(sentence_facts) != len(sentences):
        raise ValueError(f"{len(sentence_facts)} sentence fact ids for {len(sentences)} sentences")
    if not qa_items:
        raise ValueError("text ability needs held-out text questions")
    if not sentences:
        log.warning("no held-out sentences: the text perplexity benchmark is skipped")
    was_training = model.training
    model.eval()
    try:
        contained, exact, answers = text_qa(model, tokenizer, qa_items, max_answer_tokens)
        answer_items = text_nll_items(model, answer_sequences(model.layout, tokenizer, qa_items))
        kept = [i for i, sentence in enumerate(sentences) if tokenizer.encode(sentence)]  # text_sequences' rule
        text_items = text_nll_items(model, text_sequences(model.layout, tokenizer, sentences)) if kept else []
        answer_nll, n_answer = sum(n for n, _ in answer_items), sum(c for _, c in answer_items)
        nll, n_tokens = sum(n for n, _ in text_items), sum(c for _, c in text_items)
    finally:
        model.train(was_training)
    if len(text_items) != len(kept) or len(answer_items) != len(qa_items):
        raise ValueError("a held-out sentence or answer has no labelled text token")
    facts = list(sentence_facts) or [""] * len(sentences)
    items = ItemScores(
        qa_correct=tuple(contained), answer_nll=tuple(n for n, _ in answer_items),
        answer_tokens=tuple(c for _, c in answer_items), qa_clusters=tuple(q.fact_id for q in qa_items),
        text_nll=tuple(n for n, _ in text_items), text_tokens=tuple(c for _, c in text_items),
        text_clusters=tuple(facts[i] for i in kept),
    )
    errors = own_standard_errors(items)
    result = TextAbility(
        qa_acc=accuracy(contained),
        qa_exact=accuracy(exact),
        n_qa=len(qa_items),
        answer_ppl=math.exp(answer_nll / n_answer),
        n_answer_tokens=n_answer,
        ppl=math.exp(nll / n_tokens) if n_tokens else None,
        n_tokens=n_tokens,
        benchmark=benchmark_fingerprint(qa_items, sentences, max_answer_tokens),
        examples=tuple({"question": q.question, "answer": a, "references": list(q.references), "correct": c}
                       for q, a, c in list(zip(qa_items, answers, contained))[:8]),
        qa_acc_se=errors["qa_acc"],
        answer_ppl_se=errors["answer_ppl"],
        ppl_se=errors["ppl"],
        items=items,
    )
    log.info("text ability: QA %.3f (exact %.3f, n=%d), answer ppl %.3f, text ppl %s over %d tokens",
             result.qa_acc, result.qa_exact, result.n_qa, result.answer_ppl, result.ppl, result.n_tokens)
    return result


def own_standard_errors(items: ItemScores, seed: int = 0) -> dict[str, float | None]:
    """Bootstrap standard errors of one model's QA accuracy, answer perplexity and text perplexity."""
    scores = items.scores(items.weights(seed))
    inv_ppl = scores["inv_ppl"]
    with np.errstate(divide="ignore"):
        return {"qa_acc": standard_error(scores["qa_acc"]),
                "answer_ppl": standard_error(1.0 / scores["inv_answer_ppl"]),
                "ppl": None if inv_ppl is None else standard_error(1.0 / inv_ppl)}


def _drop(b: Any, m: Any) -> Any:
    return (b - m) / b * 100.0


def relative_drop_pct(base: TextAbility, model: TextAbility, min_base_qa_correct: int = 5
                      ) -> dict[str, float | None]:
    """Per-benchmark relative drops (``drop_pct_<score>``), their mean ``drop_pct``, and standard errors:
    ``*_se`` paired (per-item scores of both on the same items; None without them), ``*_se_unpaired`` the two
    models' own errors propagated as independent (see module docstring)."""
    if base.benchmark and model.benchmark and base.benchmark != model.benchmark:
        raise ValueError(f"text ability results come from different benchmarks ({base.benchmark} vs "
                         f"{model.benchmark}); evaluate both on the same items")
    out: dict[str, float | None] = {}
    used: list[str] = []
    b, m = base.scores(), model.scores()
    b_se, m_se = base.score_errors(), model.score_errors()
    base_correct = round(base.qa_acc * base.n_qa)
    for name in BENCHMARKS:
        if b[name] is None or m[name] is None or b[name] <= 0:
            log.warning("base score %s is %s: no relative drop for this benchmark", name, b[name])
            out[f"drop_pct_{name}"] = None
            continue
        if name == "qa_acc" and base_correct < min_base_qa_correct:
            log.warning("the base answers only %d held-out questions correctly (< %d): QA accuracy is left out "
                        "of the text drop", base_correct, min_base_qa_correct)
            out[f"drop_pct_{name}"] = None
            continue
        out[f"drop_pct_{name}"] = _drop(b[name], m[name])
        used.append(name)
        # d = 100 (1 − m/b): ∂d/∂m = −100/b, ∂d/∂b = 100 m/b²
        out[f"drop_pct_{name}_se_unpaired"] = (
            None if b_se[name] is None or m_se[name] is None
            else 100.0 * math.hypot(m_se[name] / b[name], m[name] * b_se[name] / b[name] ** 2))
    out["drop_pct"] = sum(out[f"drop_pct_{n}"] for n in used) / len(used) if used else None
    unpaired = [out[f"drop_pct_{n}_se_unpaired"] for n in used]
    out["drop_pct_se_unpaired"] = (math.sqrt(sum(v * v for v in unpaired)) / len(used)
                                   if used and all(v is not None for v in unpaired) else None)
    out.update(paired_drop_errors(base, model, used))
    return out


def paired_drop_errors(base: TextAbility, model: TextAbility, used: Sequence[str], seed: int = 0
                       ) -> dict[str, float | None]:
    """Paired bootstrap standard errors of the drop terms in ``used`` and of their mean: both models scored on
    the same resamples of held-out facts. None (with a warning) when either result lacks per-item scores."""
    keys = [f"drop_pct_{n}_se" for n in used] + ["drop_pct_se"]
    if base.items is None or model.items is None:
        log.warning("a text ability result has no per-item scores (stored before them): no paired errors")
        return dict.fromkeys(keys)
    if (base.items.qa_clusters, base.items.text_clusters) != (model.items.qa_clusters, model.items.text_clusters):
        raise ValueError("base and model per-item scores are not over the same items")
    weights = base.items.weights(seed)
    b, m = base.items.scores(weights), model.items.scores(weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = {n: _drop(b[n], m[n]) for n in used}
    out = {f"drop_pct_{n}_se": standard_error(terms[n]) for n in used}
    out["drop_pct_se"] = standard_error(np.mean([terms[n] for n in used], axis=0)) if used else None
    return out


def write_text_ability(result: TextAbility, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return path


def read_text_ability(path: str | Path) -> TextAbility:
    return TextAbility.from_dict(json.loads(Path(path).read_text()))


# ---- the imported model against its source ---------------------------------------------------------------------
@torch.inference_mode()
def source_agreement(model: Any, source: str | Path, texts: Sequence[Sequence[int]]) -> dict[str, Any]:
    """How exactly ``model`` (a SpeechLM built from the HF checkpoint ``source``, before any training) reads
    text as the original model does: both on the same token ids (the original through its own
    ``AutoModelForCausalLM``, ``model`` in text-only mode), next-token logits compared at every position.

    Returns ``argmax_agreement`` over the source's vocabulary rows, ``argmax_agreement_text_block`` (``model``
    free to pick its new text specials too, the text block QA decoding sees), ``max_abs_logit_diff`` over
    the source's rows and ``positions``. With the source's head kept (``BackboneConfig.head: untied``) the
    argmaxes agree everywhere; a tied head drops the source's trained head and agreement falls to chance.
    """
    from transformers import AutoModelForCausalLM

    texts = [list(t) for t in texts if len(t) > 0]
    if not texts:
        raise ValueError("source_agreement needs at least one non-empty token sequence")
    original = AutoModelForCausalLM.from_pretrained(str(source), dtype=model.backbone.dtype, local_files_only=True)
    original.to(model.device).eval()
    rows = original.get_output_embeddings().weight.shape[0]
    layout: TokenLayout = model.layout
    text_block = layout.stream_slice(layout.text_stream)
    pad_a = [layout.audio_special("PAD_A", s) for s in range(layout.n_audio_streams)]
    agree = agree_block = positions = 0
    max_diff = 0.0
    for ids in texts:
        ref = original(input_ids=torch.tensor([ids], device=model.device)).logits[0].float()  # [T, rows]
        rows_in = torch.tensor([[*pad_a, i] for i in ids]).unsqueeze(0)
        ours = model(collate_ids(rows_in).to(model.device), text_only=True).logits[0, :, text_block].float()
        agree += int((ours[:, :rows].argmax(-1) == ref.argmax(-1)).sum())
        agree_block += int((ours.argmax(-1) == ref.argmax(-1)).sum())
        max_diff = max(max_diff, float((ours[:, :rows] - ref).abs().max()))
        positions += len(ids)
    del original
    result = {"argmax_agreement": agree / positions, "argmax_agreement_text_block": agree_block / positions,
              "max_abs_logit_diff": max_diff, "positions": positions}
    log.info("imported model vs %s: %s", source, result)
    return result


def collate_ids(input_ids: torch.Tensor) -> Any:
    """A label-free ``SpeechBatch`` of ``input_ids`` [B, T, S] (no audio, nothing padded)."""
    return SpeechBatch(input_ids=input_ids, labels=None, attention_mask=torch.ones(input_ids.shape[:2], dtype=torch.long))


def load_tokenizer(cfg: ProjectConfig) -> Any:
    from deeptalk.data.text_tokenizer import load_tokenizer as _load

    return _load(cfg.paths.raw / "tokenizer")


def text_qa_score(cfg: ProjectConfig, model: Any) -> dict[str, Any]:
    """Baseline hook for the text_pretrain step: :func:`evaluate_text_ability` of ``model`` on the pipeline's
    held-out items, as a JSON-able dict (stored as ``text_baseline.json["text_qa"]`` in ``models/base``; the
    evaluate step reuses it when the benchmark fingerprint matches)."""
    from deeptalk.evaluation.heldout import heldout_for

    held = heldout_for(cfg)
    result = evaluate_text_ability(model, load_tokenizer(cfg), held.text_qa, held.sentences,
                                   cfg.evaluation.max_answer_tokens, held.sentence_facts)
    return result.to_dict()

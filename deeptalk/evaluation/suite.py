"""The full evaluation of one trained model: text ability vs the base LLM, spoken QA, ASR, TTS, latency.

Used by the ``evaluate`` step (one model, gated) and by ``compare`` (every system of the comparison). Returns
the nested metrics dict that becomes ``reports/metrics.json``; per-benchmark examples are returned apart so
the DVC metrics file stays numbers only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeptalk.evaluation.heldout import HeldOut, heldout_for, load_audio
from deeptalk.evaluation.text_ability import (
    BASELINE_FILE,
    BASELINE_KEY,
    TextAbility,
    benchmark_fingerprint,
    evaluate_text_ability,
    load_tokenizer,
    relative_drop_pct,
)

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)

@dataclass
class Evaluation:
    metrics: dict[str, Any]
    examples: dict[str, list[dict]]


def text_ability_of(model_dir: str | Path, cfg: ProjectConfig, held: HeldOut, tokenizer: Any) -> TextAbility:
    from deeptalk.model import SpeechLM
    from deeptalk.model.switches import RoutingMode

    from deeptalk.runtime import resolve_device

    model = SpeechLM.from_pretrained(model_dir).to(resolve_device(cfg.device)).eval()
    model.set_routing(RoutingMode.NONE)  # inference routes over all experts, as in the reference (paper.md §2.2)
    return evaluate_text_ability(model, tokenizer, held.text_qa, held.sentences, cfg.evaluation.max_answer_tokens,
                                 held.sentence_facts)


def base_text_ability(cfg: ProjectConfig, held: HeldOut, tokenizer: Any) -> TextAbility:
    """The original LLM's text ability: the stored baseline when it was measured on the same items and
    settings, otherwise measured now (``models/base`` is another step's output and is never written here)."""
    stored = Path(cfg.paths.base) / BASELINE_FILE
    expected = benchmark_fingerprint(held.text_qa, held.sentences, cfg.evaluation.max_answer_tokens)
    data = json.loads(stored.read_text()) if stored.is_file() else {}
    if isinstance(data.get(BASELINE_KEY), dict):
        result = TextAbility.from_dict(data[BASELINE_KEY])
        if result.benchmark == expected and result.items is not None:  # per-item scores: paired errors
            log.info("base text ability from %s", stored)
            return result
        log.info("stored base text ability %s was measured on other items; re-measuring", stored)
    return text_ability_of(cfg.paths.base, cfg, held, tokenizer)


def text_metrics(base: TextAbility, model: TextAbility, min_base_qa_correct: int = 5) -> dict[str, Any]:
    return {
        "qa_acc": model.qa_acc, "qa_exact": model.qa_exact, "answer_ppl": model.answer_ppl, "ppl": model.ppl,
        "base_qa_acc": base.qa_acc, "base_qa_exact": base.qa_exact, "base_answer_ppl": base.answer_ppl,
        "base_ppl": base.ppl,
        "qa_acc_se": model.qa_acc_se, "answer_ppl_se": model.answer_ppl_se, "ppl_se": model.ppl_se,
        **relative_drop_pct(base, model, min_base_qa_correct),
        "n_qa": model.n_qa, "n_tokens": model.n_tokens,
    }


def _numbers(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "examples"}


def evaluate_model(
    cfg: ProjectConfig,
    model_dir: str | Path,
    *,
    held: HeldOut | None = None,
    base: TextAbility | None = None,
    scorer: Any = None,
    latency: bool = True,
) -> Evaluation:
    """Every benchmark on the model saved at ``model_dir``; ``held``/``base``/``scorer`` may be shared between
    calls (compare evaluates several models on the same items)."""
    from deeptalk.evaluation.asr_eval import evaluate_asr
    from deeptalk.evaluation.asr_scorer import scorer_for
    from deeptalk.evaluation.engine import load_engine
    from deeptalk.evaluation.latency import measure_latency
    from deeptalk.evaluation.spoken_qa import evaluate_spoken_qa
    from deeptalk.evaluation.tts_eval import evaluate_tts

    held = held or heldout_for(cfg)
    tokenizer = load_tokenizer(cfg)
    base = base or base_text_ability(cfg, held, tokenizer)
    scorer = scorer or scorer_for(cfg)
    ev = cfg.evaluation

    model = text_ability_of(model_dir, cfg, held, tokenizer)
    metrics: dict[str, Any] = {"text": text_metrics(base, model, ev.min_base_qa_correct)}
    examples: dict[str, list[dict]] = {"text QA": list(model.examples)}

    engine = load_engine(cfg, model_dir)
    if held.spoken_qa:
        sqa = evaluate_spoken_qa(engine, held.spoken_qa, scorer, n_distinct=ev.distinct_questions)
        metrics["spoken_qa"], examples["spoken QA"] = _numbers(sqa), sqa["examples"]
    if held.asr:
        asr = evaluate_asr(engine, held.asr)
        metrics["asr"], examples["ASR"] = _numbers(asr), asr["examples"]
    if held.tts:
        tts = evaluate_tts(engine, held.tts, scorer)
        metrics["tts"], examples["TTS"] = _numbers(tts), tts["examples"]
    if latency and held.spoken_qa and ev.max_latency > 0:
        clips = [load_audio(q.audio_path, engine.audio_input.sample_rate) for q in held.spoken_qa[: ev.max_latency]]
        metrics["latency"] = measure_latency(engine, clips, warmup=ev.latency_warmup)
    return Evaluation(metrics=metrics, examples=examples)

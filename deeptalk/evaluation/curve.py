"""The retention-vs-speech curve's evaluation of one model: text ability against the base and held-out ASR WER,
cheap enough to run at every curve snapshot (no speech is generated). ``flows.comparison`` calls it for every
snapshot and phase output of a system."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig
    from deeptalk.evaluation.heldout import HeldOut
    from deeptalk.evaluation.text_ability import TextAbility


@dataclass
class EvalContext:
    """What every evaluation of a seed shares: held-out items, tokenizer, the base's scores, the scorer."""

    held: HeldOut
    tokenizer: Any
    base: TextAbility
    scorer: Any
    min_base_qa_correct: int

    @classmethod
    def for_seed(cls, work: ProjectConfig, scorer: Any = None) -> EvalContext:
        from deeptalk.evaluation.asr_scorer import scorer_for
        from deeptalk.evaluation.heldout import heldout_for
        from deeptalk.evaluation.suite import base_text_ability
        from deeptalk.evaluation.text_ability import load_tokenizer

        held = heldout_for(work)
        tokenizer = load_tokenizer(work)
        return cls(held, tokenizer, base_text_ability(work, held, tokenizer), scorer or scorer_for(work),
                   work.evaluation.min_base_qa_correct)


def curve_metrics(work: ProjectConfig, model_dir: Path, ctx: EvalContext) -> dict[str, Any]:
    """The curve's cheap evaluation: text ability vs the base and held-out ASR WER (no speech generated)."""
    from deeptalk.evaluation.asr_eval import evaluate_asr
    from deeptalk.evaluation.engine import load_engine
    from deeptalk.evaluation.suite import text_ability_of, text_metrics

    text = text_metrics(ctx.base, text_ability_of(model_dir, work, ctx.held, ctx.tokenizer), ctx.min_base_qa_correct)
    out: dict[str, Any] = {"text": text}
    if ctx.held.asr:
        asr = evaluate_asr(load_engine(work, model_dir), ctx.held.asr)
        out["asr"] = {k: v for k, v in asr.items() if k != "examples"}
    return out


def curve_point(metrics: dict[str, Any]) -> dict[str, Any]:
    text, asr = metrics.get("text", {}), metrics.get("asr", {})
    return {"drop_pct": text.get("drop_pct"), "qa_acc": text.get("qa_acc"), "answer_ppl": text.get("answer_ppl"),
            "ppl": text.get("ppl"), "asr_wer": asr.get("wer")}

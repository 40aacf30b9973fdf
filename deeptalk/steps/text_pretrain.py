"""Step ``text_pretrain``: the "original LLM" whose text ability the speech stages must keep.

tiny/small: train the backbone from scratch on the text corpus (``text`` + ``tqa``) with the runner. paper:
import the chat checkpoint named by ``cfg.model.checkpoint`` (vocabulary extended once, new rows N(0, 0.02)).
Either way ``cfg.paths.base`` ends up a SpeechLM directory, and ``text_baseline.json`` in it records the
baseline numbers later stages are compared with: held-out text perplexity (text-stream CE on held-out
written QA, teacher-forced) and, when the evaluation package provides it, the held-out text-QA score.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from typing import TYPE_CHECKING

import torch

from deeptalk.training.runner import run_stage

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)


@torch.no_grad()
def text_perplexity(model, batches) -> float:
    """exp of the mean text-stream cross-entropy per supervised position."""
    total, count = 0.0, 0
    model.eval()
    for batch in batches:
        out = model(batch.to(model.device))
        n = int((batch.labels[..., model.layout.text_stream] != -100).sum())
        total += float(out.stream_losses["text"]) * n
        count += n
    if count == 0:
        raise ValueError("no supervised text positions to compute perplexity on")
    return math.exp(total / count)


def heldout_text_batches(cfg: ProjectConfig, n_batches: int, batch_size: int = 8):
    from deeptalk.data.dataset import SequenceDataset

    dataset = SequenceDataset(cfg, "heldout", ["tqa"], train=False)
    for b in range(min(n_batches, -(-len(dataset) // batch_size))):
        yield dataset.collate([dataset[i] for i in range(b * batch_size, min(len(dataset), (b + 1) * batch_size))])


def _qa_score(cfg: ProjectConfig, model) -> dict | None:
    """The evaluation package's held-out text-QA score, if that package provides one."""
    try:
        module = importlib.import_module("deeptalk.evaluation.text_ability")
    except ModuleNotFoundError:
        log.warning("deeptalk.evaluation.text_ability not available: text-QA baseline not recorded")
        return None
    return module.text_qa_score(cfg, model)


def run(cfg: ProjectConfig) -> dict:
    from deeptalk.model.config import SpeechLMConfig
    from deeptalk.model.speech_lm import SpeechLM

    if cfg.model.checkpoint is not None:
        from deeptalk.data.packing import load_layout

        layout = load_layout(cfg.paths.sequences)
        model = SpeechLM.build(SpeechLMConfig.from_project(cfg, layout))
        model.save_pretrained(cfg.paths.base)
        summary: dict = {"imported": cfg.model.checkpoint}
    else:
        summary = run_stage("text_pretrain", cfg)["phases"][0]
        model = SpeechLM.from_pretrained(cfg.paths.base)
    ppl = text_perplexity(model, heldout_text_batches(cfg, cfg.training.eval_batches))
    baseline: dict = {"heldout_text_ppl": round(ppl, 4)}
    qa = _qa_score(cfg, model)
    if qa is not None:
        baseline["text_qa"] = qa
    (cfg.paths.base / "text_baseline.json").write_text(json.dumps(baseline, indent=1) + "\n")
    log.info("base model: %s", baseline)
    brief = {k: v for k, v in baseline.items() if k != "text_qa"}
    if qa is not None:
        brief.update({f"text_{k}": v for k, v in qa.items() if isinstance(v, (int, float))})
    return {**{k: v for k, v in summary.items() if k != "fingerprint"}, **brief}

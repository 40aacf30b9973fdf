"""Step ``text_pretrain``: the "original LLM" whose text ability the speech stages must keep.

tiny/small: train the backbone from scratch on the text corpus (``text`` + ``tqa``) with the runner. paper:
import the chat checkpoint named by ``cfg.model.checkpoint`` (vocabulary extended once, new rows N(0, 0.02);
head tied or the source's own, ``model.head``), check its text logits against the source model's and record
the *source's* text baseline (:func:`import_checkpoint`).
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

from deeptalk.runtime import resolve_device
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


def import_checkpoint(cfg: ProjectConfig) -> tuple[dict, dict | None]:
    """paper: build ``models/base`` from ``cfg.model.checkpoint`` and measure the source's text baseline.

    The baseline is measured on the *original* model: the import with the source's own head kept (text-only,
    it computes the source's logits; checked against the source itself by ``source_agreement``). With
    ``model.head: tied`` the saved base differs from it (the reference's choice drops the trained head), and
    the gated text drop is then measured from the original, not from the damaged import.
    Returns ``(summary, text-QA baseline or None)``.
    """
    import dataclasses

    from deeptalk.data.packing import load_layout
    from deeptalk.data.text_tokenizer import load_tokenizer
    from deeptalk.evaluation.heldout import heldout_for
    from deeptalk.evaluation.text_ability import source_agreement
    from deeptalk.model.backbone import resolve_checkpoint
    from deeptalk.model.config import SpeechLMConfig
    from deeptalk.model.speech_lm import SpeechLM

    source = resolve_checkpoint(cfg.model.checkpoint, cfg.paths.root)
    layout = load_layout(cfg.paths.sequences)
    chosen = dataclasses.replace(cfg.model, checkpoint=str(source))
    device = resolve_device(cfg.device)  # the baseline and agreement passes run where the model is
    original = SpeechLM.build(SpeechLMConfig(backbone=dataclasses.replace(chosen, head="untied"), layout=layout,
                                             audio_input=cfg.audio_input)).to(device)
    tokenizer = load_tokenizer(cfg.paths.raw / "tokenizer")
    held = heldout_for(cfg)
    texts = [tokenizer.encode(t) for t in [*held.sentences, *(q.question for q in held.text_qa)][:32]]
    summary: dict = {"imported": cfg.model.checkpoint, "head": cfg.model.head,
                     "source_agreement": source_agreement(original, source, texts)}
    qa = _qa_score(cfg, original)
    if chosen.head == "untied":
        model = original
    else:
        del original
        model = SpeechLM.build(SpeechLMConfig(backbone=chosen, layout=layout, audio_input=cfg.audio_input)).to(device)
        summary["import_agreement"] = source_agreement(model, source, texts)
    model.save_pretrained(cfg.paths.base)
    return summary, qa


def run(cfg: ProjectConfig) -> dict:
    from deeptalk.model.speech_lm import SpeechLM

    if cfg.model.checkpoint is not None:
        summary, qa = import_checkpoint(cfg)
    else:
        summary = run_stage("text_pretrain", cfg)["phases"][0]
        qa = None
    model = SpeechLM.from_pretrained(cfg.paths.base).to(resolve_device(cfg.device))
    ppl = text_perplexity(model, heldout_text_batches(cfg, cfg.training.eval_batches))
    baseline: dict = {"heldout_text_ppl": round(ppl, 4)}
    if cfg.model.checkpoint is not None:  # the baseline is the source model's (see import_checkpoint)
        baseline.update(heldout_text_ppl_of="models/base as saved (speech-LM input, model.head as chosen)",
                        baseline_model="source checkpoint, its own head", **{
            k: summary[k] for k in ("head", "source_agreement", "import_agreement") if k in summary})
    else:
        qa = _qa_score(cfg, model)
    if qa is not None:
        baseline["text_qa"] = qa
    (cfg.paths.base / "text_baseline.json").write_text(json.dumps(baseline, indent=1) + "\n")
    log.info("base model: %s", baseline)
    brief = {k: v for k, v in baseline.items() if k not in ("text_qa", "source_agreement", "import_agreement")}
    if "source_agreement" in summary:
        brief["source_argmax_agreement"] = summary["source_agreement"]["argmax_agreement"]
    if "import_agreement" in summary:
        brief["import_argmax_agreement"] = summary["import_agreement"]["argmax_agreement"]
    if qa is not None:
        brief.update({f"text_{k}": v for k, v in qa.items() if isinstance(v, (int, float))})
    return {**{k: v for k, v in summary.items() if k not in ("fingerprint", "source_agreement", "import_agreement")},
            **brief}

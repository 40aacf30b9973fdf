"""Step ``profile_experts``: expert load of the S1 model per modality → expert split, heatmaps, plot data.

Writes ``cfg.paths.expert_split`` (rule ``training.split_rule``) and, under ``reports/profile/``:
``expert_load.json`` (raw counts/probabilities), ``expert_load.csv`` (DVC plot), ``splits.json`` (the split of
every rule: the configured one, ``training.fixed_split`` for the fixed baseline and a same-size
``random:N`` control), ``expert_load_{speech,text}.png``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from deeptalk.profiling import plot_heatmaps, profile_model, split_from_rule, write_json, write_load_csv
from deeptalk.runtime import resolve_device
from deeptalk.training.runner import profile_dir

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)

PROFILE_TASKS = ("asr", "tts", "aqa", "tqa", "rqa")  # speech in, speech out, text out


def heldout_batches(cfg: ProjectConfig, n_batches: int, batch_size: int = 8, model_dir=None):
    """The first ``n_batches`` batches of the validation split (all tasks, evaluation packing, fixed order),
    spoken turns as long as the hearing of the model in ``model_dir`` makes them (if it hears text)."""
    from deeptalk.data.dataset import SequenceDataset, sequences_file
    from deeptalk.training.runner import heard_positions_for

    tasks = [t for t in PROFILE_TASKS if sequences_file(cfg.paths.sequences, "validation", t).exists()]
    positions = heard_positions_for(model_dir, cfg) if model_dir is not None else None
    dataset = SequenceDataset(cfg, "validation", tasks, train=False, positions=positions)
    # interleave tasks so a short run still sees every modality
    by_task = {t: [i for i, x in enumerate(dataset.task_of) if x == t] for t in tasks}
    order = [i for group in zip(*by_task.values()) for i in group] if by_task else []
    seen = set(order)
    order += [i for i in range(len(dataset)) if i not in seen]
    for b in range(min(n_batches, -(-len(order) // batch_size))):
        yield dataset.collate([dataset[i] for i in order[b * batch_size:(b + 1) * batch_size]])


def run(cfg: ProjectConfig) -> dict:
    from deeptalk.model.experts import ExpertSplit
    from deeptalk.model.speech_lm import SpeechLM

    t = cfg.training
    model = SpeechLM.from_pretrained(cfg.paths.stage("s1")).to(resolve_device(cfg.device))
    load = profile_model(model, heldout_batches(cfg, t.profile_batches, model_dir=cfg.paths.stage("s1")))
    n_fixed = int(t.fixed_split.split(":")[1])
    rules = {t.split_rule, t.fixed_split, f"random:{n_fixed}"}
    splits = {rule: split_from_rule(rule, load, t.min_speech_fraction, t.max_speech_fraction, cfg.seed)
              for rule in sorted(rules)}
    chosen = ExpertSplit(splits[t.split_rule])
    layers = model.moe_layers()
    chosen.validate(len(layers), [m.num_experts for m in layers])
    out = profile_dir(cfg)
    write_json(out / "expert_load.json", load.to_json())
    write_json(out / "splits.json", splits)
    write_load_csv(load, out / "expert_load.csv", splits[t.split_rule])
    plot_heatmaps(load, out, splits[t.split_rule])
    chosen.to_json(cfg.paths.expert_split)
    sizes = [len(s) for s in splits[t.split_rule]]
    log.info("expert split (%s): speech experts per layer %s; positions %s", t.split_rule, sizes, load.positions)
    return {"rule": t.split_rule, "speech_experts_per_layer": sizes, "positions": load.positions,
            "split": str(cfg.paths.expert_split)}

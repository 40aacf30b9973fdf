"""ZeRO-3 around the training loop: partitioning without N host copies, and export of the gathered weights.

Under ZeRO stage 3 every parameter lives in ``1/N`` slices, one per rank, and only a forward pass (or an
explicit gather) reassembles it. Two things follow:

* **Building the model.** DeepSpeed's partitioning broadcasts each parameter from rank 0 before slicing it, so
  only rank 0 needs the real weights. The other ranks build the same architecture without reading anything
  (:func:`empty_like_saved`, then :func:`materialize` on their own device: uninitialised storage, on a GPU rank GPU
  memory, never host memory), and :func:`partition` fills and slices it. Rank 0 is the only process that reads
  the checkpoint into host memory (paper scale: one 31 GB bf16 copy per node instead of one per GPU).
* **Saving.** ``save_pretrained`` on a partitioned module sees empty tensors and fails. :func:`full_weights`
  gathers one module at a time (every rank must take part: gathering is collective) into CPU copies kept on
  rank 0 only, and lends those copies to the parameters for the duration of the ``with`` block, so rank 0 can
  save with the ordinary exporter while the other ranks wait at the same point. No rank ever holds the whole
  model on its accelerator.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from deeptalk.training import distributed

if TYPE_CHECKING:
    from deeptalk.model.speech_lm import SpeechLM

log = logging.getLogger(__name__)


def zero_stage(ds_config: dict[str, Any]) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def is_partitioned(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id")


def empty_like_saved(path: str | Path) -> SpeechLM:
    """The architecture of the SpeechLM saved at ``path`` on the ``meta`` device: same modules, parameter
    shapes, dtypes, expert split and added experts as ``SpeechLM.from_pretrained(path)``, no weights read."""
    from transformers import AutoConfig, AutoModelForCausalLM, WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from deeptalk.model.audio_encoder import AudioProjector
    from deeptalk.model.backbone import prepare_backbone, torch_dtype
    from deeptalk.model.config import SpeechLMConfig
    from deeptalk.model.experts import ExpertSplit
    from deeptalk.model.speech_lm import CONFIG_FILE, SPLIT_FILE, SpeechLM

    path = Path(path)
    meta = json.loads((path / CONFIG_FILE).read_text())
    cfg = SpeechLMConfig.from_dict(meta["config"])
    with torch.device("meta"):
        config = AutoConfig.from_pretrained(path / "backbone", local_files_only=True)
        backbone = AutoModelForCausalLM.from_config(
            config, dtype=torch_dtype(cfg.backbone.dtype), attn_implementation=cfg.backbone.attn_implementation
        )
        backbone = prepare_backbone(backbone, cfg.backbone)
        encoder = WhisperEncoder(WhisperConfig.from_pretrained(path / "audio_encoder", local_files_only=True))
        encoder = encoder.to(backbone.dtype)
        projector = AudioProjector(cfg.audio_input, backbone.config.hidden_size).to(backbone.dtype)
    split = ExpertSplit.from_json(path / SPLIT_FILE) if (path / SPLIT_FILE).exists() else None
    model = SpeechLM(cfg, backbone, encoder, projector, expert_split=split,
                     n_added_experts=int(meta["n_added_experts"]))
    return model.eval()


def materialize(module: nn.Module, device: torch.device) -> nn.Module:
    """Give a ``meta`` module uninitialised storage on ``device`` (in place, returned). Unlike ``to_empty``,
    a parameter shared by several modules (a tied head) stays one parameter."""
    made: dict[int, torch.Tensor] = {}
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, t in list(store.items()):
                if t is None or t.device.type != "meta":
                    continue
                if id(t) not in made:
                    empty = torch.empty(t.shape, dtype=t.dtype, device=device)
                    made[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else empty
                store[name] = made[id(t)]
    return module


def partition(module: nn.Module, ds_config: dict[str, Any], device: torch.device) -> None:
    """Turn every parameter of ``module`` into a ZeRO-3 partition (rank 0's values, broadcast); collective.

    Buffers, which ZeRO does not partition, are moved to ``device`` and broadcast from rank 0 as well (ranks
    that built an empty model hold garbage there). The parameter objects are kept, so the gradient hooks of
    partially frozen tensors and the optimizer groups built before this call stay valid.
    """
    import deepspeed

    if any(p.device.type == "meta" for p in module.parameters()):
        raise ValueError("ZeRO-3 partitioning needs storage for every parameter: materialize() a meta model first")
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is None:
                continue
            if buf.device != device:
                sub._buffers[name] = buf = buf.to(device)
            if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
                torch.distributed.broadcast(buf, 0)
    deepspeed.zero.Init(module=module, config_dict_or_path=ds_config)
    log.info("ZeRO-3: %d parameters partitioned over %d rank(s)", sum(1 for _ in module.parameters()),
             distributed.rank_and_world()[1])


@contextlib.contextmanager
def full_weights(module: nn.Module) -> Iterator[None]:
    """Within the block, rank 0's parameters of ``module`` hold their full values (CPU copies); collective.

    Without ZeRO-3 partitions this does nothing. Modules are gathered one by one, so at most one module's
    parameters are whole on the accelerators at a time; rank 0 keeps a CPU copy of each, the other ranks keep
    nothing. On exit the partitions are put back untouched (the block must only read the weights).
    """
    import deepspeed

    params = [p for p in module.parameters() if is_partitioned(p)]
    if not params:
        yield
        return
    main = distributed.is_main_process()
    lent: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}
    try:
        for sub in module.modules():
            own = [p for p in sub.parameters(recurse=False) if is_partitioned(p) and id(p) not in lent]
            if not own:
                continue
            with deepspeed.zero.GatheredParameters(own, modifier_rank=None):
                copies = [p.data.detach().to("cpu", copy=True) for p in own] if main else []
            if main:
                for p, full in zip(own, copies):
                    lent[id(p)] = (p, p.data)
                    p.data = full
            else:
                for p in own:
                    lent[id(p)] = (p, p.data)
        yield
    finally:
        for p, partition_data in lent.values():
            p.data = partition_data

"""Optimizer-state bytes of S2a on the mini DeepSeek-V2-Lite-Chat (64 routed experts), fused experts with masked
rows vs trainable rows as own parameters (``deeptalk.model.expert_rows``), through the real DeepSpeed ZeRO-2
engine, side by side in one run. Prints ``name: value`` lines.

    .venv/bin/python benchmarks/optimizer_state.py                  # half of each layer's experts train
    .venv/bin/python benchmarks/optimizer_state.py --speech-experts 16

Bytes are what ZeRO-2 keeps for the optimizer: the fp32 master partition (4 B per trainable element) and Adam's
two fp32 moments (8 B), counted from the engine's own tensors after one step.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from deeptalk.audio_input import AudioInputConfig  # noqa: E402
from deeptalk.model.config import BackboneConfig, LossConfig, SpeechLMConfig  # noqa: E402
from deeptalk.model.expert_rows import separate_trainable_experts  # noqa: E402
from deeptalk.model.experts import ExpertSplit  # noqa: E402
from deeptalk.model.switches import ParamGroup as G  # noqa: E402
from deeptalk.model.freezing import apply_trainable, count_trainable  # noqa: E402
from deeptalk.model.speech_lm import SpeechLM  # noqa: E402
from deeptalk.runtime import setup_threads  # noqa: E402
from deeptalk.testing.mini_checkpoints import build_deepseek_v2_lite  # noqa: E402
from deeptalk.tokens import TokenLayout  # noqa: E402
from deeptalk.training import distributed  # noqa: E402

# S2a's trainable groups (deeptalk/training/stages.py: the shared parts + the speech experts)
S2A = (G.ROUTERS, G.SHARED_EXPERTS, G.DENSE_LAYER0, G.NORMS, G.EMBEDDINGS, G.SPEECH_EXPERTS)


def optimizer_bytes(model: SpeechLM, rows: bool, split: ExpertSplit) -> tuple[int, int]:
    """(bytes of fp32 master + Adam moments held by ZeRO-2 after one step, trainable elements)."""
    import deepspeed

    groups = apply_trainable(model, S2A, split)
    trainable = count_trainable(model)
    if rows:
        groups = separate_trainable_experts(model, groups)
    optimizer = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95))
    config = {"train_micro_batch_size_per_gpu": 1, "train_batch_size": 1, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 2}, "steps_per_print": 10**9}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    ids = torch.randint(0, model.layout.text_vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    loss = model.backbone(input_ids=ids).logits.float().pow(2).mean()
    engine.backward(loss)
    engine.step()
    zero = engine.optimizer
    master = sum(t.numel() * t.element_size() for t in zero.single_partition_of_fp32_groups)
    moments = sum(t.numel() * t.element_size() for s in zero.optimizer.state.values() for t in s.values()
                  if torch.is_tensor(t) and t.ndim)
    return master + moments, trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech-experts", type=int, default=32, help="speech experts per MoE layer (of 64)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    setup_threads()
    distributed.init(device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = build_deepseek_v2_lite(Path(tmp) / "DeepSeek-V2-Lite-Chat")
        backbone = BackboneConfig(family="deepseek_v2", checkpoint=str(path), head="untied",
                                  experts_implementation="sorted_mm")
        layout = TokenLayout(text_vocab_size=512, n_audio_streams=7, codebook_size=64, voices=("joe",))
        audio = AudioInputConfig(max_seconds=0.32, encoder_layers=1, encoder_dim=16, encoder_heads=2,
                                 encoder_ffn_dim=32, projector_stride=4, projector_hidden=32)
        cfg = SpeechLMConfig(backbone, layout, audio, LossConfig())
        results = {}
        for rows in (False, True):
            torch.manual_seed(0)
            model = SpeechLM.build(cfg).train()
            n_layers = len(model.moe_layers())
            split = ExpertSplit([list(range(0, 64, 64 // args.speech_experts))[: args.speech_experts]] * n_layers)
            results[rows] = optimizer_bytes(model, rows, split)
        experts = sum(moe.experts.gate_up_proj.numel() + moe.experts.down_proj.numel() for moe in model.moe_layers())
    (before, trainable), (after, _) = results[False], results[True]
    print(f"trainable_elements: {trainable}")
    print(f"routed_expert_elements: {experts}")
    print(f"optimizer_bytes_masked_fused: {before}")
    print(f"optimizer_bytes_expert_rows: {after}")
    print(f"bytes_per_trainable_element_expert_rows: {after / trainable:.2f}")
    print(f"ratio_rows_over_fused: {after / before:.3f}")


if __name__ == "__main__":
    main()

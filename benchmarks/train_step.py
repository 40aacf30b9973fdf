"""Training throughput of the stage runner vs the same model with a per-expert Python loop dispatch.

    .venv/bin/python benchmarks/train_step.py [--shapes tiny,finegrained] [--steps 12] [--threads 1]

Both sides run the real runner (``deeptalk.training.loop.train``: DeepSpeed engine, ZeRO-2, gloo, the S3
"joint" spec's trainable groups, expert-load recording) on identical synthetic speech+text batches with the
pipeline's vocabulary layout (1023 text ids, 7 codec streams of 4096). They differ only in the experts
implementation: the configured one (``model.experts_implementation``) vs ``loop``, the reference's training
path (DeepSeek ``moe_infer``-style: for each expert, gather its tokens, run its SwiGLU, scatter back).
Shapes: ``tiny`` (the tiny profile: 8 experts top-2) and ``finegrained`` (DeepSeek-V2-Lite's expert
geometry, 64 experts top-6 + 2 shared, at hidden 128). Tokens/s is measured after ``--warmup`` steps.
It also prints the share of a step spent outside the decoder stack (tied full-vocabulary head and
per-stream losses), which bounds what any experts implementation can gain. Prints ``name: value`` lines,
ratios last.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".venv" / "torch_extensions"))

from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS  # noqa: E402

from deeptalk.batch import SpeechBatch  # noqa: E402
from deeptalk.config import load_config  # noqa: E402
from deeptalk.model.config import SpeechLMConfig  # noqa: E402
from deeptalk.model.experts_impl import reference_loop_forward  # noqa: E402
from deeptalk.model.freezing import apply_trainable  # noqa: E402
from deeptalk.model.speech_lm import SpeechLM  # noqa: E402
from deeptalk.tokens import IGNORE_INDEX, TokenLayout  # noqa: E402
from deeptalk.training import distributed  # noqa: E402
from deeptalk.training.loop import LoopConfig, train  # noqa: E402
from deeptalk.training.runner import SpeechProgram  # noqa: E402
from deeptalk.training.stages import get_stage  # noqa: E402

LOOP = "loop"
LAYOUT = TokenLayout(text_vocab_size=1023, n_audio_streams=7, codebook_size=4096)


def _loop_experts(self, hidden_states, top_k_index, top_k_weights):
    return reference_loop_forward(self.gate_up_proj, self.down_proj, hidden_states, top_k_index,
                                  top_k_weights.to(hidden_states.dtype))


def backbone_for(shape: str, base):
    if shape == "tiny":
        return base
    if shape == "finegrained":
        return dataclasses.replace(base, n_routed_experts=64, num_experts_per_tok=6, n_shared_experts=2,
                                   moe_intermediate_size=88)
    raise ValueError(f"unknown shape {shape!r}; use tiny or finegrained")


def batches(batch_size: int, length: int):
    """Batch of step i: text prompt then a spoken answer (codes on all 7 streams) — no user audio."""
    k = LAYOUT.n_audio_streams
    pad_a = torch.tensor([LAYOUT.audio_special("PAD_A", s) for s in range(k)])

    def make(step: int) -> SpeechBatch:
        g = torch.Generator().manual_seed(step)
        ids = torch.empty(batch_size, length, k + 1, dtype=torch.long)
        ids[..., :k] = pad_a
        ids[..., k] = torch.randint(0, LAYOUT.text_vocab_size, (batch_size, length), generator=g)
        half = length // 2
        for s in range(k):
            codes = torch.randint(0, LAYOUT.codebook_size, (batch_size, length - half), generator=g)
            ids[:, half:, s] = LAYOUT.stream_offset(s) + codes
        labels = ids.clone()
        labels[:, 0] = IGNORE_INDEX
        return SpeechBatch(ids, torch.ones(batch_size, length, dtype=torch.long), labels)

    return make


def measure(shape: str, impl: str, args, dist, workdir: Path) -> float:
    cfg = load_config(workdir / "params.yaml", profile="tiny", root=workdir)
    backbone = backbone_for(shape, cfg.model)
    if impl != LOOP:
        backbone = dataclasses.replace(backbone, experts_implementation=impl)
    torch.manual_seed(0)
    model = SpeechLM.build(SpeechLMConfig(backbone, LAYOUT, cfg.audio_input))
    if impl == LOOP:
        model.backbone.set_experts_implementation(LOOP)
    spec = get_stage("s3").phases[0]
    groups = apply_trainable(model, spec.trainable)
    model.train()
    loop = LoopConfig(steps=args.warmup + args.steps, batch_size=args.batch, lr=1e-4, log_every=args.warmup,
                      checkpoint_every=10**9, deepspeed_config="zero2")
    out = workdir / f"{shape}-{impl}"
    program = SpeechProgram(model, batches(args.batch, args.length), dist.device)
    program.export = lambda module, d: None  # throughput only: no weights written
    train(model, groups, program, loop, out, out / "ckpt", dist, desc=f"{shape}/{impl}")
    import json

    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["tokens_per_s"]  # the interval after warm-up


def head_share(args, workdir: Path) -> float:
    """Share of one forward+backward spent outside the decoder stack (tied full-vocabulary head, per-stream
    slices and losses): 1 − time(decoder only) / time(whole model), same batch, same weights."""
    import time

    cfg = load_config(workdir / "params.yaml", profile="tiny", root=workdir)
    torch.manual_seed(0)
    model = SpeechLM.build(SpeechLMConfig(cfg.model, LAYOUT, cfg.audio_input)).train()
    batch = batches(args.batch, args.length)(0)

    def timed(fn) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            fn()
            model.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / 3

    def whole() -> None:
        model(batch).loss.backward()

    def decoder_only() -> None:
        hidden = model.backbone.model(inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask)
        hidden.last_hidden_state.float().pow(2).mean().backward()

    return 1.0 - timed(decoder_only) / timed(whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,finegrained")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if LOOP not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(LOOP, _loop_experts)
    dist = distributed.init()
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            base = load_config(Path(tmp) / "params.yaml", profile="tiny").model
            impl = backbone_for(shape, base).experts_implementation
            fast = measure(shape, impl, args, dist, Path(tmp))
            slow = measure(shape, LOOP, args, dist, Path(tmp))
            print(f"{shape}/runner[{impl}] tokens/s: {fast:.0f}")
            print(f"{shape}/per-expert-loop tokens/s: {slow:.0f}")
            ratios[shape] = fast / slow
        share = head_share(args, Path(tmp))
    print(f"tiny/step time outside the decoder (head + losses): {100 * share:.0f} %")
    for shape, ratio in ratios.items():
        print(f"{shape}/ratio runner vs loop: {ratio:.2f}x")


if __name__ == "__main__":
    main()

"""Train the pipeline's hearing head (``deeptalk.model.hearing.CTCHead``) alone on the stored frames and print
held-out CTC WER every 500 steps: a quick way to compare S1 recipes (data, regularisation) without the pipeline.

Run from a project directory after ``encode``::

    python scripts/hearing_sweep.py --tasks asr,aqa,rqa --dropout 0.3 --time-masks 4 --channel-masks 4 \\
        --channel-mask-width 48 --weight-decay 0.01 --steps 1500

Held-out clips are the held-out ASR clips in the profile's held-out voices (as ``scripts/listening_eval.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pandas as pd
import torch

from deeptalk.config import load_config
from deeptalk.data.processed import ProcessedStore
from deeptalk.data.text_tokenizer import load_tokenizer
from deeptalk.evaluation.asr_scorer import wer
from deeptalk.model.hearing import CTCHead, hear


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="asr", help="training clips: user turns of these tasks")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--dropout", type=float, default=None)
    ap.add_argument("--time-masks", type=int, default=None)
    ap.add_argument("--channel-masks", type=int, default=None)
    ap.add_argument("--channel-mask-width", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    cfg = load_config("params.yaml")
    overrides = {"ctc_dropout": args.dropout, "ctc_time_masks": args.time_masks, "ctc_channel_masks": args.channel_masks,
                 "ctc_channel_mask_width": args.channel_mask_width, "projector_hidden": args.hidden}
    audio = dataclasses.replace(cfg.audio_input, **{k: v for k, v in overrides.items() if v is not None})
    store = ProcessedStore(cfg.paths.processed)
    tok = load_tokenizer(cfg.paths.raw / "tokenizer")
    utts = pd.read_parquet(cfg.paths.raw / "utterances.parquet").set_index("id")
    tasks = set(args.tasks.split(","))
    train = [u for u in store.n_positions if utts.loc[u, "split"] == "train" and utts.loc[u, "task"] in tasks]
    held = [u for u in store.n_positions if utts.loc[u, "split"] == "heldout" and utts.loc[u, "task"] == "asr"
            and utts.loc[u, "speaker"] in set(cfg.data.heldout_speakers)]
    frames = {u: torch.from_numpy(store.frames(u)) for u in train + held}
    targets = {u: tok.encode(utts.loc[u, "text"]) for u in train}
    head = CTCHead(audio, tok.vocab_size)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, int(0.03 * args.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / args.steps))))
    rng = np.random.default_rng(args.seed)
    curve = []
    for step in range(1, args.steps + 1):
        head.train()
        pick = [train[i] for i in rng.integers(len(train), size=args.batch_size)]
        lengths = torch.tensor([frames[u].shape[0] for u in pick])
        batch = torch.zeros(len(pick), int(lengths.max()), audio.encoder_dim)
        target_lengths = torch.tensor([len(targets[u]) for u in pick])
        target = torch.zeros(len(pick), int(target_lengths.max()), dtype=torch.long)
        for j, u in enumerate(pick):
            batch[j, : lengths[j]] = frames[u]
            target[j, : target_lengths[j]] = torch.tensor(targets[u])
        loss = head.loss(batch, lengths, target, target_lengths)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 500 == 0 or step == args.steps:
            head.eval()
            with torch.no_grad():
                hyps = [tok.decode(hear(head, frames[u][None], [frames[u].shape[0]], 1.0)[0].tokens.tolist())
                        for u in held]
            curve.append({"step": step, "heldout_wer": wer([utts.loc[u, "text"] for u in held], hyps),
                          "train_loss": float(loss.detach())})
            print(json.dumps(curve[-1]), flush=True)
    print(json.dumps({"train_clips": len(train), "heldout_clips": len(held), "args": vars(args), "curve": curve}))


if __name__ == "__main__":
    main()

"""How well can a dedicated head listen on the stored frozen-Whisper frames? A ceiling for the tiny corpus.

Trains a CTC head (linear, MLP or BiLSTM) from ``data/processed`` frames to words (the model's word-level
vocabulary, at the projector's position rate) or characters, on the training split's input utterances, and
prints held-out WER/CER every 500 steps. If this head cannot transcribe the held-out clips, the speech LM
(which must also learn to align) cannot either: it separates "the data/features cannot support it" from "the
model does not learn it". Run from a project directory after ``encode``::

    python scripts/listening_probe.py --head mlp --target words --steps 1000
"""

from __future__ import annotations

import argparse
import re
import time

import jiwer
import pandas as pd
import torch
from torch import nn

from deeptalk.data.processed import ProcessedStore


def normalise(text: str) -> str:
    return re.sub(r"[^a-z' ]", "", text.lower()).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", choices=("linear", "mlp", "lstm"), default="mlp")
    ap.add_argument("--target", choices=("words", "chars"), default="words")
    ap.add_argument("--stride", type=int, default=4, help="frames per position (the projector's: 4 = 12.5/s)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-split", default="heldout", help="heldout (held-out voices) or validation")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    store = ProcessedStore("data/processed")
    utterances = pd.read_parquet("data/raw/utterances.parquet").set_index("id")
    index = pd.read_parquet("data/processed/index.parquet")
    index = index[index.is_input]
    train_words = {w for t in utterances[utterances.split == "train"].text for w in normalise(t).split()}
    symbols = sorted(train_words) + ["<unk>"] if args.target == "words" else list(" abcdefghijklmnopqrstuvwxyz'")
    ids = {s: i + 1 for i, s in enumerate(symbols)}  # 0 = CTC blank

    def items(split: str) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
        out = []
        for row in index[index.split == split].itertuples():
            frames = torch.from_numpy(store.frames(row.utt_id))
            frames = frames[: frames.shape[0] // args.stride * args.stride].reshape(-1, args.stride * frames.shape[1])
            text = normalise(utterances.loc[row.utt_id, "text"])
            units = text.split() if args.target == "words" else list(text)
            out.append((frames, torch.tensor([ids.get(u, ids.get("<unk>", 0)) for u in units]), text))
        return out

    train, test = items("train"), items(args.eval_split)
    oov = sum(w not in train_words for _, _, t in test for w in t.split()) / max(1, sum(len(t.split()) for *_, t in test))
    print(f"{len(train)} training clips, {len(test)} {args.eval_split} clips, {len(symbols)} symbols, "
          f"{args.eval_split} words never heard in training: {oov:.1%}")
    dim, n_out = train[0][0].shape[1], len(symbols) + 1
    if args.head == "linear":
        net: nn.Module = nn.Linear(dim, n_out)
    elif args.head == "mlp":
        net = nn.Sequential(nn.Linear(dim, 256), nn.GELU(), nn.Linear(256, n_out))
    else:
        class BiLSTM(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inp, self.rnn, self.out = nn.Linear(dim, 128), nn.LSTM(128, 128, 2, batch_first=True, bidirectional=True), nn.Linear(256, n_out)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.out(self.rnn(self.inp(x))[0])
        net = BiLSTM()
    opt = torch.optim.AdamW(net.parameters(), 2e-3)
    ctc = nn.CTCLoss(zero_infinity=True)

    def log_probs(batch):
        x = nn.utils.rnn.pad_sequence([b[0] for b in batch], batch_first=True)
        return net(x).log_softmax(-1), torch.tensor([b[0].shape[0] for b in batch])

    def greedy(lp: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        sep = " " if args.target == "words" else ""
        out = []
        for row, n in zip(lp.argmax(-1), lengths):
            units, prev = [], 0
            for c in row[:n].tolist():
                if c != prev and c:
                    units.append(symbols[c - 1])
                prev = c
            out.append(re.sub(" +", " ", sep.join(units)).strip() or "x")
        return out

    gen, start = torch.Generator().manual_seed(0), time.perf_counter()
    for step in range(args.steps):
        batch = [train[i] for i in torch.randint(len(train), (16,), generator=gen)]
        lp, n = log_probs(batch)
        loss = ctc(lp.transpose(0, 1), torch.cat([b[1] for b in batch]), n, torch.tensor([len(b[1]) for b in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == args.steps - 1:
            with torch.no_grad():
                hyp = greedy(*log_probs(test))
            refs = [t for *_, t in test]
            print(f"step {step}: loss {loss.item():.3f}  {args.eval_split} WER {jiwer.wer(refs, hyp):.3f} "
                  f"CER {jiwer.cer(refs, hyp):.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""The head choice measured: how exactly the imported model reads text as the source LLM, before any training.

    .venv/bin/python benchmarks/import_head.py [--sentences 32]

Builds the mini DeepSeek-V2-Lite-Chat (``deeptalk.testing.mini_checkpoints``: hub layout, untied head, 64 experts
top-6, bf16 weights), imports it as the pipeline does (layout from the checkpoint's embedding rows, SNAC's 7 ×
4096 audio blocks) with ``model.head`` ``untied`` (keep the source's head) and ``tied`` (the reference's), in
float32 and bfloat16, and compares next-token logits with the source model's own ``AutoModelForCausalLM`` on
the same token ids (``deeptalk.evaluation.text_ability.source_agreement``). Prints ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deeptalk.audio_input import AudioInputConfig  # noqa: E402
from deeptalk.data.packing import layout_for  # noqa: E402
from deeptalk.data.text_tokenizer import HFTextTokenizer  # noqa: E402
from deeptalk.evaluation.text_ability import source_agreement  # noqa: E402
from deeptalk.model.backbone import checkpoint_vocab_rows  # noqa: E402
from deeptalk.model.config import BackboneConfig, SpeechLMConfig  # noqa: E402
from deeptalk.model.speech_lm import SpeechLM  # noqa: E402
from deeptalk.testing.mini_checkpoints import _BPE_TEXT, build_deepseek_v2_lite  # noqa: E402

SENTENCES = [*_BPE_TEXT, "Which planet is closest to the sun?", "Mercury is the closest planet to the sun.",
             "How many days are in a leap year?", "A leap year has three hundred sixty six days."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        lite = build_deepseek_v2_lite(Path(tmp) / "lite")
        tok = HFTextTokenizer.load(lite)
        texts = [tok.encode(s) for s in (SENTENCES * 8)[: args.sentences]]
        layout = layout_for(tok, SimpleNamespace(n_streams=7, codebook_size=4096), text_rows=checkpoint_vocab_rows(lite))
        print(f"tokenizer_tokens: {tok.vocab_size}")
        print(f"checkpoint_rows: {layout.text_vocab_size}")
        print(f"layout_vocab: {layout.vocab_size}")
        audio = AudioInputConfig(encoder_layers=1, encoder_dim=16, encoder_heads=2, encoder_ffn_dim=32)
        for dtype in ("float32", "bfloat16"):
            for head in ("untied", "tied"):
                torch.manual_seed(0)
                backbone = BackboneConfig(checkpoint=str(lite), head=head, dtype=dtype)
                model = SpeechLM.build(SpeechLMConfig(backbone, layout, audio))
                result = source_agreement(model, lite, texts)
                for key in ("argmax_agreement", "argmax_agreement_text_block", "max_abs_logit_diff"):
                    print(f"{head}_{dtype}_{key}: {result[key]:.4f}")
                print(f"{head}_{dtype}_positions: {result['positions']}")


if __name__ == "__main__":
    main()

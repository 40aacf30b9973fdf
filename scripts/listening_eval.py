"""Measure listening on the whole held-out sets: ``python scripts/listening_eval.py --model models/stages/s3``.

ASR WER (the LM's transcript and, with a CTC head, the head's own) on every held-out ASR clip and spoken QA
(spoken vs typed, text answers) on every held-out spoken question, in the held-out voices
(``deeptalk.evaluation.listening``). Prints JSON; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from deeptalk.config import load_config
from deeptalk.environment import apply_env_defaults
from deeptalk.evaluation.engine import load_engine
from deeptalk.evaluation.heldout import load_heldout
from deeptalk.evaluation.listening import ctc_wer, evaluate_listening
from deeptalk.runtime import setup_threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained stage directory (models/stages/s3)")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--max-asr", type=int, default=0, help="0: every held-out clip")
    parser.add_argument("--max-spoken-qa", type=int, default=0, help="0: every held-out spoken question")
    parser.add_argument("--ctc-only", action="store_true",
                        help="only the CTC head's held-out WER (fast: no decoding; e.g. S1 snapshots for a curve)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    apply_env_defaults()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.params, profile=args.profile)
    setup_threads(cfg.threads)
    held = load_heldout(cfg.paths.raw, max_spoken_qa=args.max_spoken_qa, max_asr=args.max_asr,
                        speakers=cfg.data.heldout_speakers)
    engine = load_engine(cfg, args.model)
    if args.ctc_only:
        result = {"asr": {"ctc_wer": ctc_wer(engine, held.asr), "n": len(held.asr)}}
    else:
        result = evaluate_listening(engine, held, cfg.evaluation.distinct_questions)
    result["model"] = str(args.model)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

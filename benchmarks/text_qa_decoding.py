"""Held-out text QA decoding: one question at a time through the generator (KV cache) vs batched greedy
decoding (``text_ability.greedy_text_answers``), side by side on the same model and questions. Prints
``name: value`` lines (CPU and wall seconds per question, their ratios) and checks both give the same answers.

    .venv/bin/python benchmarks/text_qa_decoding.py --model models/stages/s3 --n 64
    .venv/bin/python benchmarks/text_qa_decoding.py --model /path/models/stages/s3 --raw /path/data/raw

CPU seconds (all threads) are the figure to compare on a shared machine; wall seconds depend on other jobs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deeptalk.data.text_tokenizer import load_tokenizer  # noqa: E402
from deeptalk.evaluation.heldout import load_heldout  # noqa: E402
from deeptalk.evaluation.text_ability import (  # noqa: E402
    GREEDY,
    TextOnlyLM,
    greedy_text_answer,
    greedy_text_answers,
)
from deeptalk.inference.generator import Generator  # noqa: E402


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/stages/s3")
    ap.add_argument("--raw", default="data/raw")
    ap.add_argument("--n", type=int, default=64, help="held-out questions")
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()

    from deeptalk.model import SpeechLM
    from deeptalk.model.switches import RoutingMode

    model = SpeechLM.from_pretrained(args.model).eval()
    model.set_routing(RoutingMode.NONE)
    tokenizer = load_tokenizer(Path(args.raw) / "tokenizer")
    questions = [tokenizer.encode(q.question) for q in load_heldout(args.raw, max_text_qa=args.n).text_qa]
    generator = Generator(TextOnlyLM(model), GREEDY, model.device)
    one, one_wall, one_cpu = _timed(
        lambda: [greedy_text_answer(generator, model.layout, q, args.max_tokens) for q in questions])
    batched, b_wall, b_cpu = _timed(lambda: greedy_text_answers(model, model.layout, questions, args.max_tokens))
    n = len(questions)
    print(f"questions: {n}")
    print(f"answer_tokens_mean: {sum(map(len, one)) / n:.1f}")
    print(f"one_by_one_cpu_s_per_question: {one_cpu / n:.4f}")
    print(f"batched_cpu_s_per_question: {b_cpu / n:.4f}")
    print(f"one_by_one_wall_s_per_question: {one_wall / n:.4f}")
    print(f"batched_wall_s_per_question: {b_wall / n:.4f}")
    print(f"cpu_ratio_one_by_one_over_batched: {one_cpu / b_cpu:.2f}")
    print(f"wall_ratio_one_by_one_over_batched: {one_wall / b_wall:.2f}")
    same = sum(a == b for a, b in zip(one, batched))
    print(f"same_answers: {same}/{n}")


if __name__ == "__main__":
    main()

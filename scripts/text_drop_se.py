"""How big must the held-out text sets be for the text drop's standard error to be <= 2 points? (issue 20)

Scores every held-out typed question (all phrasings) and every held-out sentence once per model, keeping the
per-item scores, then computes the drop and its paired and unpaired standard errors for candidate set sizes
from those scores (prefixes in the order the evaluation caps them: ``evaluation.max_text_qa`` takes whole
phrasing rounds, ``evaluation.max_ppl_samples`` whole rounds of statements). Also times each part, so the
cost of a size is (seconds per item) x (items).

    cd <project> && python scripts/text_drop_se.py --base models/base --model models/stages/s3 \\
        --out reports/text_drop_se.json

``--scores`` reuses the per-item scores written by an earlier run (no model is loaded).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

from deeptalk.config import load_config
from deeptalk.evaluation.heldout import load_heldout
from deeptalk.evaluation.text_ability import (
    ItemScores,
    TextAbility,
    evaluate_text_ability,
    load_tokenizer,
    own_standard_errors,
    relative_drop_pct,
)

log = logging.getLogger("text_drop_se")


def score(model_dir: str, tokenizer, held, n_tok: int, device: str = "cpu") -> tuple[TextAbility, dict[str, float]]:
    """Per-item scores of the model at ``model_dir`` on every held-out question and sentence, and the seconds
    each part took, wall and CPU (QA: greedy answers + answer NLL; sentences: NLL). CPU seconds (all threads)
    are the cost to compare on a shared machine, where wall time depends on the other jobs."""
    from deeptalk.model import SpeechLM
    from deeptalk.model.switches import RoutingMode

    model = SpeechLM.from_pretrained(model_dir).to(device).eval()
    model.set_routing(RoutingMode.NONE)
    t0, c0 = time.perf_counter(), time.process_time()
    qa = evaluate_text_ability(model, tokenizer, held.text_qa, [], n_tok)
    t1, c1 = time.perf_counter(), time.process_time()
    text = evaluate_text_ability(model, tokenizer, held.text_qa[:1], held.sentences, n_tok, held.sentence_facts)
    t2, c2 = time.perf_counter(), time.process_time()
    items = replace(qa.items, text_nll=text.items.text_nll, text_tokens=text.items.text_tokens,
                    text_clusters=text.items.text_clusters)
    seconds = {"qa": t1 - t0, "sentences": t2 - t1, "qa_cpu": c1 - c0, "sentences_cpu": c2 - c1,
               "qa_items": len(held.text_qa), "sentence_items": len(held.sentences)}
    return from_items(items, qa.benchmark), seconds


def from_items(items: ItemScores, benchmark: str) -> TextAbility:
    """The figures and own errors of ``items`` (what evaluate_text_ability reports for them)."""
    acc = sum(items.qa_correct) / len(items.qa_correct)
    n_answer, n_text = sum(items.answer_tokens), sum(items.text_tokens)
    errors = own_standard_errors(items)
    return TextAbility(qa_acc=acc, qa_exact=acc, n_qa=len(items.qa_correct),
                       answer_ppl=math.exp(sum(items.answer_nll) / n_answer), n_answer_tokens=n_answer,
                       ppl=math.exp(sum(items.text_nll) / n_text) if n_text else None, n_tokens=n_text,
                       benchmark=benchmark, qa_acc_se=errors["qa_acc"], answer_ppl_se=errors["answer_ppl"],
                       ppl_se=errors["ppl"], items=items)


def subset(result: TextAbility, n_qa: int, n_text: int) -> TextAbility:
    it = result.items
    return from_items(ItemScores(it.qa_correct[:n_qa], it.answer_nll[:n_qa], it.answer_tokens[:n_qa],
                                 it.qa_clusters[:n_qa], it.text_nll[:n_text], it.text_tokens[:n_text],
                                 it.text_clusters[:n_text]), result.benchmark)


def size_table(results: dict[str, TextAbility], seconds: dict[str, dict], base_name: str,
               min_base_qa_correct: int) -> list[dict]:
    """Drop, paired and unpaired errors of every model for candidate (questions, sentences) sizes: 1-4 phrasing
    rounds of questions x 64 sentences (the old cap) or 1, 2 or 4 rounds of statements."""
    base = results[base_name]
    n_facts = len(set(base.items.qa_clusters))
    n_qa_all, n_text_all = len(base.items.qa_correct), len(base.items.text_nll)
    sizes = sorted({(min(k * n_facts, n_qa_all), min(j, n_text_all))
                    for k in range(1, 5) for j in (64, n_facts, 2 * n_facts, 4 * n_facts)})
    table = []
    for name, model in results.items():
        if name == base_name:
            continue
        items = {"qa": "qa_items", "sentences": "sentence_items"}
        per_item = {part: seconds[name][part] / seconds[name][items[part.removesuffix("_cpu")]]
                    for part in ("qa", "sentences", "qa_cpu", "sentences_cpu")}
        for n_qa, n_text in sizes:
            drops = relative_drop_pct(subset(base, n_qa, n_text), subset(model, n_qa, n_text), min_base_qa_correct)
            row = {"model": name, "n_qa": n_qa, "n_sentences": n_text,
                   "eval_s_per_model": per_item["qa"] * n_qa + per_item["sentences"] * n_text,
                   "eval_cpu_s_per_model": per_item["qa_cpu"] * n_qa + per_item["sentences_cpu"] * n_text, **drops}
            table.append(row)
            parts = "  ".join(f"{t} {_pm(drops, f'drop_pct_{t}')}" for t in ("qa_acc", "inv_answer_ppl", "inv_ppl"))
            log.info("%s  QA %4d  sentences %4d: drop %s (unpaired SE %.2f)  %s  ~%.0f CPU s/model", name, n_qa,
                     n_text, _pm(drops, "drop_pct"), drops["drop_pct_se_unpaired"] or math.nan, parts,
                     row["eval_cpu_s_per_model"])
    return table


def _pm(drops: dict, key: str) -> str:
    value, se = drops.get(key), drops.get(f"{key}_se")
    return "n/a" if value is None else f"{value:.2f}+-{se if se is not None else math.nan:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--model", action="append", help="model directory (repeatable)")
    ap.add_argument("--scores", help="per-item scores JSON of an earlier run (no model is loaded)")
    ap.add_argument("--out", default="reports/text_drop_se.json")
    ap.add_argument("--profile", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(profile=args.profile)
    if args.scores:
        stored = json.loads(Path(args.scores).read_text())
        results = {k: TextAbility.from_dict(v) for k, v in stored["scores"].items()}
        seconds = stored["seconds"]
    else:
        from deeptalk.runtime import resolve_device

        held = load_heldout(cfg.paths.raw, speakers=cfg.data.heldout_speakers)
        tokenizer, device = load_tokenizer(cfg), resolve_device(cfg.device)
        results, seconds = {}, {}
        for name in [args.base, *(args.model or [])]:
            results[name], seconds[name] = score(name, tokenizer, held, cfg.evaluation.max_answer_tokens, device)
            log.info("%s: %s", name, seconds[name])
    table = size_table(results, seconds, args.base, cfg.evaluation.min_base_qa_correct)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seconds": seconds, "table": table,
                               "scores": {k: v.to_dict() for k, v in results.items()}}, indent=1) + "\n")
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()

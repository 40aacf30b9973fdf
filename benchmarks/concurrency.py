"""Batched scheduler vs one decode loop per session, side by side in one run, through the real HTTP server.

    nice -n 19 .venv/bin/python benchmarks/concurrency.py [--levels 1 4 8 16] [--duration 20] [--max-steps 60]

Serves the same packaged model (``deeptalk.serving.bench.bench_package``: the trained S3 model when the pipeline
has made one, else a random model with the profile's architecture) twice with ``bentoml serve``: ``batching``
on (one scheduler steps every answer together) and off (each answer decodes alone in its own thread), both with
``max_concurrency`` = the highest level. At each level N, N clients send ``POST /chat`` back to back for
``--duration`` seconds, spoken questions (espeak WAVs) and typed ones in turn, every answer spoken. Per mode and
level it prints: first audio p50/p90 (client side, request sent → first ``audio.delta``), the real-time factor
of each stream (server ``timings.rtf``: generation time / audio produced; p50 and worst), answers per second,
and errors (non-200, a stream without one final ``done``, text deltas that do not add up); then the ratios the
issue asks for: batched answers/s over per-session at each level and first-audio p50 at N over N = 1. Both
servers stay up and the modes take turns at each level, so a change in the machine's load hits both alike.

First, in this process and without codec or HTTP, the model side alone: answer-steps per second of N answers
decoded in one scheduler batch vs one after another (what batching buys where the LM step dominates).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import httpx

from deeptalk.config import load_config
from deeptalk.serving.bench import QUESTIONS, bench_package, espeak_wav, percentile
from deeptalk.serving.local_server import LocalServer, store_package_in

MODES = {"batched": True, "per_session": False}
ALONE_ANSWERS = 2


def chat(client: httpx.Client, url: str, i: int, wavs: list[bytes]) -> dict:
    spoken = i % 2 == 0
    kwargs = (
        {"files": {"audio": ("q.wav", wavs[i % len(wavs)], "audio/wav")}}
        if spoken
        else {"json": {"text": QUESTIONS[i % len(QUESTIONS)]}}
    )
    t0 = time.perf_counter()
    first_audio, events = None, []
    with client.stream("POST", f"{url}/chat", timeout=600, **kwargs) as resp:
        if resp.status_code != 200:
            return {"error": f"status {resp.status_code}: {resp.read()[:200]!r}"}
        for line in resp.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            if event["type"] == "audio.delta" and first_audio is None:
                first_audio = (time.perf_counter() - t0) * 1000
            events.append(event)
    kinds = [e["type"] for e in events]
    if kinds.count("done") != 1 or kinds[-1] != "done":
        return {"error": f"stream without exactly one final done: {kinds[-3:]}"}
    text = "".join(e["text"] for e in events if e["type"] == "text.delta").strip()
    if text != events[-1]["text"]:
        return {"error": "text deltas do not add up to the final text"}
    timings = events[-1]["timings"]
    return {
        "spoken": spoken,
        "first_audio_ms": first_audio,
        "rtf": timings["rtf"],
        "audio_s": timings["audio_seconds"],
        "steps": timings["steps"],
        "wall_ms": (time.perf_counter() - t0) * 1000,
    }


def run_level(url: str, n: int, duration: float, wavs: list[bytes]) -> dict:
    """``n`` closed-loop clients for ``duration`` seconds (requests started before the end finish)."""
    results: list[dict] = []
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + duration

    def client(cid: int) -> None:
        with httpx.Client() as http:
            i = cid
            while time.perf_counter() < stop_at:
                try:
                    r = chat(http, url, i, wavs)
                except httpx.HTTPError as err:
                    r = {"error": f"{type(err).__name__}: {err}"}
                with lock:
                    results.append(r)
                i += n

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ok = [r for r in results if "error" not in r]
    first = [r["first_audio_ms"] for r in ok if r["first_audio_ms"] is not None]
    rtf = [r["rtf"] for r in ok if r["rtf"] is not None]
    return {
        "clients": n,
        "elapsed_s": round(elapsed, 2),
        "answers": len(ok),
        "errors": len(results) - len(ok),
        "error_examples": [r["error"] for r in results if "error" in r][:3],
        "first_audio_ms": {"p50": percentile(first, 50), "p90": percentile(first, 90)},
        "rtf": {"p50": percentile(rtf, 50), "max": max(rtf) if rtf else None},
        "answers_per_s": len(ok) / elapsed,
        "audio_s_per_answer": sum(r["audio_s"] for r in ok) / max(len(ok), 1),
    }


def decode_only(package: Path, service, levels: list[int]) -> dict:
    """The model side alone, in this process: N typed answers of ``max_steps`` spoken steps decoded by the
    scheduler in one batch vs answers decoded one at a time by a Generator (no codec, no HTTP)."""
    from deeptalk.data.packing import TokenizedTurn
    from deeptalk.inference.engine import Engine
    from deeptalk.inference.generator import Decoder, Generator
    from deeptalk.inference.prompt import build_prompt
    from deeptalk.inference.scheduler import Scheduler

    engine = Engine.load(package, replace(service, warmup=False))
    code = engine.layout.answer_code(engine.default_voice)
    prompts = [
        build_prompt([TokenizedTurn("user", engine.check_text(q))], engine.layout, {}, {}, engine.max_prompt_positions)
        for q in QUESTIONS
    ]
    kw = {"speak": True, "answer_code": code, "max_steps": service.max_steps}
    for _ in Generator(engine.model, service.sampling, engine.device).generate(prompts[0], **kw):
        pass  # warm-up: first-call allocations are not part of either figure
    out = {}
    for n in levels:  # alone and batched back to back at each level, so a change in load hits both alike
        t0 = time.perf_counter()
        steps = 0
        for i in range(ALONE_ANSWERS):  # one at a time: the rate does not depend on how many wait
            gen = Generator(engine.model, service.sampling, engine.device)
            steps += sum(1 for _ in gen.generate(prompts[i % len(prompts)], **kw))
        alone = steps / (time.perf_counter() - t0)
        scheduler = Scheduler(engine.model, device=engine.device, prefills_per_step=n)
        streams = [
            scheduler.generate(Decoder(engine.layout, service.sampling, engine.device), prompts[i % len(prompts)], **kw)
            for i in range(n)
        ]
        t0 = time.perf_counter()
        while scheduler.step():
            pass
        batched = sum(sum(1 for _ in s) for s in streams) / (time.perf_counter() - t0)
        out[n] = {"steps_per_s_alone": alone, "steps_per_s_batched": batched, "speedup": batched / alone}
        print(
            f"decode only N={n:<2}  answer-steps/s one answer at a time {alone:.0f}, {n} batched {batched:.0f}"
            f"  ({batched / alone:.2f}x)",
            flush=True,
        )
    return out


def scrape(url: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sums of the named Prometheus samples on ``/metrics`` (all label sets)."""
    out = dict.fromkeys(names, 0.0)
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{")[0].split(" ")[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


def fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per level and mode")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--max-steps", type=int, default=60, help="caps answers of an untrained model")
    ap.add_argument("--out", default="reports/benchmarks/concurrency.json")
    args = ap.parse_args()

    cfg = load_config(args.params, profile=args.profile)
    top = max(args.levels)
    service = replace(cfg.service, max_steps=args.max_steps, max_concurrency=top, max_queue=top, queue_timeout_s=60.0)
    report: dict = {"levels": args.levels, "duration_s": args.duration, "max_steps": args.max_steps, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as servers:
        tmp = Path(tmp)
        package, source = bench_package(cfg, tmp / "package", service)
        report["source"] = source
        print(f"model: {source}")
        report["decode_only"] = decode_only(package, service, args.levels)
        for mode in MODES:  # one BentoML home each: a server clears its home's Prometheus files when it starts
            store_package_in(package, tmp / f"bentoml-{mode}")
        wavs = [espeak_wav(q, tmp / f"q{i}.wav").read_bytes() for i, q in enumerate(QUESTIONS)]
        urls = {
            mode: servers.enter_context(
                LocalServer(
                    bentoml_home=tmp / f"bentoml-{mode}",
                    env={"DEEPTALK_SERVICE": json.dumps({"batching": batching})},
                    log_path=tmp / f"serve-{mode}.log",
                )
            )
            for mode, batching in MODES.items()
        }
        levels: dict[str, dict] = {mode: {} for mode in MODES}
        for n in args.levels:  # the modes take turns at each level, so a change in the machine's load hits both
            for mode, url in urls.items():
                levels[mode][n] = r = run_level(url, n, args.duration, wavs)
                print(
                    f"{mode:>11} N={n:<2}  first audio p50 {fmt(r['first_audio_ms']['p50'], ' ms')}"
                    f"  p90 {fmt(r['first_audio_ms']['p90'], ' ms')}  rtf p50 {fmt(r['rtf']['p50'], '', 2)}"
                    f"  max {fmt(r['rtf']['max'], '', 2)}  answers/s {r['answers_per_s']:.2f}"
                    f"  ({r['answers']} answers, {r['errors']} errors)",
                    flush=True,
                )
        for mode, url in urls.items():
            metrics = scrape(url, ("deeptalk_batch_size_sum", "deeptalk_batch_size_count"))
            healthy = httpx.get(f"{url}/readyz").status_code == 200
            report["modes"][mode] = {"levels": levels[mode], "metrics": metrics, "healthy_after": healthy}
            if metrics["deeptalk_batch_size_count"]:
                mean = metrics["deeptalk_batch_size_sum"] / metrics["deeptalk_batch_size_count"]
                print(f"{mode:>11} mean answers per scheduler step (from /metrics): {mean:.2f}")

    b, s = report["modes"]["batched"]["levels"], report["modes"]["per_session"]["levels"]
    base = args.levels[0]
    print("\nratios (measured side by side above):")
    for n in args.levels:
        speedup = b[n]["answers_per_s"] / s[n]["answers_per_s"] if s[n]["answers_per_s"] else float("nan")
        fa = {m: r[n]["first_audio_ms"]["p50"] for m, r in (("batched", b), ("per_session", s))}
        growth = {
            m: (fa[m] / r[base]["first_audio_ms"]["p50"]) if fa[m] and r[base]["first_audio_ms"]["p50"] else None
            for m, r in (("batched", b), ("per_session", s))
        }
        print(
            f"  N={n:<2} answers/s batched / per-session: {speedup:.2f}x   first audio p50 vs N={base}: batched "
            f"{fmt(growth['batched'], 'x', 2)}, per-session {fmt(growth['per_session'], 'x', 2)}"
        )
    errors = sum(r["errors"] for m in report["modes"].values() for r in m["levels"].values())
    print(f"errors: {errors} (target 0)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()

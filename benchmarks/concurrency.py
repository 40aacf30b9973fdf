"""Concurrent streaming clients against the real HTTP server: errors and first-audio latency under load.

    .venv/bin/python benchmarks/concurrency.py [--clients 8] [--duration 60] [--profile tiny] [--max-steps 60]

Starts ``bentoml serve`` on 127.0.0.1 (model from ``deeptalk.serving.bench.bench_package``) with
``max_concurrency = --clients`` so every client streams at once, then runs ``--clients`` threads for
``--duration`` seconds, each sending ``POST /chat`` requests back to back (spoken questions and text
questions in turn). An error is any non-200 status, a stream without exactly one final ``done`` event, text
deltas that do not add up to the final text, or a transport exception. Prints requests, errors (target 0),
client-side first-audio p50/p90, server-side first-audio p50/p90 and throughput.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx

from deeptalk.config import load_config
from deeptalk.serving.bench import QUESTIONS, bench_package, espeak_wav, fmt_ms, percentile
from deeptalk.serving.local_server import LocalServer, store_package_in


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
    return {
        "client_first_audio_ms": first_audio,
        "server_first_audio_ms": events[-1]["timings"]["first_audio_ms"],
        "audio_s": events[-1]["timings"]["audio_seconds"],
        "wall_ms": (time.perf_counter() - t0) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--max-steps", type=int, default=60, help="caps answers of an untrained model")
    ap.add_argument("--out", default="reports/benchmarks/concurrency.json")
    args = ap.parse_args()

    cfg = load_config(args.params, profile=args.profile)
    service = replace(
        cfg.service, max_steps=args.max_steps, max_concurrency=args.clients, queue_timeout_s=60.0
    )
    results: list[dict] = []
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        package, source = bench_package(cfg, tmp / "package", service)
        store_package_in(package, tmp / "bentoml")
        wavs = [espeak_wav(q, tmp / f"q{i}.wav").read_bytes() for i, q in enumerate(QUESTIONS)]
        with LocalServer(bentoml_home=tmp / "bentoml", log_path=tmp / "serve.log") as url:
            start = time.perf_counter()
            stop_at = start + args.duration

            def client(cid: int) -> None:
                with httpx.Client() as http:
                    i = cid
                    while time.perf_counter() < stop_at:
                        try:
                            r = chat(http, url, i, wavs)
                        except httpx.HTTPError as err:
                            r = {"error": f"{type(err).__name__}: {err}"}
                        r["client"] = cid
                        with lock:
                            results.append(r)
                        i += args.clients

            threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            healthy = httpx.get(f"{url}/readyz").status_code == 200

    errors = [r for r in results if "error" in r]
    ok = [r for r in results if "error" not in r]
    client_fa = [r["client_first_audio_ms"] for r in ok if r["client_first_audio_ms"] is not None]
    server_fa = [r["server_first_audio_ms"] for r in ok if r["server_first_audio_ms"] is not None]
    summary = {
        "source": source,
        "clients": args.clients,
        "duration_s": round(elapsed, 1),
        "requests": len(results),
        "errors": len(errors),
        "error_examples": [e["error"] for e in errors[:5]],
        "healthy_after": healthy,
        "client_first_audio_ms": {"p50": percentile(client_fa, 50), "p90": percentile(client_fa, 90)},
        "server_first_audio_ms": {"p50": percentile(server_fa, 50), "p90": percentile(server_fa, 90)},
        "audio_seconds_per_second": sum(r["audio_s"] for r in ok) / elapsed,
        "per_client": {c: sum(r["client"] == c for r in results) for c in range(args.clients)},
    }
    print(f"model: {source}")
    print(f"clients: {args.clients}  duration: {elapsed:.1f} s  requests: {len(results)}")
    print(f"errors: {len(errors)}  (target 0){'  e.g. ' + errors[0]['error'] if errors else ''}")
    print(f"client_first_audio_p50: {fmt_ms(summary['client_first_audio_ms']['p50'])}")
    print(f"client_first_audio_p90: {fmt_ms(summary['client_first_audio_ms']['p90'])}")
    print(f"server_first_audio_p50: {fmt_ms(summary['server_first_audio_ms']['p50'])}")
    print(f"server_first_audio_p90: {fmt_ms(summary['server_first_audio_ms']['p90'])}")
    print(f"audio_seconds_generated_per_second: {summary['audio_seconds_per_second']:.2f}")
    print(f"server_healthy_after: {healthy}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "requests": results}, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()

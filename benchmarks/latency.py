"""First-audio latency and real-time factor of the served model, through the real HTTP server.

    .venv/bin/python benchmarks/latency.py [--requests 24] [--profile tiny] [--max-steps 100] [--threads 1]

Starts ``bentoml serve`` on 127.0.0.1 with the model ``deeptalk.serving.bench.bench_package`` assembles
(the trained S3 model when the pipeline has produced it, else a random model of the profile's architecture),
then sends ``--requests`` spoken questions (espeak-ng WAVs, several voices) to ``POST /chat`` one at a time:
- server-side first audio: ``timings.first_audio_ms`` of the final event (from the start of generation, i.e.
  after the upload is received and decoded, to the first audio chunk being ready);
- client-side first audio: from sending the request (the whole question: end of input) to receiving the first
  ``audio.delta`` line;
- real-time factor: generation time / audio produced (``timings.rtf``).
Prints ``name: value`` lines, p50/p90 over all requests, and the issue's targets next to them
(p50 ≤ 150 ms server, ≤ 250 ms client, RTF ≤ 0.2 on the tiny profile, 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx

from deeptalk.config import load_config
from deeptalk.serving.bench import QUESTIONS, bench_package, espeak_wav, fmt_ms, percentile
from deeptalk.serving.local_server import LocalServer, store_package_in

VOICES = ("en-us", "en-us+f3", "en-gb-x-rp+m7")


def one_request(url: str, wav: bytes) -> dict:
    t0 = time.perf_counter()
    first_audio = None
    done = None
    with httpx.stream(
        "POST", f"{url}/chat", files={"audio": ("q.wav", wav, "audio/wav")}, timeout=300
    ) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            if event["type"] == "audio.delta" and first_audio is None:
                first_audio = (time.perf_counter() - t0) * 1000
            elif event["type"] == "done":
                done = event
    return {
        "client_first_audio_ms": first_audio,
        "server_first_audio_ms": done["timings"]["first_audio_ms"],
        "rtf": done["timings"]["rtf"],
        "audio_s": done["timings"]["audio_seconds"],
        "steps": done["timings"]["steps"],
        "prefill_ms": done["timings"]["prefill_ms"],
        "reason": done["reason"],
        "wall_ms": (time.perf_counter() - t0) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--max-steps", type=int, default=100, help="caps answers of an untrained model")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--out", default="reports/benchmarks/latency.json")
    args = ap.parse_args()
    if args.requests < 20:
        raise SystemExit("--requests must be at least 20 for stable percentiles")

    cfg = load_config(args.params, profile=args.profile)
    service = replace(cfg.service, max_steps=args.max_steps, warmup=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        package, source = bench_package(cfg, tmp / "package", service)
        store_package_in(package, tmp / "bentoml")
        wavs = [
            espeak_wav(q, tmp / f"q{i}.wav", VOICES[i % len(VOICES)]).read_bytes()
            for i, q in enumerate(QUESTIONS)
        ]
        env = {"DEEPTALK_THREADS": str(args.threads)}
        with LocalServer(bentoml_home=tmp / "bentoml", env=env, log_path=tmp / "serve.log") as url:
            one_request(url, wavs[0])  # first request through the HTTP stack (the model itself is warm)
            results = [one_request(url, wavs[i % len(wavs)]) for i in range(args.requests)]

    server = [r["server_first_audio_ms"] for r in results if r["server_first_audio_ms"] is not None]
    client = [r["client_first_audio_ms"] for r in results if r["client_first_audio_ms"] is not None]
    rtf = [r["rtf"] for r in results if r["rtf"] is not None]
    summary = {
        "source": source,
        "profile": args.profile,
        "requests": len(results),
        "max_steps": args.max_steps,
        "server_first_audio_ms": {"p50": percentile(server, 50), "p90": percentile(server, 90)},
        "client_first_audio_ms": {"p50": percentile(client, 50), "p90": percentile(client, 90)},
        "rtf": {"p50": percentile(rtf, 50), "p90": percentile(rtf, 90)},
        "prefill_ms_p50": percentile([r["prefill_ms"] for r in results], 50),
        "audio_seconds_mean": sum(r["audio_s"] for r in results) / len(results),
        "reasons": {k: sum(r["reason"] == k for r in results) for k in {r["reason"] for r in results}},
    }
    print(f"model: {source}")
    print(f"requests: {len(results)} (answers without audio: {len(results) - len(server)})")
    print(f"server_first_audio_p50: {fmt_ms(summary['server_first_audio_ms']['p50'])}  (target <= 150 ms)")
    print(f"server_first_audio_p90: {fmt_ms(summary['server_first_audio_ms']['p90'])}")
    print(f"client_first_audio_p50: {fmt_ms(summary['client_first_audio_ms']['p50'])}  (target <= 250 ms)")
    print(f"client_first_audio_p90: {fmt_ms(summary['client_first_audio_ms']['p90'])}")
    print(f"rtf_p50: {summary['rtf']['p50']:.3f}  (target <= 0.2)")
    print(f"rtf_p90: {summary['rtf']['p90']:.3f}")
    print(f"prefill_p50 (audio encoder + prompt + first step): {fmt_ms(summary['prefill_ms_p50'])}")
    print(f"mean_audio_seconds: {summary['audio_seconds_mean']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "requests": results}, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()

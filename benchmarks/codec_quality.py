"""Codec quality and speed: recogniser WER on original vs codec-resynthesised held-out speech, decode
real-time factor, streaming first-chunk latency. Prints ``name: value`` lines (WER in %, ms, ratios).

    .venv/bin/python benchmarks/codec_quality.py                       # fit on the assistant voice here
    .venv/bin/python benchmarks/codec_quality.py --codec models/codec  # score a fitted codec directory
    .venv/bin/python benchmarks/codec_quality.py --corpus data/raw --strides 2,1 --codebook-size 1024 --no-other
        # another geometry, fitted on a generated corpus's training answers, scored on its other answers

Sentences are built from the Debian bsdgames quiz files; fit and test sentences are disjoint. Audio is
synthesised at 16 kHz like the corpus. Target (issue 4): codec WER at most 10 points above the original's
for the assistant voice. The other voice is outside the fit and shows how far the codebooks transfer.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deeptalk.codec.config import CodecConfig  # noqa: E402
from deeptalk.codec.embedded import EmbeddedCodec  # noqa: E402
from deeptalk.codec.registry import load_codec  # noqa: E402
from deeptalk.data.config import DataConfig  # noqa: E402
from deeptalk.data.voices import synthesize  # noqa: E402
from deeptalk.evaluation.asr_scorer import AsrScorer, wer  # noqa: E402
from deeptalk.runtime import setup_threads  # noqa: E402

QUIZ = Path("/usr/share/games/bsdgames/quiz")
SAMPLE_RATE = 16000  # the corpus's rate


def _clean(text: str) -> str:
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[([^|\]]*)\|[^\]]*\]", r"\1", text)
    return " ".join(text.split("|")[0].split())


def sentences(seed: int) -> list[str]:
    """Factual sentences like the assistant's answers, shuffled deterministically."""
    out = []
    for name in ("africa", "europe", "asia", "america"):
        for line in (QUIZ / name).read_text().splitlines():
            if ":" in line:
                country, capital = line.split(":")[:2]
                out.append(f"The capital of {_clean(country)} is {_clean(capital)}.")
    for line in (QUIZ / "elements").read_text().splitlines():
        parts = line.split(":")
        if len(parts) >= 4:
            out.append(f"{_clean(parts[3])} has atomic number {parts[1]}.")
    for line in (QUIZ / "collectives").read_text().splitlines():
        if ":" in line:
            animals, noun = line.split(":")[:2]
            out.append(f"A group of {_clean(animals)} is called a {_clean(noun)}.")
    random.Random(seed).shuffle(out)
    return out


def corpus_answers(raw: Path) -> tuple[list[str], list, list[str], list]:
    """(fit voices, fit audio, test texts, test clips) of a generated corpus: the fit_codec step's training
    answers, and the spoken answers of its validation and held-out splits (16 kHz)."""
    import pandas as pd

    from deeptalk.data.audio_io import read_wav
    from deeptalk.steps.fit_codec import assistant_speakers, fit_utterances

    speakers = assistant_speakers(raw)
    fit_rows = fit_utterances(raw, speakers)
    fit_audio = [read_wav(raw / p) for p in fit_rows["audio_path"]]
    utts = pd.read_parquet(raw / "utterances.parquet")
    test = utts[(utts["split"] != "train") & utts["speaker"].isin(speakers)].sort_values("id")
    clips = [read_wav(raw / p) for p in test["audio_path"]]
    if any(sr != SAMPLE_RATE for _, sr in clips):
        raise ValueError(f"corpus audio must be {SAMPLE_RATE} Hz")
    return sorted(speakers), fit_audio, list(test["text"]), [w for w, _ in clips]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", type=Path, help="fitted codec directory (default: fit one here)")
    ap.add_argument("--voice", default=DataConfig().assistant_voice, help="the assistant voice")
    ap.add_argument("--other-voice", default="flite:slt")
    ap.add_argument("--n-fit", type=int, default=250, help="sentences per fit voice (without --codec)")
    ap.add_argument("--fit-other", action="store_true", help="fit on the other voice too (without --codec)")
    ap.add_argument("--n-test", type=int, default=40)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--strides", help="level strides, e.g. 2,1 (default: the profile's)")
    ap.add_argument("--codebook-size", type=int, help="codes per level (default: the profile's)")
    ap.add_argument("--no-other", action="store_true", help="score the assistant voice only")
    ap.add_argument("--corpus", type=Path, help="a generated corpus (data/raw): fit on its training answers "
                    "(the fit_codec step's audio), test on its validation/held-out answers")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    threads = setup_threads(args.threads)

    pool = sentences(args.seed)
    test_text, test_clips = pool[-args.n_test :], None
    if args.corpus:
        fit_voices, fit_audio, test_text, test_clips = corpus_answers(args.corpus)
    if args.codec:
        codec = load_codec(args.codec)
    else:
        if not args.corpus:
            fit_text = pool[: min(args.n_fit, len(pool) - args.n_test)]
            fit_voices = [args.voice, args.other_voice] if args.fit_other else [args.voice]
            fit_audio = [
                (synthesize(v, t, sample_rate=SAMPLE_RATE), SAMPLE_RATE) for v in fit_voices for t in fit_text
            ]
        started = time.perf_counter()
        config = CodecConfig.for_profile(args.profile)
        if args.strides:
            config = dataclasses.replace(config, level_strides=tuple(int(s) for s in args.strides.split(",")))
        if args.codebook_size:
            config = dataclasses.replace(config, codebook_size=args.codebook_size)
        print(f"codec_streams: {config.n_streams}")
        print(f"codec_codebook_size: {config.codebook_size}")
        codec = EmbeddedCodec.fit(fit_audio, config, seed=args.seed)
        print(f"fit_seconds: {time.perf_counter() - started:.1f}")
        print(f"fit_audio_seconds: {sum(len(w) for w, _ in fit_audio) / SAMPLE_RATE:.0f}")
        codec.fit_info["speakers"] = fit_voices
    print(f"codec_fit_voices: {getattr(codec, 'fit_info', {}).get('speakers', 'unknown')}")
    scorer = AsrScorer(cpu_threads=threads)

    voices = [("assistant", args.voice)] + ([] if args.no_other else [("other", args.other_voice)])
    for label, voice in voices:
        if label == "assistant" and test_clips is not None:
            clips = test_clips
        else:
            clips = [synthesize(voice, t, sample_rate=SAMPLE_RATE) for t in test_text]
        enc_s = dec_s = 0.0
        resynth = []
        for wav in clips:
            t0 = time.perf_counter()
            codes = codec.encode(wav, SAMPLE_RATE)
            t1 = time.perf_counter()
            resynth.append((codec.decode(codes), codec.sample_rate))
            enc_s += t1 - t0
            dec_s += time.perf_counter() - t1
        original = wer(test_text, [scorer.transcribe(w, SAMPLE_RATE) for w in clips])
        coded = wer(test_text, [scorer.transcribe(w, sr) for w, sr in resynth])
        name = voice.replace(":", "_").replace("+", "_")
        print(f"wer_original_{label}_{name}: {100 * original:.1f}")
        print(f"wer_codec_{label}_{name}: {100 * coded:.1f}")
        print(f"wer_delta_points_{label}_{name}: {100 * (coded - original):.1f}")
        if label == "assistant":
            seconds = sum(len(w) for w in clips) / SAMPLE_RATE
            print(f"encode_rtf: {enc_s / seconds:.4f}")
            print(f"decode_rtf: {dec_s / seconds:.4f}")
            stream_latency(codec, codec.encode(clips[0], SAMPLE_RATE))
    print(f"threads: {threads}")
    print(f"tokens_per_second: {codec.frames_per_second * codec.n_streams:.1f}")


def stream_latency(codec, codes) -> None:
    """Push one column at a time: columns needed before the first audio, and the compute spent until then."""
    stream = codec.decode_stream()
    started = time.perf_counter()
    for i in range(codes.shape[1]):
        if len(stream.push(codes[:, i : i + 1])):
            compute_ms = 1000 * (time.perf_counter() - started)
            print(f"stream_first_audio_after_columns: {i + 1}")
            print(f"stream_first_audio_codes_ms: {1000 * (i + 1) / codec.frames_per_second:.0f}")
            print(f"stream_first_chunk_compute_ms: {compute_ms:.1f}")
            break
    stream.flush()


if __name__ == "__main__":
    main()

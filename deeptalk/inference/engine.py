"""The loaded model assets that sessions share, and the checks of what a user may send them.

An :class:`Engine` holds the network, codec, tokenizer and feature extractor (all used read-only) and hands
out :class:`~deeptalk.inference.session.Session` objects, each with its own state. ``Engine.load`` reads a
packaged model directory (the layout :mod:`deeptalk.steps.package` writes). ``start_scheduler`` makes every
session decode in one shared batch (the service does); how many sessions generate at once is the server's
business (:mod:`deeptalk.serving.capacity`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeptalk.audio_input import AudioInputConfig
from deeptalk.inference.config import ServiceConfig, prompt_capacity
from deeptalk.inference.events import AudioChunk, Done
from deeptalk.inference.prompt import TaskPrompts
from deeptalk.inference.scheduler import Scheduler, StepObserver
from deeptalk.inference.session import Session
from deeptalk.tokens import TokenLayout

log = logging.getLogger(__name__)

# sub-directories of a packaged model (see deeptalk.steps.package)
MODEL_DIR, CODEC_DIR, TOKENIZER_DIR, META_FILE = "model", "codec", "tokenizer", "package.json"

# 16 kHz mono → (frozen-encoder frames [F, D], prompt positions): the training features (``speech_features``)
FeatureFn = Callable[[np.ndarray], tuple[torch.Tensor, int]]


class UnknownVoice(ValueError):
    """A voice name the model's layout does not have (HTTP 422)."""


class UnknownWords(ValueError):
    """Text with words the model's tokenizer cannot represent (HTTP 422): they would reach the model as
    ``<unk>`` and the answer would be nonsense."""

    def __init__(self, words: list[str]):
        self.words = list(dict.fromkeys(words))  # unique, first-seen order
        shown = ", ".join(repr(w) for w in self.words[:10]) + (", …" if len(self.words) > 10 else "")
        super().__init__(
            f"the model's vocabulary lacks {len(self.words)} word(s) of the text: {shown}; rephrase without them"
        )


@dataclass
class Engine:
    model: Any  # deeptalk.model.SpeechLM (eval mode)
    codec: Any  # deeptalk.codec.Codec
    tokenizer: Any  # deeptalk.data.text_tokenizer.TextTokenizer | HFTextTokenizer
    features: FeatureFn
    audio_input: AudioInputConfig
    config: ServiceConfig
    tasks: TaskPrompts
    device: str = "cpu"
    metadata: dict | None = None
    scheduler: Scheduler | None = None  # set by start_scheduler: sessions then decode in its shared batch


    def __post_init__(self) -> None:
        self.layout: TokenLayout = self.model.layout
        if (
            self.layout.n_audio_streams != self.codec.n_streams
            or self.layout.codebook_size != self.codec.codebook_size
        ):
            raise ValueError(
                f"model layout ({self.layout.n_audio_streams} streams × {self.layout.codebook_size} codes) does not "
                f"match the codec ({self.codec.n_streams} × {self.codec.codebook_size})"
            )
        if self.config.max_upload_seconds > self.audio_input.max_seconds:
            raise ValueError(
                f"max_upload_seconds {self.config.max_upload_seconds} exceeds the encoder window "
                f"{self.audio_input.max_seconds} s"
            )
        self.max_prompt_positions = prompt_capacity(self.config, self.audio_input)
        # the voice of answers that name none: the configured one, else the layout's first voice token (the
        # pack step writes a VOICE token before every spoken answer, so ANS_A is untrained when voices exist)
        self.default_voice = self.check_voice(self.config.default_voice) or (
            self.layout.voices[0] if self.layout.voices else None
        )

    # ---- sessions ---------------------------------------------------------------------------------------------
    def session(self, voice: str | None = None) -> Session:
        return Session(self, voice=voice)

    def start_scheduler(self, observer: StepObserver | None = None) -> Scheduler:
        """Batch the decode steps of every session of this engine from now on (one scheduler thread owns the
        model's decoding; the service does this once per worker)."""
        if self.scheduler is None:
            self.scheduler = Scheduler(self.model, device=self.device, observer=observer).start()
        return self.scheduler

    @property
    def hears_text(self) -> bool:
        """The model reads a CTC head's heard units (``audio_input.interface`` ctc_tokens/pseudo_text): it can
        transcribe without decoding and tell silence from speech."""
        return self.audio_input.hears_text

    @property
    def voices(self) -> tuple[str, ...]:
        return self.layout.voices

    def check_voice(self, voice: str | None) -> str | None:
        if voice is None or voice == "":
            return None
        if voice not in self.layout.voices:
            raise UnknownVoice(
                f"unknown voice {voice!r}; available: {', '.join(self.layout.voices) or 'none'}"
            )
        return voice

    def check_text(self, text: str) -> tuple[int, ...]:
        """Token ids of a user text. ValueError when it is empty or over ``max_text_chars``; UnknownWords when
        the tokenizer has no token for some of its words."""
        text = text.strip()
        if not text:
            raise ValueError("text is empty")
        if len(text) > self.config.max_text_chars:
            raise ValueError(f"text has {len(text)} characters; the limit is {self.config.max_text_chars}")
        unknown = self.tokenizer.unknown_words(text)
        if unknown:
            raise UnknownWords(unknown)
        ids = tuple(self.tokenizer.encode(text))
        if not ids:
            raise ValueError("text contains no words the tokenizer knows")
        return ids

    def encode_audio(self, wav: np.ndarray) -> tuple[torch.Tensor, int]:
        """Encoder frames and the number of prompt positions of one 16 kHz mono utterance."""
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError(f"audio must be non-empty mono samples, got shape {wav.shape}")
        seconds = wav.size / self.audio_input.sample_rate
        if seconds > self.config.max_upload_seconds:
            raise ValueError(
                f"audio is {seconds:.2f} s long; the limit is {self.config.max_upload_seconds} s"
            )
        return self.features(wav)

    # ---- startup ------------------------------------------------------------------------------------------------
    def warmup(self, rounds: int = 2) -> float:
        """Spoken answers to a short noise clip until the first audio chunk (audio encoder, prefill, decode
        steps, codec decoder), so no request pays for first-call allocations. Returns the seconds taken."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        wav = (0.01 * rng.standard_normal(self.audio_input.sample_rate // 2)).astype(np.float32)
        for _ in range(rounds):
            session = self.session()
            for event in session.respond(audio=wav):
                if isinstance(event, AudioChunk):
                    session.interrupt()
                elif isinstance(event, Done):
                    log.info("warm-up answer: %s after %d steps", event.reason, event.timings.steps)
        return time.perf_counter() - t0

    @classmethod
    def load(cls, package_dir: str | Path, config: ServiceConfig, device: str = "cpu") -> Engine:
        """Load a packaged model directory: ``model/`` (SpeechLM), ``codec/``, ``tokenizer/``, ``package.json``."""
        root = Path(package_dir)
        for sub in (MODEL_DIR, CODEC_DIR, TOKENIZER_DIR):
            if not (root / sub).is_dir():
                raise ValueError(f"packaged model at {root} lacks {sub}/")
        meta = json.loads((root / META_FILE).read_text()) if (root / META_FILE).exists() else {}
        return cls.from_paths(root / MODEL_DIR, root / CODEC_DIR, root / TOKENIZER_DIR, config, device, meta)

    @classmethod
    def from_paths(
        cls,
        model_dir: str | Path,
        codec_dir: str | Path,
        tokenizer_dir: str | Path,
        config: ServiceConfig,
        device: str = "cpu",
        metadata: dict | None = None,
    ) -> Engine:
        """Load from the pipeline's separate outputs (e.g. ``models/stages/s3``, ``models/codec``,
        ``data/raw/tokenizer``), as the evaluation step does."""
        from deeptalk.codec.registry import load_codec
        from deeptalk.data.text_tokenizer import load_tokenizer
        from deeptalk.model import SpeechLM

        model = SpeechLM.from_pretrained(model_dir).to(device).eval()
        codec = load_codec(codec_dir, device=device)
        tokenizer = load_tokenizer(tokenizer_dir)
        audio_input = model.cfg.audio_input
        return cls(
            model=model,
            codec=codec,
            tokenizer=tokenizer,
            features=speech_features(model, audio_input),
            audio_input=audio_input,
            config=config,
            tasks=TaskPrompts(tokenizer),
            device=device,
            metadata=metadata or {},
        )


def speech_features(model: Any, audio_input: AudioInputConfig) -> FeatureFn:
    """wav → the model's frozen-encoder frames, exactly as the encode step computed the training features."""
    from deeptalk.data.features import SpeechFeatureExtractor

    extractor = SpeechFeatureExtractor(audio_input, model.encode_speech)

    def features(wav: np.ndarray) -> tuple[torch.Tensor, int]:
        out = extractor(wav, audio_input.sample_rate)
        frames = torch.from_numpy(out.frames)
        if audio_input.hears_text:  # as many positions as units heard (deeptalk.model.hearing)
            return frames, model.audio_positions(frames)
        return frames, out.n_positions

    return features

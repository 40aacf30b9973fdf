"""Load a trained stage as the service does: an inference ``Engine`` over the model, codec and tokenizer.

Spoken QA, ASR, TTS and latency all run through :class:`deeptalk.inference.Engine` sessions, i.e. the same
streaming generator, prompt builder, features and chunked codec decoder that the BentoML service uses. The
only differences from serving are evaluation settings: a fixed sampling seed (reproducible audio sampling)
and a cap on decode steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deeptalk.inference.engine import Engine, speech_features
from deeptalk.inference.events import AudioChunk, Done, Event, Timings
from deeptalk.inference.prompt import TaskPrompts

if TYPE_CHECKING:
    from deeptalk.config import ProjectConfig

log = logging.getLogger(__name__)


def load_engine(cfg: ProjectConfig, model_dir: str | Path, max_audio_frames: int | None = None) -> Engine:
    """Engine over ``model_dir`` (a saved ``SpeechLM``), the pipeline's codec and the corpus tokenizer."""
    from deeptalk.codec import load_codec
    from deeptalk.data.text_tokenizer import load_tokenizer
    from deeptalk.model import SpeechLM
    from deeptalk.model.switches import RoutingMode

    model_dir = Path(model_dir)
    if not (model_dir / "speech_lm.json").is_file():
        raise ValueError(f"no trained speech LM at {model_dir}; run its training stage first")
    from deeptalk.runtime import resolve_device

    device = resolve_device(cfg.device)
    model = SpeechLM.from_pretrained(model_dir).to(device).eval()
    model.set_routing(RoutingMode.NONE)  # unrestricted routing at inference, as served
    codec = load_codec(cfg.paths.codec, device=device)  # SNAC decodes where the model runs
    tokenizer = load_tokenizer(cfg.paths.raw / "tokenizer")
    audio_input = model.cfg.audio_input
    frames = max_audio_frames or cfg.evaluation.max_audio_frames
    service = cfg.service
    service = replace(
        service,
        sampling=replace(service.sampling, seed=cfg.seed),
        # a spoken answer of n frames needs n + K + 1 decode steps (delay pattern + EOA closure)
        max_steps=min(service.max_steps, frames + model.layout.n_audio_streams + 1),
        max_upload_seconds=min(service.max_upload_seconds, audio_input.max_seconds),
    )
    return Engine(model=model, codec=codec, tokenizer=tokenizer,
                  features=speech_features(model, audio_input), audio_input=audio_input,
                  config=service, tasks=TaskPrompts(tokenizer), device=str(device))


@dataclass
class Answer:
    """Everything one session call streamed: text, concatenated audio, timings."""

    text: str
    pcm: np.ndarray
    sample_rate: int
    timings: Timings
    reason: str

    @property
    def has_audio(self) -> bool:
        return self.pcm.size > 0


def collect(events: Iterator[Event], sample_rate: int) -> Answer:
    """Drain a ``Session`` event stream into one :class:`Answer`."""
    chunks: list[np.ndarray] = []
    done: Done | None = None
    for event in events:
        if isinstance(event, AudioChunk):
            if event.sample_rate != sample_rate:
                raise ValueError(f"audio chunk at {event.sample_rate} Hz, expected {sample_rate}")
            chunks.append(event.pcm)
        elif isinstance(event, Done):
            done = event
    if done is None:
        raise RuntimeError("the session ended without a Done event")
    pcm = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return Answer(text=done.text, pcm=pcm, sample_rate=sample_rate, timings=done.timings, reason=done.reason)

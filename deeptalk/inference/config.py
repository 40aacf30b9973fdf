"""Serving and decoding settings: sampling defaults, request limits, capacity, which packaged model to load."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from deeptalk.audio_input import AudioInputConfig
from deeptalk.presets import preset


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings from the reference's eval_qa.py (paper.md §6): greedy text with a repetition
    penalty of 1.2, top-k 10 sampling for audio codes. ``audio_top_k = 1`` makes audio greedy (TTS/ASR
    scripts of the reference) and the whole generation deterministic."""

    text_top_k: int = 1
    text_temperature: float = 1.0
    text_repetition_penalty: float = 1.2
    audio_top_k: int = 10
    audio_temperature: float = 1.0
    seed: int | None = None  # per-request generator seed; None = nondeterministic audio sampling

    def __post_init__(self) -> None:
        if self.text_top_k < 1 or self.audio_top_k < 1:
            raise ValueError(f"top-k must be >= 1, got text {self.text_top_k}, audio {self.audio_top_k}")
        if self.text_temperature <= 0 or self.audio_temperature <= 0:
            raise ValueError("temperatures must be > 0 (use top_k=1 for greedy decoding)")
        if self.text_repetition_penalty < 1.0:
            raise ValueError(f"repetition penalty must be >= 1, got {self.text_repetition_penalty}")


ASR_SOURCES = ("lm", "ctc")


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the streaming generator and the BentoML service need besides the model itself."""

    model_tag: str = "deeptalk:latest"  # BentoML model-store tag written by the `package` step
    bento_name: str = "deeptalk"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    max_steps: int = 400  # decode steps per spoken/text answer (reference: 1000 ≈ 85 s of audio)
    max_asr_steps: int = 100  # reference: 100 for ASR
    asr_source: str = "lm"  # /asr of a model with a CTC head (audio_input.interface): "lm" decodes the ASR task,
    #                         "ctc" serves the head's own greedy transcript (evaluation measures both)
    chunk_frames: int = 1  # codec frames per pushed decode chunk (1 = emit audio as early as possible)
    max_history_turns: int = 8  # user+assistant turns kept as context in a session
    # prompt positions (oldest turns are dropped to fit): None = room for one upload of max_upload_seconds at
    # the encoder's position rate plus history_positions of context (prompt_capacity; paper: 30 s = 1,500
    # positions at 50 Hz); a number is checked to hold such an upload
    max_prompt_positions: int | None = None
    history_positions: int = 512  # context kept beside a maximal upload when max_prompt_positions is None
    # None: the layout's first voice token (packing opens every trained spoken answer with its speaker's voice
    # token), or ANS_A when the layout has no voices
    default_voice: str | None = None
    # request limits
    max_upload_bytes: int = 2_000_000
    max_upload_seconds: float = 8.0  # must not exceed the encoder window (AudioInputConfig.max_seconds)
    max_text_chars: int = 500
    # capacity: answers generating at once (the scheduler's batch when batching); up to max_queue others wait up
    # to queue_timeout_s for a slot, the rest get 503 + Retry-After at once
    max_concurrency: int = 2
    max_queue: int = 16
    queue_timeout_s: float = 5.0
    retry_after_s: int = 2
    # true: one scheduler steps every answer of a worker in one batch (deeptalk.inference.scheduler); false: each
    # answer decodes alone in its own thread
    batching: bool = True
    max_answer_seconds: float = 120.0  # wall-clock deadline of one answer; past it the answer ends ("deadline")
    pcm_format: str = "int16"  # "int16" | "float32": sample format of streamed audio chunks
    api_key_env: str = "DEEPTALK_API_KEY"  # when this env var is set, requests must carry the key
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.asr_source not in ASR_SOURCES:
            raise ValueError(f"asr_source must be one of {ASR_SOURCES}, got {self.asr_source!r}")
        if self.pcm_format not in ("int16", "float32"):
            raise ValueError(f"pcm_format must be 'int16' or 'float32', got {self.pcm_format!r}")
        if min(self.max_steps, self.max_asr_steps, self.chunk_frames, self.max_concurrency) < 1:
            raise ValueError(f"step limits, chunk_frames and max_concurrency must be >= 1: {self}")
        if self.max_queue < 0 or self.max_answer_seconds <= 0:
            raise ValueError(f"max_queue must be >= 0 and max_answer_seconds > 0: {self}")
        if self.max_upload_bytes <= 0 or self.max_upload_seconds <= 0 or self.max_text_chars <= 0:
            raise ValueError(f"upload limits must be positive: {self}")
        if self.history_positions < 0 or (self.max_prompt_positions is not None and self.max_prompt_positions < 1):
            raise ValueError(f"history_positions must be >= 0 and max_prompt_positions >= 1: {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of ``to_dict`` (stored in a packaged model's ``package.json``); unknown keys are an error."""
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"ServiceConfig: unknown field(s) {unknown}")
        if isinstance(data.get("sampling"), dict):
            sampling_names = {f.name for f in dataclasses.fields(SamplingConfig)}
            bad = sorted(set(data["sampling"]) - sampling_names)
            if bad:
                raise ValueError(f"SamplingConfig: unknown field(s) {bad}")
            data["sampling"] = SamplingConfig(**data["sampling"])
        return cls(**data)

    @classmethod
    def for_profile(cls, profile: str) -> Self:
        """The ``service`` section of ``configs/profiles/<profile>.yaml``."""
        return preset(cls, "service", profile)


# positions around a spoken user turn besides its features: BOT, the user marker, BOA, EOA and the answer's
# opening row, with room for multi-token role markers of a chat template
PROMPT_OVERHEAD = 16


def prompt_capacity(service: ServiceConfig, audio_input: AudioInputConfig) -> int:
    """Prompt positions the service packs at most (``max_prompt_positions``, else sized from the geometry).

    A spoken turn of ``max_upload_seconds`` occupies ``audio_input.n_positions`` feature positions (30 s at
    the paper's 50 Hz: 1,500); an explicit cap that cannot hold it is an error, not a silent truncation.
    """
    upload = audio_input.n_positions(int(service.max_upload_seconds * audio_input.sample_rate))
    needed = upload + PROMPT_OVERHEAD
    if service.max_prompt_positions is None:
        return needed + service.history_positions
    if service.max_prompt_positions < needed:
        raise ValueError(
            f"max_prompt_positions {service.max_prompt_positions} cannot hold one {service.max_upload_seconds} s "
            f"upload ({upload} positions + {PROMPT_OVERHEAD}); raise it or leave it null to size it from audio_input"
        )
    return service.max_prompt_positions

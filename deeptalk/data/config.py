"""Corpus parameters (how many samples of each task and split, which voices speak, how facts are split) and
packing's (how samples become training sequences: ``deeptalk.data.packing``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from deeptalk.data.schema import SPLITS, TASKS
from deeptalk.presets import preset
from deeptalk.tokens import check_answer_layout

SPEECH_TASKS = tuple(
    t for t in TASKS if t != "text"
)  # tasks whose size is a sample count (``text`` covers all facts)


def _counts(train: int, validation: int, heldout: int) -> tuple[int, int, int]:
    return (train, validation, heldout)


@dataclass(frozen=True)
class DataConfig:
    """Offline corpus settings (see ``deeptalk/data/corpus.py`` for what each task contains).

    ``counts`` maps each non-``text`` task to ``(train, validation, heldout)`` sample counts. Voices are
    ``engine:name`` strings (``espeak:en-us+f3``, ``flite:slt``, ``piper:joe``); ``heldout_speakers`` only
    ever speak held-out samples, so evaluation measures unseen voices.
    """

    seed: int = 0
    sample_rate: int = 16000  # every wav in data/raw is 16 kHz mono (Whisper-style input)
    # tiny: as much speech as the 15-minute `make run` allows (~2,000 utterances, generation ≈ 1.5 min on 2 cores)
    counts: dict[str, tuple[int, int, int]] = field(
        default_factory=lambda: {
            "asr": _counts(1600, 20, 40),
            "tts": _counts(120, 10, 16),
            "aqa": _counts(300, 16, 32),
            "tqa": _counts(200, 16, 64),
            "rqa": _counts(400, 16, 32),
        }
    )
    asr_word_fraction: float = 0.5  # training ASR sentences that are random word sequences (see corpus.py)
    max_facts: int = 600  # knowledge items drawn (stratified by relation) from all sources
    validation_fraction: float = 0.1  # of facts
    heldout_fraction: float = 0.15  # of facts
    assistant_voice: str = "piper:joe"  # the only voice the model speaks with (clearest available)
    train_speakers: tuple[str, ...] = (  # many voices, so listening generalises to the held-out ones
        "espeak:en-us",
        "espeak:en-us+m3",
        "espeak:en-us+m1",
        "espeak:en-us+m5",
        "espeak:en-us+f1",
        "espeak:en-us+f4",
        "espeak:en-gb+f2",
        "espeak:en-gb-x-rp+m7",
        "espeak:en-gb-scotland",
        "espeak:en-gb-x-gbclan+m4",
        "espeak:en-029+m2",
        "flite:slt",
        "flite:awb",
        "flite:kal16",
    )
    heldout_speakers: tuple[str, ...] = ("espeak:en-us+f3", "flite:rms")
    speeds: tuple[int, int] = (140, 170)  # espeak-ng words per minute, drawn uniformly per utterance
    max_utterance_seconds: float = 8.0  # ≤ AudioInputConfig.max_seconds; longer utterances are dropped
    min_rms: float = 0.005  # a wav quieter than this counts as silent
    multi_turn_prob: float = 0.3  # AQA samples with one earlier spoken QA round as context
    rqa_speech_prob: float = 0.7  # RQA: user turn given as speech (paper.md §1.4), else as text
    max_words: int = 16  # ASR/TTS sentences longer than this are skipped (keeps audio under the limit)
    workers: int = 2  # synthesis processes
    import_source: str | None = None  # paper profile: local dir or s3://bucket/prefix with the two manifests
    hf_tokenizer: str | None = (
        None  # local HF tokenizer dir, relative to the project root (paper); None = word level
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.counts) - set(SPEECH_TASKS))
        if unknown:
            raise ValueError(f"data.counts: unknown task(s) {unknown}; valid: {SPEECH_TASKS}")
        for task, c in self.counts.items():
            if len(c) != len(SPLITS) or any(int(n) < 0 for n in c):
                raise ValueError(f"data.counts[{task!r}] must be 3 non-negative ints {SPLITS}, got {c}")
        object.__setattr__(self, "counts", {k: tuple(int(n) for n in v) for k, v in self.counts.items()})
        if not 0 <= self.asr_word_fraction <= 1:
            raise ValueError(f"data.asr_word_fraction must lie in [0, 1], got {self.asr_word_fraction}")
        if not 0 < self.validation_fraction + self.heldout_fraction < 1:
            raise ValueError("data: validation_fraction + heldout_fraction must be in (0, 1)")
        overlap = set(self.train_speakers) & set(self.heldout_speakers)
        if overlap or self.assistant_voice in self.heldout_speakers:
            raise ValueError(f"data: held-out speakers must not speak in training, shared: {sorted(overlap)}")
        if not self.train_speakers or not self.heldout_speakers:
            raise ValueError("data: need at least one training and one held-out speaker")
        if self.speeds[0] > self.speeds[1]:
            raise ValueError(f"data.speeds must be (low, high), got {self.speeds}")

    def count(self, task: str, split: str) -> int:
        return self.counts.get(task, (0, 0, 0))[SPLITS.index(split)]

    @classmethod
    def for_profile(cls, profile: str) -> Self:
        """The ``data`` section of ``configs/profiles/<profile>.yaml``."""
        return preset(cls, "data", profile)


PROMPT_FORMATS = ("specials", "chat_template")


@dataclass(frozen=True)
class PackingConfig:
    """Sequence-level choices of the reference's data loader (``data_util.py``)."""

    max_length: int = 512  # positions per sequence; longer conversations lose their oldest turns first
    user_speech_prob: float = 0.7  # reference: RQA user turns use their audio when random() > 0.3
    random_speech_tasks: tuple[str, ...] = ("rqa",)  # tasks whose user turns draw speech vs text
    # the spoken-answer layout the pack step writes into layout.json (TokenLayout.answer_layout); packing,
    # training and generation follow the layout they are given, not this field
    answer_layout: str = "text_first"
    # role markers the pack step writes into layout.json: "specials" (new USER/ASSISTANT/BOT/EOT rows, the
    # reference's) or "chat_template" (the imported LLM's own chat template: HFTextTokenizer.chat_markers)
    prompt_format: str = "specials"
    # Spoken QA that inherits typed QA (TASU, arXiv 2511.03310): with a hearing interface the LM reads what a
    # CTC head heard as text, so a typed question of ``heard_text_tasks`` is packed, with this probability, as
    # a heard spoken turn (BOA, its words with ``heard_text_wer`` simulated word errors, EOA; answered as AQA).
    heard_text_prob: float = 0.0
    heard_text_wer: float = 0.3
    heard_text_tasks: tuple[str, ...] = ("tqa",)

    def __post_init__(self) -> None:
        check_answer_layout(self.answer_layout)
        if not 0.0 <= self.heard_text_prob <= 1.0 or not 0.0 <= self.heard_text_wer <= 1.0:
            raise ValueError(f"heard_text_prob / heard_text_wer must lie in [0, 1], got "
                             f"{self.heard_text_prob} / {self.heard_text_wer}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"unknown prompt_format {self.prompt_format!r}; choose one of {PROMPT_FORMATS}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 positions, got {self.max_length}")
        if not 0.0 <= self.user_speech_prob <= 1.0:
            raise ValueError(f"user_speech_prob must lie in [0, 1], got {self.user_speech_prob}")

    @classmethod
    def for_profile(cls, profile: str) -> PackingConfig:
        """The ``packing`` section of ``configs/profiles/<profile>.yaml``."""
        return preset(cls, "packing", profile)

"""Record types shared by corpus generation, validation and sequence packing.

Two manifests describe a corpus (both Parquet under ``data/raw/``):
- ``utterances.parquet``: one row per audio file (``UTTERANCE_COLUMNS``);
- ``samples.parquet``: one row per training/eval sample (``SAMPLE_COLUMNS``), a conversation whose turns
  refer to utterances by id. ``turns`` is a JSON string so the Parquet schema stays flat.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# How the corpus asks for TTS (a typed "repeat" turn answered in speech); the service asks the same way, so it
# lives here, light enough for the service to import without the corpus generator (pandas, tqdm).
TTS_PROMPT = "Repeat the sentence inside the brackets without any explanation. [{text}]"

TASKS = ("asr", "tts", "aqa", "tqa", "rqa", "text")  # paper.md §3 task families + plain LM text
SPLITS = ("train", "validation", "heldout")
ROLES = ("system", "user", "assistant")

UTTERANCE_COLUMNS = {
    "id": "string",
    "task": "string",  # task of the sample that first needed this utterance
    "split": "string",
    "speaker": "string",  # voice name, e.g. "espeak:en-us+f3" or "piper:joe"
    "text": "string",  # what was spoken
    "audio_path": "string",  # relative to the corpus root
    "sample_rate": "int64",
    "duration": "float64",  # seconds
    "rms": "float64",
    "sha256": "string",  # of the audio file bytes
}

SAMPLE_COLUMNS = {
    "id": "string",
    "task": "string",
    "split": "string",
    "fact_id": "string",  # the knowledge item behind a QA sample ("" for ASR/TTS/text); leakage is checked on it
    "turns": "string",  # JSON list of Turn dicts
}


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant"
    text: str
    audio_id: str | None = None  # user: spoken input utterance; assistant: spoken answer (codec target)
    speak: bool = False  # assistant: the answer is a speech target (AQA/TTS); user: give the audio as input

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {ROLES}")


@dataclass(frozen=True)
class Sample:
    id: str
    task: str
    split: str
    turns: tuple[Turn, ...]
    fact_id: str = ""
    extra: dict = field(default_factory=dict)

    def turns_json(self) -> str:
        return json.dumps([asdict(t) for t in self.turns], ensure_ascii=False)

    @staticmethod
    def parse_turns(text: str) -> tuple[Turn, ...]:
        return tuple(Turn(**t) for t in json.loads(text))

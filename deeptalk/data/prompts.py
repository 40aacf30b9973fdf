"""Inference prompts as model input: a conversation so far → :class:`SpeechBatch` ending at the answer row.

The streaming generator calls :func:`build_prompt` with the history (earlier answers as text, as in the
reference's multi-turn inference) and the new user turn, given as text or as a waveform. The rows are
rendered by the same code as training sequences (:func:`deeptalk.data.packing.pack_prompt`), so a prompt
equals the prefix of a packed training sample up to and including its ASSISTANT row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from deeptalk.audio_input import AudioInputConfig
from deeptalk.batch import SpeechBatch
from deeptalk.data.dataset import Example, collate
from deeptalk.data.features import LogMelExtractor
from deeptalk.data.packing import TextTokenizerLike, TokenizedTurn, pack_prompt
from deeptalk.data.schema import Turn
from deeptalk.tokens import TokenLayout


def build_prompt(
    turns: Sequence[Turn],
    layout: TokenLayout,
    tokenizer: TextTokenizerLike,
    audio_input: AudioInputConfig,
    *,
    audio: Mapping[str, tuple[np.ndarray, int]] | None = None,
    speak: bool = True,
    voice: str | None = None,
    max_length: int | None = None,
    extractor: LogMelExtractor | None = None,
) -> SpeechBatch:
    """One-sequence batch for ``turns`` (ending with a user turn) plus the row that opens the answer.

    A user turn whose ``audio_id`` is in ``audio`` (``audio_id → (waveform, sample_rate)``) is given as speech
    (log-mel features computed here); other turns as text. ``speak`` chooses the answer row's audio token:
    ``ANS_A`` / ``VOICE:<voice>`` for a spoken answer, the ``ASR`` task token for a text-only answer (the
    text item of batch-parallel decoding). Pass ``extractor`` to reuse one across calls.
    """
    audio = audio or {}
    extractor = extractor or LogMelExtractor(audio_input)
    tokenized, n_positions, mels = [], {}, {}
    for turn in turns:
        audio_id = turn.audio_id if turn.role == "user" and turn.audio_id in audio else None
        if turn.role == "user" and turn.audio_id is not None and audio_id is None and not turn.text:
            raise ValueError(f"user turn refers to audio {turn.audio_id!r} that was not given, and has no text")
        if audio_id is not None and audio_id not in mels:
            wav, sr = audio[audio_id]
            features = extractor(wav, sr)
            mels[audio_id], n_positions[audio_id] = features.mel, features.n_positions
        ids = () if audio_id is not None else tuple(tokenizer.encode(turn.text))
        tokenized.append(TokenizedTurn(turn.role, ids, audio_id, audio_id is not None))
    packed = pack_prompt(tokenized, layout, n_positions, speak=speak, voice=voice, max_length=max_length)
    return collate([Example(packed, [mels[a.utt_id] for a in packed.audio])], layout)
